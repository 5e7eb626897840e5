"""`tailorc evolve`: the search, its progress and its summary.

Consumes: parsed arguments. Produces: a run directory (best.tr, history, state) and a line
per generation on `err`; raises `UserError` for a run it cannot start or resume.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from recipe_compiler.cli.console import UserError, err, out, pick_device
from recipe_compiler.cli.files import check_parent, input_holding


def cmd_evolve(args: argparse.Namespace) -> int:
    import torch

    from recipe_compiler.cli.progress import EvolveProgress
    from recipe_compiler.evaluate.checkpoint import bfloat16_hint
    from recipe_compiler.search import EvolveError, evolve, prepare

    overrides = {
        "population": args.population, "generations": args.generations, "seed": args.seed,
        "limit": args.limit, "min_limit": args.min_limit,
        "tasks": tuple(str(p.resolve()) for p in args.tasks) if args.tasks else None,
        "objectives": tuple(o.strip() for o in args.objectives.split(","))
        if args.objectives else None,
        "dtype": args.dtype, "max_memory": args.max_memory,
    }
    threads = args.threads or 1  # tiny layers: one thread each beats thread contention
    torch.set_num_threads(threads)
    prepared = prepare(args.recipe, overrides)
    run_dir = args.output or Path("runs") / args.recipe.stem
    _check_run_dir(run_dir, prepared, args.recipe)
    if (run_dir / "state.json").exists() and not args.resume:
        if not args.force:
            raise UserError(f"{run_dir} holds an earlier run (use --resume to continue it, "
                            "--force to start afresh, or -o for a new directory)")
        (run_dir / "state.json").unlink()
    settings = prepared.space.settings
    command = "tailorc evolve " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evolve"] \
        else f"tailorc evolve {args.recipe}"
    started = time.perf_counter()
    title = (f"evolving {args.recipe} -> {run_dir}/ (population {settings.population}, "
             f"{settings.generations} generations, keep {prepared.space.target_kept} of "
             f"{prepared.space.slot_count} layers)")
    device = pick_device(args.device)
    hint = bfloat16_hint(device, settings.dtype, prepared.models[prepared.space.base])
    if hint:
        err.print(hint, markup=False)
    with EvolveProgress(err, title, settings.generations) as progress:
        try:
            result = evolve(prepared, run_dir, command=command, workers=args.workers,
                            device=device, threads=threads,
                            caches=not args.no_cache, resume=args.resume,
                            recipe_path=args.recipe, overrides=overrides,
                            on_generation=progress.on_generation, ray_address=args.ray,
                            greedy_from=args.greedy_from, on_status=progress.on_status)
        except EvolveError as exc:
            raise UserError(str(exc)) from None
    err.print()
    scores = ", ".join(f"{k} {v:.3f}" for k, v in result.best_scores.items())
    out.print(f"best fitness {result.best_fitness:.4f} ({scores}) after "
              f"{result.evaluations} evaluations in {time.perf_counter() - started:.0f}s",
              markup=False)
    for score, params, path in result.pareto:
        out.print(f"pareto: score {score:.4f}, {params:,} parameters: {path}", markup=False)
    out.print("wrote " + ", ".join(str(f) for f in result.files), markup=False)
    out.print(f"next: tailorc build {result.best} -o out/{args.recipe.stem}-tailored",
              markup=False)
    return 0


# what a run directory holds; an existing directory with anything else is not tailor's
RUN_FILES = {"state.json", "best.tr", "shortgpt.tr", "history.jsonl", "evolve.png", "pareto"}


def _check_run_dir(run_dir: Path, prepared, recipe_path: Path) -> None:
    """The run directory is a directory, holds nothing but an earlier run's files, and is
    neither an input nor inside one (its files would be written among a model's)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a directory; give -o a directory")
    inputs = [m.path for m in prepared.models.values()] + [recipe_path]
    given = input_holding(run_dir, inputs)
    if given is not None:
        raise UserError(f"{run_dir}: is or is inside an input ({given}); choose another -o")
    if run_dir.is_dir():
        strangers = sorted(p.name for p in run_dir.iterdir()
                           if p.name not in RUN_FILES and ".tmp-" not in p.name)
        if strangers:
            raise UserError(f"{run_dir}: holds files that are not a tailor run "
                            f"({strangers[0]}); choose another -o")
    check_parent(run_dir)
