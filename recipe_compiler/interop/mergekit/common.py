"""What both directions know of mergekit: its merge methods and their parameters, the
tensor names its filters are matched against, the keys a config may hold, and how a
method's slices are written.

Consumes: the method registry (recipe_compiler/methods/).
Produces: constants, `_form` and `_needs_base` for `importer` and `exporter`, and `_show`
for values quoted in messages.
"""

from __future__ import annotations

import reprlib

from recipe_compiler import methods
from recipe_compiler.models.arch import all_architectures

# The merge methods, their mergekit parameters and both tools' defaults: methods/<name>.py.
# passthrough is mergekit's take.
METHODS = ("passthrough",) + tuple(m.mergekit for m in methods.REGISTRY.values() if m.mergekit)
PARAMETERS = {"passthrough": ("scale",), **{m.mergekit: m.mergekit_params()
                                            for m in methods.REGISTRY.values() if m.mergekit}}
BOOL_PARAMETERS = ("normalize", "int8_mask", "rescale")
# What mergekit's `filter:` strings can mean, from the architecture files (models/arch/):
# a tensor group's name (each file's `tensor_groups`) where, as a substring of tensor names,
# it picks exactly the group's tensors in every architecture that has it; and the module
# names that pick exactly what tailor's `scale` multiplies (o_proj and down_proj for
# Llama-style models), per architecture.
GROUPS = tuple(dict.fromkeys(
    g for a in all_architectures() for g, _ in a.tensor_groups
    if all(g in b.filter_groups() for b in all_architectures()
           if g in dict(b.tensor_groups))))
SCALE_FILTER_SETS = tuple(dict.fromkeys(a.scale_filters() for a in all_architectures()
                                        if a.scale_filters()))
# what `export` writes for `scale` when it does not know the architecture: Llama's
LLAMA_SCALE_FILTERS = next(a.scale_filters() for a in all_architectures() if a.name == "llama")
TOP_KEYS = ("name", "slices", "models", "merge_method", "base_model", "dtype", "out_dtype",
            "parameters")
REFUSED_KEYS = {
    "tokenizer_source": "tokenizer surgery is not supported: tailor copies the base model's "
                        "tokenizer files unchanged",
    "tokenizer": "tokenizer surgery is not supported: tailor copies the base model's "
                 "tokenizer files unchanged",
    "chat_template": "chat_template is not supported: tailor copies the base model's "
                     "tokenizer files unchanged",
    "modules": "multi-module configs ('modules:') are not supported",
}
KEYWORDS = {"drop", "take", "merge", "choose", "model", "slot", "search", "true", "false",
            "embed", "norm", "head"}

_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 60, 60, 40


def _show(value: object) -> str:
    """A user's value inside a message: clipped, and escaped so that any terminal can
    print it (a lone surrogate or a newline stays a visible escape)."""
    return _SHOW.repr(value)


def _form(method: str) -> str:
    """How mergekit's slices say the method: 'take' (passthrough), or the registry's form."""
    found = methods.by_mergekit(method)
    return found.mergekit_form if found else "take"


def _needs_base(method: str) -> bool:
    found = methods.by_mergekit(method)
    return found is not None and found.needs_base
