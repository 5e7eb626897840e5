"""`tailorc plan`: the tensor plan a build would run."""

from __future__ import annotations

import argparse

from recipe_compiler.cli.common import checked
from recipe_compiler.cli.console import out


def cmd_plan(args: argparse.Namespace) -> int:
    from recipe_compiler.compiler.listing import format_plan
    from recipe_compiler.compiler.plan import lower

    recipe, models, _ = checked(args.recipe, require_closed=True)
    plan = lower(recipe, models, shard_size=args.shard_size)
    out.print(format_plan(plan, verbose=args.verbose), markup=False, end="")
    return 0
