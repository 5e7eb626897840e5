"""`tailorc zoo`: train the tiny model family, or make a random one."""

from __future__ import annotations

import argparse
import shutil

from rich.table import Table

from recipe_compiler.cli.console import UserError, err, out
from recipe_compiler.cli.files import check_parent

# what `tailorc zoo` writes (trained or --random): the only names --force may delete
ZOO_NAMES = {"base", "math", "code", "recall", "strings", "tasks", "zoo.json"}


def cmd_zoo(args: argparse.Namespace) -> int:

    if args.dir.exists() and not args.dir.is_dir():
        raise UserError(f"{args.dir}: exists and is not a directory")
    check_parent(args.dir)
    if args.dir.exists() and any(args.dir.iterdir()):
        if not args.force:
            raise UserError(f"{args.dir}: already exists and is not empty (use --force)")
        names = {p.name for p in args.dir.iterdir()}
        if not names <= ZOO_NAMES:
            stranger = sorted(names - ZOO_NAMES)[0]
            raise UserError(f"{args.dir}: holds files a zoo does not ({stranger}); refusing "
                            "to replace it (remove it yourself, or choose another directory)")
        shutil.rmtree(args.dir)
    if args.random:
        from recipe_compiler.zoo.families import make_family

        with err.status("making a random tiny family"):
            paths = make_family(args.dir, seed=args.seed)
        for name, path in paths.items():
            out.print(f"{name:<8} {path}", markup=False)
        return 0
    return _train_zoo(args)


def _train_zoo(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from recipe_compiler.zoo import build_zoo

    columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=err) as bar:
        tasks: dict[str, int] = {}

        def on_progress(p) -> None:
            if p.model not in tasks:
                tasks[p.model] = bar.add_task(p.model, total=p.total, info="")
            info = f"loss {p.loss:.3f}" if p.loss is not None else p.phase
            bar.update(tasks[p.model], completed=p.step, total=p.total, info=info)

        manifest = build_zoo(args.dir, seed=args.seed, quick=args.quick, on_progress=on_progress)
    table = Table(title=f"zoo in {args.dir} (seed {manifest.seed}, trained in "
                  f"{manifest.train_seconds:.0f}s)", title_justify="left")
    for col in ("model", "skill", "weights sha256"):
        table.add_column(col)
    for name, skill, _, digest in manifest.models:
        table.add_row(name, skill, digest[:16])
    out.print(table)
    out.print(f"tasks: {', '.join(p.name for p in manifest.tasks)} in {args.dir}/tasks/",
              markup=False)
    return 0
