"""The model card (README.md) written beside a built checkpoint.

Consumes: the canonical recipe text, the `Plan` and the recipe's models.
Produces: Markdown with Hugging Face front matter: what was built from what, the slot map,
and parameter counts before and after.
"""

from __future__ import annotations

from .plan import Plan, human_count
from .recipe import Recipe


def model_card(recipe: Recipe, plan: Plan, recipe_text: str) -> str:
    title = recipe.name or "tailored model"
    removed = 1 - plan.params_after / plan.params_before if plan.params_before else 0.0
    kept = sum(1 for s in plan.slots if s.out_layer is not None)
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- tailor",
        "- layer-pruning",
        "- merge",
        "base_model:",
        *[f"- {m.path}" for m in recipe.models],
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
        f"({removed:.1%} removed)",
        f"- dtype: {plan.dtype or 'as the base model'}",
        "",
        "## Sources",
        "",
        "| model | path |",
        "|---|---|",
        *[f"| {m.name} | `{m.path}` |" for m in recipe.models],
        "",
        "## Layers",
        "",
        "| slot | output layer | operation | sources (model:layer) |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(s.cells()) + " |" for s in plan.slots]
    lines += ["", "## Recipe", "", "```", recipe_text.rstrip("\n"), "```", ""]
    return "\n".join(lines)
