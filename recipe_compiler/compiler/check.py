"""Semantic checks of a recipe against its models' headers.

Consumes: a `Recipe` and the `ModelInfo` of each model it names (from index.py).
Produces: a list of `Diagnostic`s; empty means the recipe can be lowered.

Each rule is a function `(recipe, models) -> list[Diagnostic]`, run from `RULES`, so that
all problems are found and reported together. No weight is read here.
"""

from __future__ import annotations

from recipe_compiler import methods
from recipe_compiler.compiler.parts import (
    check_groups,
    check_open_ranges,
    check_parts,
    fix_ranges,
)
from recipe_compiler.language.recipe import (
    ClosedOp,
    Drop,
    Merge,
    Op,
    Open,
    Recipe,
    SlotDecl,
    concrete_ops,
    op_models,
)
from recipe_compiler.language.source import Diagnostic, Span, did_you_mean, error, warning
from recipe_compiler.models.hub import locate
from recipe_compiler.models.index import ModelError, ModelInfo, Models, load_model


def load_models(recipe: Recipe) -> tuple[Models, list[Diagnostic]]:
    models: Models = {}
    diags: list[Diagnostic] = []
    for decl in recipe.models:
        if decl.name in models:
            continue
        try:
            models[decl.name] = load_model(decl.name, locate(recipe, decl.path))
        except ModelError as exc:
            diags.append(error(f"model '{decl.name}': {exc}", decl.path_span))
    return models, diags


# --- rules that need no model files -------------------------------------------------


def check_models_declared(recipe: Recipe, models: Models) -> list[Diagnostic]:
    if recipe.models:
        return []
    return [error("no models declared", Span.whole_file(recipe.path),
                  hint='declare one with: model base = "path/to/hf-checkpoint"')]


def check_base_model(recipe: Recipe, models: Models) -> list[Diagnostic]:
    known = [m.name for m in recipe.models]
    if recipe.base_model is None or recipe.base_model in known:
        return []
    hint = did_you_mean(recipe.base_model, known)
    return [error(f"unknown base_model '{recipe.base_model}' ({hint})",
                  recipe.setting_span("base_model"))]


def check_slot_layout(recipe: Recipe, models: Models) -> list[Diagnostic]:
    """Slots 0..n-1 are each defined exactly once."""
    if not recipe.slots:
        return [error("no slots defined", Span.whole_file(recipe.path),
                      hint="add e.g. 'slot 0..32 = take(base)'")]
    diags: list[Diagnostic] = []
    owner: dict[int, SlotDecl] = {}
    for decl in recipe.slots:
        clash = sorted(i for i in range(decl.start, decl.stop) if i in owner)
        if clash:
            first = owner[clash[0]]
            where = f"line {first.span.line}" if first.span else "another declaration"
            diags.append(error(f"slot {_ranges(clash)} already defined at {where}", decl.span))
        for i in range(decl.start, decl.stop):
            owner.setdefault(i, decl)
    missing = [i for i in range(recipe.slot_count) if i not in owner]
    if missing:
        after = max((d for d in recipe.slots if d.stop <= missing[0]), key=lambda d: d.stop,
                    default=recipe.slots[0])
        diags.append(error(f"slot {_ranges(missing)} not defined (slots must cover "
                           f"0..{recipe.slot_count} without gaps)", after.span,
                           hint="write 'slot N = drop' to remove a layer"))
    return diags


def check_op_models(recipe: Recipe, models: Models) -> list[Diagnostic]:
    known = [m.name for m in recipe.models]
    diags = []
    for decl in recipe.slots:
        for op in concrete_ops(decl.op):
            for k, name in enumerate(op_models(op)):
                if name and name not in known:
                    span = op.span_of(f"models.{k}")
                    diags.append(error(f"unknown model '{name}' ({did_you_mean(name, known)})",
                                       span))
    return diags


def check_not_all_dropped(recipe: Recipe, models: Models) -> list[Diagnostic]:
    if recipe.slots and all(isinstance(d.op, Drop) for d in recipe.slots):
        return [error("every slot is dropped; the model would have no layers",
                      recipe.slots[0].span)]
    return []


# --- rules against the models' headers -------------------------------------------------


def check_architectures(recipe: Recipe, models: Models) -> list[Diagnostic]:
    base = models.get(recipe.base_name or "")
    if base is None:
        return []
    diags = []
    for decl in recipe.models:
        m = models.get(decl.name)
        if m is not None and m.arch != base.arch:
            diags.append(error(
                f"model '{decl.name}' is {_arch(m)} but base model '{base.name}' is "
                f"{_arch(base)}; layers can only be stitched within one architecture",
                decl.path_span))
        elif m is not None and m.model_type != base.model_type:
            diags.append(error(f"model '{decl.name}' has model_type '{m.model_type}' but base "
                               f"model '{base.name}' has '{base.model_type}'", decl.path_span))
    return diags


def check_layers(recipe: Recipe, models: Models) -> list[Diagnostic]:
    """Source layers exist, and every source layer fits the base model's layer shapes."""
    base = models.get(recipe.base_name or "")
    if base is None or base.num_layers == 0:
        return []
    template = base.layer(0)
    diags: list[Diagnostic] = []
    for decl in recipe.slots:
        for op in concrete_ops(decl.op):
            diags += _check_op_layers(op, decl, models, base, template)
    return diags


def _check_op_layers(op: ClosedOp, decl: SlotDecl, models: Models, base: ModelInfo,
                     template: dict) -> list[Diagnostic]:
    if isinstance(op, Drop):
        return []
    sources = range(decl.start, decl.stop) if op.layer is None else [op.layer]
    needs_base = isinstance(op, Merge) and methods.get(op.method).needs_base
    names = op_models(op) + ((base.name,) if needs_base and base.name not in op_models(op)
                             else ())
    diags = []
    for k, name in enumerate(names):
        m = models.get(name)
        if m is None:
            continue
        missing = [i for i in sources if i >= m.num_layers]
        span = op.span_of("layer") if op.layer is not None else op.span_of(f"models.{k}")
        if missing:
            why = " (the task-arithmetic base)" if k >= len(op_models(op)) else ""
            diags.append(error(
                f"layer {_ranges(missing)} of model '{name}'{why} does not exist; it has "
                f"{m.num_layers} layers, numbered from 0", span))
            continue
        problem = _shape_problem(m, sources, template, base.name)
        if problem:
            diags.append(error(problem, op.span_of(f"models.{k}")))
    return diags


def _shape_problem(m: ModelInfo, sources, template: dict, base_name: str) -> str | None:
    for i in sources:
        layer = m.layer(i)
        for suffix, ref in template.items():
            got = layer.get(suffix)
            if got is None:
                return f"layer {i} of model '{m.name}' has no tensor '{suffix}'"
            if got.shape != ref.shape:
                return (f"tensor '{suffix}' of layer {i} has shape {list(got.shape)} in model "
                        f"'{m.name}' but {list(ref.shape)} in base model '{base_name}'")
        extra = sorted(layer.keys() - template.keys())
        if extra:
            return f"layer {i} of model '{m.name}' has tensor '{extra[0]}' that the base lacks"
    return None


# Config fields that keep every tensor's shape but change what a layer computes. The output
# runs every layer with the base's config, so a layer from a model that differs here would
# silently compute something else. (Names across Llama-style, GPT-2, GPT-NeoX and Phi-3
# configs, transformers 4 and 5.)
LAYER_MATH_FIELDS = (
    "rope_theta", "rope_parameters", "rope_scaling", "partial_rotary_factor", "rotary_pct",
    "rotary_emb_base", "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon",
    "num_attention_heads", "num_key_value_heads", "n_head", "head_dim", "hidden_act",
    "activation_function", "sliding_window", "use_sliding_window", "use_parallel_residual",
    "scale_attn_weights", "attn_logit_softcapping", "qk_layernorm",
)
# Fields outside the layers (embeddings and head come from the base): worth a warning.
OUTER_FIELDS = ("vocab_size", "max_position_embeddings", "n_positions", "tie_word_embeddings")


def check_configs(recipe: Recipe, models: Models) -> list[Diagnostic]:
    """Each model's config against the base's: an error where a used layer would compute
    something else in the output, a warning where only the model's role makes it moot."""
    base = models.get(recipe.base_name or "")
    if base is None:
        return []
    used = {n for d in recipe.slots for op in concrete_ops(d.op) for n in op_models(op)}
    diags: list[Diagnostic] = []
    for decl in recipe.models:
        m = models.get(decl.name)
        if m is None or m is base or m.arch != base.arch or not _same_layer_shapes(m, base):
            continue  # check_architectures or check_layers already says what is wrong
        for key in LAYER_MATH_FIELDS + OUTER_FIELDS:
            mine, theirs = m.config.get(key), base.config.get(key)
            if mine == theirs:
                continue
            text = (f"model '{decl.name}' has {key} = {_json(mine)} but base model "
                    f"'{base.name}' has {_json(theirs)}")
            if key in LAYER_MATH_FIELDS and decl.name in used:
                diags.append(error(f"{text}; its layers would run with the base's value in "
                                   "the output", decl.path_span))
            else:
                why = "the output uses the base's" if key in OUTER_FIELDS else \
                    "none of its layers are used"
                diags.append(warning(f"{text} ({why})", decl.path_span))
    return diags


def _same_layer_shapes(m: ModelInfo, base: ModelInfo) -> bool:
    if not m.num_layers or not base.num_layers:
        return False
    mine, theirs = m.layer(0), base.layer(0)
    return mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine)


def _json(value) -> str:
    import json

    return "(not set)" if value is None else json.dumps(value, sort_keys=True)


def _arch(m: ModelInfo) -> str:
    return ", ".join(m.config.get("architectures") or [m.arch.name])


def _ranges(values: list[int]) -> str:
    if len(values) == 1:
        return str(values[0])
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1] + 1}"
    return ", ".join(map(str, values))


RULES = (
    check_models_declared,
    check_base_model,
    check_slot_layout,
    check_op_models,
    check_not_all_dropped,
    check_architectures,
    check_layers,
    check_configs,
    check_parts,
    check_groups,
)


def check(recipe: Recipe, models: Models, *, require_closed: bool = False) -> list[Diagnostic]:
    diags = check_open_ranges(recipe, models)
    recipe = fix_ranges(recipe, models)
    diags += [d for rule in RULES for d in rule(recipe, models)]
    if require_closed:
        diags += check_closed(recipe)
    return sorted(diags, key=Diagnostic.sort_key)


def check_closed(recipe: Recipe) -> list[Diagnostic]:
    """`build` needs a concrete operation in every slot."""
    return [
        error(f"slot {_ranges(list(range(d.start, d.stop)))} is open ('{_open_text(d.op)}'); "
              "build needs a concrete operation", d.op.span_of(),
              hint="run 'tailorc evolve' to fill open slots, or write take/merge/drop")
        for d in recipe.open_slots()
    ]


def _open_text(op: Op) -> str:
    return "?" if isinstance(op, Open) else "choose(...)"


def load_and_check(recipe: Recipe, *, require_closed: bool = False
                   ) -> tuple[Models, list[Diagnostic]]:
    models, diags = load_models(recipe)
    return models, sorted(diags + check(recipe, models, require_closed=require_closed),
                          key=Diagnostic.sort_key)
