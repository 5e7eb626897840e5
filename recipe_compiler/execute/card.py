"""The model card (README.md) written beside a built checkpoint.

Consumes: the recipe with its model paths relative to the output, the canonical recipe
text, the `Plan`, and where each model was read from.
Produces: Markdown with Hugging Face front matter: what was built from what, the slot map,
and parameter counts before and after.

The front matter's `base_model` holds what the Hub expects there, repository ids: a model
read from a Hugging Face cache snapshot (`models--org--name/snapshots/REV`) is `org/name`.
Local directories have no id; the card's body lists every source, relative to the output.
"""

from __future__ import annotations

import re
from pathlib import Path

from recipe_compiler.compiler.listing import human_count, size_change
from recipe_compiler.compiler.plan import Plan
from recipe_compiler.language.recipe import Recipe

_HUB_SNAPSHOT = re.compile(r"/models--([^/]+)--([^/]+)/snapshots/[^/]+$")


def hub_id(resolved: Path) -> str | None:
    """The Hub repository id of a model directory inside a Hugging Face cache, else None."""
    match = _HUB_SNAPSHOT.search(Path(resolved).absolute().as_posix().rstrip("/"))
    return f"{match[1]}/{match[2]}" if match else None


def model_card(recipe: Recipe, plan: Plan, recipe_text: str,
               hub_ids: dict[str, str | None] | None = None) -> str:
    """`recipe` has paths relative to the output; `hub_ids` maps a model name to its id."""
    hub_ids = hub_ids or {}
    ids = list(dict.fromkeys(i for m in recipe.models if (i := hub_ids.get(m.name))))
    title = recipe.name or "tailored model"
    kept = sum(1 for s in plan.slots if s.out_layer is not None)
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- tailor",
        "- layer-pruning",
        "- merge",
        *(["base_model:", *[f"- {i}" for i in ids]] if ids else []),
        "---",
        "",
        f"# {title}",
        "",
        "Built with tailor (`tailorc build`), which cuts and stitches "
        "transformer layers from a family of models (GPTailor).",
        "",
        f"- base model (embeddings, final norm, head, config, tokenizer): `{plan.base}`",
        f"- layers: {kept} of {len(plan.slots)} slots kept",
        f"- parameters: {human_count(plan.params_before)} -> {human_count(plan.params_after)} "
        f"({size_change(plan.params_before, plan.params_after)})",
        f"- dtype: {plan.dtype or 'as the base model'}",
        "",
        "## Sources",
        "",
        "| model | Hub id | path (relative to this directory) |",
        "|---|---|---|",
        *[f"| {m.name} | {hub_ids.get(m.name) or '-'} | `{m.path}` |" for m in recipe.models],
        "",
        "## Layers",
        "",
        "| slot | output layer | operation | sources (model:layer) |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(s.cells()) + " |" for s in plan.slots]
    lines += ["", "## Recipe", "", "```", recipe_text.rstrip("\n"), "```", ""]
    return "\n".join(lines)
