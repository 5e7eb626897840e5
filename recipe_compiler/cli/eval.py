"""`tailorc eval`: score checkpoints or recipes on tasks (or through lm-eval-harness)."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from recipe_compiler.cli.console import UserError, err, out, pick_device


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
