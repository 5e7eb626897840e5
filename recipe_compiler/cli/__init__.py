"""`tailorc`: the command line. The only package that prints or exits.

Consumes: command-line arguments.
Produces: checkpoints, listings and diagnostics on the terminal; exit status 0 (ok),
1 (a problem the user can fix: bad recipe, missing model, existing output, full disk, a bad
flag) or 2 (an internal error: a bug in tailor, reported with a traceback).

Modules: args (the parser), one module per command (check, plan, build, fmt,
import_config, export, eval, prune, zoo, evolve), common (the front door with warnings
printed), files (safe small outputs), console (where text goes), progress (live progress of
long work).
"""

from __future__ import annotations

import os
import traceback

from recipe_compiler.cli.args import build_parser
from recipe_compiler.cli.build import cmd_build
from recipe_compiler.cli.check import cmd_check
from recipe_compiler.cli.console import UserError, err
from recipe_compiler.cli.eval import cmd_eval
from recipe_compiler.cli.evolve import cmd_evolve
from recipe_compiler.cli.export import cmd_export
from recipe_compiler.cli.fmt import cmd_fmt
from recipe_compiler.cli.import_config import cmd_import
from recipe_compiler.cli.plan import cmd_plan
from recipe_compiler.cli.prune import cmd_prune
from recipe_compiler.cli.zoo import cmd_zoo
from recipe_compiler.compiler.plan import BuildError
from recipe_compiler.language.source import RecipeError, render_all
from recipe_compiler.models.index import ModelError

__all__ = ["UserError", "build_parser", "main"]

COMMANDS = {"build": cmd_build, "check": cmd_check, "plan": cmd_plan, "fmt": cmd_fmt,
            "zoo": cmd_zoo, "eval": cmd_eval, "evolve": cmd_evolve,
            "prune": cmd_prune, "import": cmd_import, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # transformers' own progress bars and warnings would interleave with ours
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        return COMMANDS[args.command](args)
    except RecipeError as exc:
        err.print(render_all(exc.diagnostics, exc.source), markup=False)
        n = len(exc.diagnostics)
        err.print(f"{n} error{'s' if n != 1 else ''}; nothing was written", markup=False)
        return 1
    except (UserError, ModelError) as exc:
        err.print(f"tailorc: error: {exc}", markup=False)
        return 1
    except BuildError as exc:
        err.print(f"tailorc: error: {exc}; nothing was written", markup=False)
        return 1
    except KeyboardInterrupt:
        if args.command == "evolve":
            err.print("tailorc: interrupted; finished generations are saved: add --resume to "
                      "the same command to continue", markup=False)
        else:
            err.print("tailorc: interrupted; nothing was written", markup=False)
        return 130
    except Exception as exc:  # noqa: BLE001
        err.print(traceback.format_exc(), markup=False)
        err.print(f"tailorc: internal error: {exc!r}\nthis is a bug in tailor; please report "
                  "it with the traceback above", markup=False)
        return 2

