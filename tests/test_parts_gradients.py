"""embed/norm/head statements, gradient(...), by_group(...) and `slot a..`: parse, print,
check and build, compared with arithmetic done directly on the input tensors."""

from __future__ import annotations

import pytest

from recipe_compiler.language.parser import parse
from recipe_compiler.language.printer import format_recipe
from recipe_compiler.language.recipe import ByGroup, Gradient, Merge, resolve
from recipe_compiler.language.source import RecipeError

TEXT = """model base = "fam/base"
model math = "fam/math"
embed = merge(base, math, weights=[0.3, 0.7], method=linear)
head = take(math)

slot 0..4 = merge(base, math, method=slerp, t=by_group(self_attn=gradient(0, 0.5, 1), mlp=0.2, other=0.5))
slot 4..  = merge(base, math, weights=[1.0, gradient(0, 1)], method=linear, normalize=false)
"""  # noqa: E501


def test_round_trip_keeps_parts_gradients_groups_and_open_ranges():
    recipe = parse(TEXT)
    assert format_recipe(recipe) == TEXT
    assert parse(format_recipe(recipe)) == recipe
    assert recipe.slots[1].stop is None
    assert recipe.part("head").model == "math" and recipe.part("norm") is None


def test_gradient_is_mergekits_interpolation():
    g = Gradient((0.0, 0.5, 0.3, 0.7, 1.0))
    # mergekit: t * (n - 1) -> index and fraction
    assert [g.at(k / 39) for k in (0, 39)] == [0.0, 1.0]
    assert g.at(0.5) == pytest.approx(0.3)
    assert g.at(0.125) == pytest.approx(0.25)


def test_resolve_picks_the_group_then_the_place():
    op = parse(TEXT).slots[0].op
    assert isinstance(op, Merge) and isinstance(op.t, ByGroup)
    assert resolve(op, 0.5, "self_attn").t == 0.5
    assert resolve(op, 1.0, "self_attn").t == 1.0
    assert resolve(op, 0.0, "mlp").t == 0.2
    assert resolve(op, 0.0, None).t == 0.5


@pytest.mark.parametrize("text, message", [
    ("embed = drop", "'embed' takes take(...) or merge(...)"),
    ("norm = take(base, layer=2)", "'norm' has no layers"),
    ("head = merge(base, math, method=slerp, t=gradient(0, 1))", "takes one value"),
    ("slot 0..2 = merge(base, math, method=slerp, t=gradient(0, 2))", "'t' must be in [0, 1]"),
    ("slot 0..2 = merge(base, math, t=gradient(1))", "two or more numbers"),
    ("slot 0..2 = merge(base, math, weights=[1, by_group(mlp=1)])", "needs other="),
    ("slot 0..2 = merge(base, math, weights=[1, spline(1, 2)])", "unknown function 'spline'"),
    ("embed = take(base)\nembed = take(math)", "'embed' is set twice"),
])
def test_user_errors_are_positioned(text, message):
    with pytest.raises(RecipeError) as exc:
        parse('model base = "b"\nmodel math = "m"\n' + text + "\n")
    assert any(message in d.message for d in exc.value.diagnostics), exc.value
    assert all(d.span is not None and d.span.line >= 3 for d in exc.value.diagnostics)


@pytest.fixture(scope="module")
def built(family_root):
    from safetensors.torch import load_file

    from recipe_compiler.cli import main

    recipe = family_root / "parts.tr"
    recipe.write_text(TEXT)
    out = family_root / "parts-out"
    assert main(["build", str(recipe), "-o", str(out), "--device", "cpu"]) == 0
    return (load_file(out / "model.safetensors"),
            load_file(family_root / "fam/base/model.safetensors"),
            load_file(family_root / "fam/math/model.safetensors"), out)


def test_build_merges_the_parts_and_unties_the_head(built):
    import json

    import torch

    out, base, math, out_dir = built
    e = "model.embed_tokens.weight"
    want = (0.3 * base[e].float() + 0.7 * math[e].float()) / 1.0
    assert torch.equal(out[e], want.to(out[e].dtype))
    head = math.get("lm_head.weight", math[e])
    assert torch.equal(out["lm_head.weight"], head)
    assert torch.equal(out["model.norm.weight"], base["model.norm.weight"])
    config = json.loads((out_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is False


def test_build_interpolates_a_gradient_per_slot(built):
    import torch

    out, base, math, _ = built
    for slot, t in ((4, 0.0), (5, 1 / 3), (7, 1.0)):  # slot 4.. of 8 layers: 4 slots
        n = f"model.layers.{slot}.mlp.up_proj.weight"
        want = base[n].float() + t * math[n].float()
        assert torch.equal(out[n], want.to(out[n].dtype)), slot


@pytest.fixture(scope="module")
def tied_root(family_root, tmp_path_factory):
    """fam/base with its head tied to its embeddings (no lm_head tensor), beside fam/math."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("tied")
    shutil.copytree(family_root / "fam/base", root / "tied")
    config = json.loads((root / "tied/config.json").read_text())
    (root / "tied/config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    tensors = load_file(root / "tied/model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, root / "tied/model.safetensors", metadata={"format": "pt"})
    shutil.copytree(family_root / "fam/math", root / "math")
    return root


@pytest.mark.parametrize("head, untied", [("take(math)", True), ("take(tied)", False),
                                          (None, False)])
def test_a_tied_base_gets_a_head_of_its_own_only_when_asked(tied_root, head, untied):
    import json

    import torch
    from safetensors.torch import load_file

    from recipe_compiler.cli import main

    recipe = tied_root / f"r_{untied}_{head is None}.tr"
    recipe.write_text('model tied = "tied"\nmodel math = "math"\n'
                      + (f"head = {head}\n" if head else "") + "slot 0..8 = take(tied)\n")
    out = tied_root / f"out_{untied}_{head is None}"
    assert main(["build", str(recipe), "-o", str(out), "--device", "cpu"]) == 0
    got = load_file(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    assert ("lm_head.weight" in got) is untied
    assert config["tie_word_embeddings"] is (not untied)
    if untied:
        math = load_file(tied_root / "math/model.safetensors")
        assert torch.equal(got["lm_head.weight"], math["lm_head.weight"])


def test_the_search_can_refuse_what_it_cannot_evaluate():
    from recipe_compiler.compiler.parts import search_refusals

    found = search_refusals(parse(TEXT))
    assert [d.span.line for d in found] == [3, 4, 6, 7]  # embed, head, both slots
    assert not search_refusals(parse('model a = "a"\nslot 0..2 = ?\nslot 2 = take(a)\n'))
