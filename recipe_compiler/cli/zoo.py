"""`tailorc zoo`: train the tiny model family, make a random one, or build the real one."""

from __future__ import annotations

import argparse
import shutil

from rich.table import Table

from recipe_compiler.cli.console import UserError, err, out
from recipe_compiler.cli.files import check_parent

# what `tailorc zoo` writes (trained or --random): the only names --force may delete
ZOO_NAMES = {"base", "math", "code", "recall", "strings", "tasks", "zoo.json"}


def cmd_zoo(args: argparse.Namespace) -> int:
    if args.real:
        return _real_zoo(args)
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


def _real_zoo(args: argparse.Namespace) -> int:
    """`tailorc zoo --real DIR`: build the SmolLM2 family into DIR, or complete it there."""
    from recipe_compiler.zoo import real
    from recipe_compiler.zoo.real_family import FAMILY, PART_NAMES, build_real_family

    if args.random or args.quick:
        raise UserError("--real cannot be combined with --random or --quick")
    if args.dir.exists() and not args.dir.is_dir():
        raise UserError(f"{args.dir}: exists and is not a directory")
    check_parent(args.dir)
    if args.dir.exists():
        names = {p.name for p in args.dir.iterdir() if not p.name.startswith(".")}
        if not names <= set(PART_NAMES):
            stranger = sorted(names - set(PART_NAMES))[0]
            raise UserError(f"{args.dir}: holds files a real family does not ({stranger}); "
                            "refusing to build into it (choose another directory)")
        if args.force:
            for name in sorted(names):
                path = args.dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    steps = {t.name: t.steps for t in FAMILY}
    with err.status("preparing the base model") as status:
        def on_progress(p) -> None:
            loss = f", loss {p.loss:.3f}" if p.loss is not None else ""
            status.update(f"fine-tuning {p.model}: step {p.step}/{steps[p.model]}{loss}")

        try:
            manifest = build_real_family(args.dir, seed=args.seed, on_progress=on_progress)
        except real.RealModelUnavailable as exc:
            raise UserError(str(exc)) from None
    table = Table(title=f"real family in {args.dir} (seed {manifest['seed']})",
                  title_justify="left")
    for col in ("model", "trained", "weights sha256"):
        table.add_column(col)
    for name, digest in manifest["sha256"].items():
        seconds = manifest["train_seconds"].get(name)
        trained = "-" if name == "base" else ("cached" if name not in manifest["built"]
                                              else f"{seconds:.0f}s")
        table.add_row(name, trained, digest[:16])
    out.print(table)
    out.print(f"tasks: {args.dir}/tasks/ (test), {args.dir}/tasks/val/ (validation)",
              markup=False)
    return 0
