"""`tailorc build`: a recipe compiled into a Hugging Face checkpoint directory, with progress."""

from __future__ import annotations

import argparse
import time

from recipe_compiler.cli.common import checked
from recipe_compiler.cli.console import UserError, err, out, pick_device
from recipe_compiler.compiler.listing import size_change


def cmd_build(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from recipe_compiler.compiler.listing import human_bytes, human_count
    from recipe_compiler.compiler.plan import Copy, lower
    from recipe_compiler.execute import numpy_engine
    from recipe_compiler.execute.output import OutputError, check_output, write_checkpoint

    recipe, models, _ = checked(args.recipe, require_closed=True)
    try:
        check_output(recipe, args.output, force=args.force)
    except OutputError as exc:
        raise UserError(str(exc)) from None
    plan = lower(recipe, models, shard_size=args.shard_size)
    device = pick_device(args.device, needed=args.engine == "torch" or not all(
        isinstance(t.expr, Copy) for t in plan.tasks))
    try:
        numpy_engine(plan, device, args.engine)
    except ValueError as exc:
        raise UserError(f"--engine numpy: {exc}") from None
    started = time.perf_counter()
    columns = (TextColumn("building"), BarColumn(), MofNCompleteColumn(),
               TextColumn("tensors"), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("build", total=sum(t.out.nbytes for t in plan.tasks))

        def on_progress(p) -> None:
            bar.update(task, completed=p.bytes)

        try:
            write_checkpoint(recipe, plan, args.output, force=args.force, device=device,
                             on_progress=on_progress, engine=args.engine,
                             on_warning=lambda m: err.print(f"tailorc: warning: {m}",
                                                            markup=False))
        except OutputError as exc:
            raise UserError(str(exc)) from None
    took = time.perf_counter() - started
    out.print(f"wrote {args.output}/ ({len(plan.shards)} shard(s), "
              f"{human_bytes(plan.write_bytes)}) in {took:.1f}s "
              f"({human_bytes(plan.write_bytes / max(took, 1e-9))}/s); parameters "
              f"{human_count(plan.params_before)} -> {human_count(plan.params_after)} "
              f"({size_change(plan.params_before, plan.params_after)})")
    return 0
