"""The recipe's ranges to the end (`slot a..`), its embed/norm/head statements and its
by_group(...) values, checked against the models.

Consumes: a `Recipe` and its models' `ModelInfo` (headers only).
Produces: `fix_ranges` (the recipe with every `slot a..` ending at the base model's last
layer), `part_tensor` (which tensor of a model stands for an output tensor outside the
layers: a tied model's head is its embedding), and check rules for check.py.
"""

from __future__ import annotations

from dataclasses import replace

from recipe_compiler import methods
from recipe_compiler.language.recipe import (
    ByGroup,
    Merge,
    Op,
    Recipe,
    Take,
    concrete_ops,
    op_models,
    varies,
)
from recipe_compiler.language.source import Diagnostic, did_you_mean, error
from recipe_compiler.models.index import ModelInfo, Models, TensorInfo


def fix_ranges(recipe: Recipe, models: Models) -> Recipe:
    """Every `slot a..` as `slot a..n`, n the base model's layer count (a+1 while the base
    model is unknown, so that later checks still run)."""
    if all(d.stop is not None for d in recipe.slots):
        return recipe
    base = models.get(recipe.base_name or "")
    slots = tuple(d if d.stop is not None else replace(
        d, stop=max(d.start + 1, base.num_layers if base is not None else 0))
        for d in recipe.slots
        # one starting past the base's layers is reported by check_open_ranges alone
        if d.stop is not None or base is None or d.start < base.num_layers)
    return replace(recipe, slots=slots)


def check_open_ranges(recipe: Recipe, models: Models) -> list[Diagnostic]:
    """`slot a..` must start inside the base model (checked on the recipe as written)."""
    base = models.get(recipe.base_name or "")
    if base is None:
        return []
    return [error(f"'slot {d.start}..' starts past the base model '{base.name}', which has "
                  f"{base.num_layers} layers", d.span)
            for d in recipe.slots if d.stop is None and d.start >= base.num_layers]


def part_tensor(model: ModelInfo, name: str) -> TensorInfo | None:
    """`model`'s tensor for the output tensor `name`: its own, or for a head that `model`
    ties to its embeddings, its embedding tensor."""
    found = model.tensors.get(name)
    if found is None and name == model.arch.head_tensor and \
            model.arch.ties_embeddings(model.config):
        found = model.tensors.get(model.arch.embedding_tensor)
    return found


def untied_head(recipe: Recipe, base: ModelInfo) -> bool:
    """Whether the output gets a head of its own while the base model ties it: the recipe
    gives `head` an operation other than the embeddings'."""
    head = recipe.part("head")
    return (head is not None and base.arch.ties_embeddings(base.config)
            and head != (recipe.part("embed") or Take(base.name)))


def check_parts(recipe: Recipe, models: Models) -> list[Diagnostic]:
    """Each part's models are declared and hold that part's tensors, shaped as the base's;
    a head untied from tied embeddings needs an architecture that can hold one."""
    known = [m.name for m in recipe.models]
    base = models.get(recipe.base_name or "")
    diags: list[Diagnostic] = []
    for decl in recipe.parts:
        names = op_models(decl.op) if isinstance(decl.op, (Take, Merge)) else ()
        for k, name in enumerate(names):
            if name not in known:
                diags.append(error(f"unknown model '{name}' ({did_you_mean(name, known)})",
                                   decl.op.span_of(f"models.{k}")))
        if base is not None and isinstance(decl.op, (Take, Merge)):
            diags += _part_sources(decl.part, decl.op, models, base, recipe)
    if base is not None and untied_head(recipe, base) and \
            base.arch.head_tensor not in dict(base.arch.shapes):
        head = recipe.part("head")
        diags.append(error(f"base model '{base.name}' ties its head to its embeddings and a "
                           f"{base.arch.name} model cannot hold a head of its own",
                           head.span_of() if head else None))
    return diags


def _part_sources(part: str, op: Take | Merge, models: Models, base: ModelInfo,
                  recipe: Recipe) -> list[Diagnostic]:
    names = op_models(op)
    if isinstance(op, Merge) and methods.get(op.method).needs_base and base.name not in names:
        names = names + (base.name,)
    tensors = part_names(base, part)
    for k, name in enumerate(names):
        m = models.get(name)
        if m is None:
            continue
        for t in tensors:
            ref = part_tensor(base, t)
            got = part_tensor(m, t)
            span = op.span_of(f"models.{k}")
            if got is None:
                return [error(f"model '{name}' has no tensor '{t}' for '{part}'", span)]
            if ref is not None and got.shape != ref.shape:
                return [error(f"tensor '{t}' has shape {list(got.shape)} in model '{name}' "
                              f"but {list(ref.shape)} in base model '{base.name}'", span)]
    return []


def part_names(base: ModelInfo, part: str) -> list[str]:
    """The output tensors of a part, by the base model's names (a tied head: the head's
    name, which the output holds only when it is untied)."""
    names = [n for n in base.non_layer() if base.arch.part_of(n) == part]
    if part == "head" and not names and base.arch.ties_embeddings(base.config):
        names = [base.arch.head_tensor]
    return names


def check_groups(recipe: Recipe, models: Models) -> list[Diagnostic]:
    """Every group a by_group(...) names is a tensor group of the base's architecture."""
    base = models.get(recipe.base_name or "")
    if base is None:
        return []
    known = [g for g, _ in base.arch.tensor_groups]
    ops: list[Op] = [d.op for d in recipe.parts] + [
        o for d in recipe.slots for o in concrete_ops(d.op)]
    diags = []
    for op in ops:
        if not isinstance(op, Merge):
            continue
        for key, value in _values(op):
            for group in _groups_in(value):
                if group not in known:
                    diags.append(error(
                        f"unknown tensor group '{group}' for a {base.arch.name} model "
                        f"({did_you_mean(group, known)})", op.span_of(key)))
    return list(dict.fromkeys(diags))


def _values(op: Merge):
    for p in methods.get(op.method).params:
        value = op.param(p.name)
        if value is not None:
            yield p.name, value


def _groups_in(value: object) -> list[str]:
    if isinstance(value, ByGroup):
        return [g for g, _ in value.groups]
    if isinstance(value, tuple):
        return [g for v in value for g in _groups_in(v)]
    return []


def search_refusals(recipe: Recipe) -> list[Diagnostic]:
    """What the search cannot evaluate yet: `embed`/`norm`/`head` statements (its
    in-memory model takes those tensors from the base model) and parameters that vary
    per slot or per tensor group (its layer store merges one value per layer). For the
    search to call before it starts (recipe_compiler/search/ is unchanged by issue 16)."""
    diags = [error(f"the search keeps the base model's {d.part}; remove '{d.part} = ...' "
                   "or fill the open slots first and build", d.span) for d in recipe.parts]
    for decl in recipe.slots:
        for op in concrete_ops(decl.op):
            if isinstance(op, Merge) and any(varies(v) for _, v in _values(op)):
                diags.append(error("the search merges one value per layer: gradient(...) "
                                   "and by_group(...) are for build", op.span_of()))
    return diags
