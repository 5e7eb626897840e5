"""Assemble a recipe's model in memory, without writing a checkpoint.

Consumes: a closed recipe file (or a checked `Recipe` and its models).
Produces: a `transformers` causal LM with the recipe's layers — the same tensors
`tailorc build` would write (same plan, same executor), for evaluation. The tokenizer is
the base model's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from recipe_compiler.compiler.frontdoor import load_checked
from recipe_compiler.compiler.plan import lower
from recipe_compiler.language.recipe import Recipe
from recipe_compiler.models.index import Models


def load_recipe(path: Path) -> tuple[Recipe, Models]:
    loaded = load_checked(path, require_closed=True)
    return loaded.recipe, loaded.models


def assemble(recipe: Recipe, models: Models, *, device: str = "cpu"):
    """The recipe's model, in eval mode on `device`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from recipe_compiler.execute import execute_to_state_dict

    plan = lower(recipe, models)
    config_dict = json.loads(plan.config_json)
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    state = execute_to_state_dict(plan, device="cpu")
    dtype = next(iter(state.values())).dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    rename = hf_renamer(model)
    state = {rename(k): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    tied = {k for k in missing if _tied_to_loaded(model, k, state)}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"assembled tensors do not fit {config.architectures}: missing "
                           f"{sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]}")
    return model.to(device).eval()


def hf_renamer(model) -> Callable[[str], str]:
    """Checkpoint tensor name -> the model's parameter name, by transformers' own renaming
    rules for the class, the ones `from_pretrained` applies (GPT-NeoX's `embed_out` is
    `lm_head` in the class)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming

        rules = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    except ImportError:  # a transformers without renaming rules: names are as stored
        rules = []

    def rename(name: str) -> str:
        for rule in rules:
            name, _ = rule.rename_source_key(name)
        return name

    return rename


def _tied_to_loaded(model, name: str, state: dict) -> bool:
    """A missing head that shares storage with a loaded embedding is fine (tied weights)."""
    param = model.get_parameter(name)
    return any(param.data_ptr() == model.get_parameter(k).data_ptr()
               for k in state if k != name and _is_param(model, k))


def _is_param(model, name: str) -> bool:
    try:
        model.get_parameter(name)
    except AttributeError:
        return False
    return True
