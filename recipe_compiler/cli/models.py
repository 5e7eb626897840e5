"""Commands that run models: eval, prune, zoo.

Consumes: parsed arguments. Produces: score tables or JSON on `out`, drop-only recipes, the
tiny zoo; raises `UserError` with one line for anything the user can fix.
"""

from __future__ import annotations

import argparse
import os
import shutil

from rich.markup import escape
from rich.table import Table

from recipe_compiler.cli.console import UserError, err, out, pick_device
from recipe_compiler.cli.files import check_new_file, check_parent, write_new
from recipe_compiler.language.printer import format_recipe

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
        from recipe_compiler.families import make_family

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


def cmd_eval(args: argparse.Namespace) -> int:
    if args.harness:
        return _eval_harness(args)
    import torch

    from recipe_compiler.evaluate import TaskError, evaluate, load_tasks, mean_score, scores_to_json
    from recipe_compiler.evaluate.checkpoint import default_dtype, display_names, open_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.tasks:
        raise UserError("no tasks given (use --tasks FILE_OR_DIR ...)")
    try:
        tasks = load_tasks(args.tasks)
    except (TaskError, OSError) as exc:
        raise UserError(str(exc)) from None
    device = pick_device(args.device)
    dtype = args.dtype or default_dtype(device)
    results = {}
    with err.status("") as status:
        for name, path in zip(display_names(args.models), args.models):
            status.update(f"scoring {path}")
            opened = open_model(path, device=device, dtype=dtype)
            try:
                results[name] = evaluate(opened.model, opened.tokenizer, tasks,
                                         limit=args.limit, batch_size=args.batch_size,
                                         device=device)
            except TaskError as exc:
                raise UserError(str(exc)) from None
            del opened
    if args.json:
        import json

        doc = {"dtype": dtype, "device": device, "models": scores_to_json(results)}
        out.print(json.dumps(doc, indent=2), markup=False)
        return 0
    out.print(score_table(results, [t.name for t in tasks], mean_score))
    out.print(f"computed in {dtype} on {device}", markup=False)
    return 0


def score_table(results: dict, task_names: list[str], mean_score) -> Table:
    table = Table(title="scores (acc / exact match; ppl for text)", title_justify="left")
    table.add_column("model")
    for name in task_names:
        table.add_column(escape(name), justify="right")  # a file name is not markup
    table.add_column("mean", justify="right", style="bold")
    for model, scores in results.items():
        cells = []
        for name in task_names:
            s = scores[name]
            cells.append(f"{s.primary:.2f}" if s.kind == "ppl" else f"{100 * s.primary:.1f}")
        try:
            mean = f"{100 * mean_score(scores):.1f}"
        except ValueError:
            mean = "-"
        table.add_row(escape(model), *cells, mean)
    return table


def _eval_harness(args: argparse.Namespace) -> int:
    from recipe_compiler.evaluate.checkpoint import display_names
    from recipe_compiler.evaluate.harness import HarnessUnavailable, run_harness
    from recipe_compiler.models.index import load_model

    results = {}
    for name, path in zip(display_names(args.models), args.models):
        if path.suffix == ".tr":
            raise UserError("--harness runs on checkpoint directories; build the recipe first")
        load_model(name, path)  # the same validation as every other command: no pickles
        try:
            results[name] = run_harness(
                path, args.harness, include_path=args.harness_include, limit=args.limit,
                device=pick_device(args.device), batch_size=args.batch_size)
        except HarnessUnavailable as exc:
            raise UserError(str(exc)) from None
    import json

    out.print(json.dumps(results, indent=2), markup=False)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from recipe_compiler.evaluate import TaskError
    from recipe_compiler.evaluate.checkpoint import open_model
    from recipe_compiler.prune import calibration_texts, choose_drops, drop_recipe, encode

    if args.model.suffix == ".tr":
        raise UserError(f"{args.model}: prune ranks a checkpoint's layers; give a checkpoint "
                        "directory (build the recipe first)")
    check_new_file(args.output, args.force, inputs=[args.model, args.calib])
    if args.samples < 1:
        raise UserError(f"--samples {args.samples}: give a whole number >= 1")
    try:
        texts = calibration_texts(args.calib, args.samples)
    except (TaskError, OSError) as exc:
        raise UserError(str(exc)) from None
    if not texts:
        raise UserError(f"{args.calib}: no calibration texts")
    device = pick_device(args.device)
    opened = open_model(args.model, device=device, dtype="float32")
    info, model, tokenizer = opened.info, opened.model, opened.tokenizer
    k = _removal_count(args.remove, info.num_layers)
    batch = encode(tokenizer, texts, getattr(model.config, "max_position_embeddings", 2048),
                   device)
    with err.status(f"ranking {info.num_layers} layers by {args.method}") as status:
        try:
            drops, _ = choose_drops(args.method, model, info.arch, batch, k,
                                    on_step=lambda m: status.update(m))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    rel = os.path.relpath(os.path.abspath(args.model), os.path.abspath(args.output.parent))
    header = [f"{args.method} pruning of {args.model}: {k} of {info.num_layers} layers removed",
              f"calibration: {args.calib} ({len(texts)} samples); drops {sorted(drops)}",
              f"command: tailorc prune {args.model} --method {args.method} --remove "
              f"{args.remove} --calib {args.calib}"]
    recipe = drop_recipe(_recipe_name(info.path.name), rel, info.num_layers, drops, header)
    write_new(args.output, format_recipe(recipe), args.force, inputs=[args.model, args.calib])
    out.print(f"wrote {args.output}: drops layers {sorted(drops)}", markup=False)
    return 0


def _removal_count(spec: str, n_layers: int) -> int:
    """'25%' of the layers (rounded) or a count, between 1 and all layers but one."""
    from recipe_compiler.prune import removal_count

    try:
        k = removal_count(spec, n_layers)
    except (ValueError, OverflowError):
        raise UserError(f"--remove {spec!r}: give a count or a percentage, e.g. 8 or "
                        "25%") from None
    if not 1 <= k <= n_layers - 1:
        raise UserError(f"--remove {spec!r} removes {k} of {n_layers} layers; give between 1 "
                        f"and {n_layers - 1}")
    return k


def _recipe_name(text: str) -> str:
    """A model name the recipe language accepts, made from a directory name."""
    import re

    name = re.sub(r"[^A-Za-z0-9_-]", "_", text) or "model"
    return name if name[0].isalpha() or name[0] == "_" else f"m_{name}"
