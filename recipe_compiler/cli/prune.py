"""`tailorc prune`: a drop-only recipe by a single-model pruning method."""

from __future__ import annotations

import argparse
import os

from recipe_compiler.cli.console import UserError, err, out, pick_device
from recipe_compiler.cli.files import check_new_file, write_new
from recipe_compiler.language.printer import format_recipe


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
