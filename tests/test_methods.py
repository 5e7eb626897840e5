"""The merge-method registry: declarations, the stages that read it, and DARE end to end.

DARE's masks are random; tailor seeds them from (seed, source layer:tensor, model index),
so the reference arithmetic below draws the same masks with its own code.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipe_compiler import methods
from recipe_compiler.compiler.check import load_and_check
from recipe_compiler.compiler.plan import lower
from recipe_compiler.execute.output import write_checkpoint
from recipe_compiler.interop.mergekit import PARAMETERS, export_recipe, import_config
from recipe_compiler.language.parser import parse
from recipe_compiler.language.printer import format_recipe
from recipe_compiler.language.source import RecipeError

PACKAGE = Path(methods.__file__).parent.parent

# name -> {param: (kind, tailor default, mergekit name, mergekit default)}: written out here
# so that a change to a declaration shows up as a test failure to review
DECLARED = {
    "linear": {"weights": ("weights", None, "weight", None),
               "normalize": ("bool", True, "normalize", True)},
    "task_arithmetic": {"weights": ("weights", None, "weight", None),
                        "normalize": ("bool", False, "normalize", False)},
    "ties": {"weights": ("weights", None, "weight", None),
             "normalize": ("bool", True, "normalize", True),
             "density": ("float", 1.0, "density", 1.0)},
    "slerp": {"t": ("float", 0.5, "t", None)},
    "dare_linear": {"weights": ("weights", None, "weight", None),
                    "normalize": ("bool", False, "normalize", False),
                    "density": ("float", 1.0, "density", 1.0),
                    "rescale": ("bool", True, "rescale", True),
                    "seed": ("int", 0, None, None)},
}
DECLARED["dare_ties"] = DECLARED["dare_linear"]


def test_registry_declarations():
    assert methods.names() == tuple(DECLARED)
    for name, params in DECLARED.items():
        m = methods.get(name)
        got = {p.name: (p.kind, p.default, p.mergekit, p.mergekit_default) for p in m.params}
        assert got == params, name
        assert all(p.kind in methods.KINDS for p in m.params)
        assert m.mergekit == name and m.mergekit_form in methods.FORMS
        assert set(m.tunable) <= {p.name for p in m.params}
        assert set(m.shown) <= {p.name for p in m.params}
    assert [n for n in methods.names() if methods.get(n).needs_base] == \
        ["task_arithmetic", "ties", "dare_linear", "dare_ties"]
    assert methods.searchable() == ("linear", "task_arithmetic", "ties", "dare_linear",
                                    "dare_ties")
    assert (methods.get("slerp").min_models, methods.get("slerp").max_models) == (2, 2)
    assert PARAMETERS["dare_ties"] == ("weight", "normalize", "density", "rescale",
                                       "int8_mask", "lambda")


def test_registry_imports_no_torch():
    code = ("import sys; import recipe_compiler.methods, recipe_compiler.language.parser, "
            "recipe_compiler.compiler.check, recipe_compiler.compiler.plan, "
            "recipe_compiler.interop.mergekit, "
            "recipe_compiler.search.space; assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


STAGES = ("language/parser.py", "compiler/check.py", "compiler/plan.py", "execute/merge.py",
          "execute/__init__.py", "language/printer.py", "interop/mergekit/common.py",
          "interop/mergekit/config.py", "interop/mergekit/parameters.py",
          "interop/mergekit/importer.py", "interop/mergekit/exporter.py",
          "language/recipe.py", "search/fitness.py", "search/space.py")


@pytest.mark.parametrize("stage", STAGES)
def test_method_names_live_only_in_the_registry(stage):
    """No pipeline stage spells a method name: each reads recipe_compiler/methods/. (The
    search's default method and the CLI's help text are settings and prose, not knowledge.)"""
    text = (PACKAGE / stage).read_text()
    for name in methods.names():
        assert not re.search(rf"[\"']{name}[\"']", text), f"{stage} names {name!r}"
    assert "MK_NORMALIZE" not in text and "TAILOR_NORMALIZE" not in text


DARE = """
model base = "../fam/base"
model math = "../fam/math"
model code = "../fam/code"
slot 0 = take(base)
slot 1 = merge(math, code, weights=[0.6, 0.4], method=dare_linear, density=0.5)
slot 2 = merge(math, code, weights=[0.7, 0.5], method=dare_ties, density=0.3, seed=7)
slot 3 = merge(math, code, weights=[0.7, 0.5], method=dare_ties, density=0.4, normalize=true,
               rescale=false, layer=5)
slot 4 = merge(math, code, weights=[0.6, 0.4], method=dare_linear, density=1)
slot 5..8 = take(base)
"""


def test_dare_parses_and_prints_back(family_root):
    recipe = parse(DARE)
    text = format_recipe(recipe)
    assert parse(text) == recipe
    assert "method=dare_ties, density=0.4, normalize=true, rescale=false, layer=5" in text
    assert recipe.slots[2].op.param("seed") == 7 and recipe.slots[1].op.param("seed") is None


def _build(family_root: Path, out: Path) -> None:
    recipe = parse(DARE, str(family_root / "recipes" / "dare.tr"))
    models, diags = load_and_check(recipe, require_closed=True)
    assert not diags
    write_checkpoint(recipe, lower(recipe, models), out)


def _mask(seed: int, key: str, k: int, shape, density: float) -> torch.Tensor:
    digest = hashlib.blake2b(f"{seed}:{key}:{k}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
    return (torch.rand(shape, generator=gen) < density).float()


def _dare(xs, base, key, density, seed, rescale):
    out = []
    for k, x in enumerate(xs):
        d = x - base
        if density >= 1:
            out.append(d)
            continue
        kept = d * _mask(seed, key, k, d.shape, density)
        if rescale and d.abs().sum() >= 1e-7 and kept.abs().sum() >= 1e-7:
            kept = kept * (d.abs().sum() / kept.abs().sum())
        out.append(kept)
    return out


def _signed(deltas, weights, normalize):
    weighted = [w * d for w, d in zip(weights, deltas)]
    sign = torch.where(weighted[0] + weighted[1] >= 0, 1.0, -1.0)
    agree = [(d.sign() == sign).float() for d in weighted]
    mixed = weighted[0] * agree[0] + weighted[1] * agree[1]
    if not normalize:
        return mixed
    divisor = weights[0] * agree[0] + weights[1] * agree[1]
    divisor[divisor == 0] = 1
    return mixed / divisor


def _expected(slot: int, suffix: str, sd) -> torch.Tensor:
    src = 5 if slot == 3 else slot
    base, xs = (sd[m][f"model.layers.{src}.{suffix}"].float() for m in ("base",)), None
    base = next(base)
    xs = [sd[m][f"model.layers.{src}.{suffix}"].float() for m in ("math", "code")]
    key = f"{src}:{suffix}"
    if slot == 1:
        d = _dare(xs, base, key, 0.5, 0, True)
        return base + (0.6 * d[0] + 0.4 * d[1])
    if slot == 2:
        return base + _signed(_dare(xs, base, key, 0.3, 7, True), (0.7, 0.5), False)
    if slot == 3:
        return base + _signed(_dare(xs, base, key, 0.4, 0, False), (0.7, 0.5), True)
    return base + (0.6 * (xs[0] - base) + 0.4 * (xs[1] - base))  # density 1: task arithmetic


def test_dare_build_matches_direct_arithmetic_and_rebuilds_byte_identical(family_root,
                                                                           tmp_path):
    _build(family_root, tmp_path / "a")
    _build(family_root, tmp_path / "b")
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    sd = {m: load_file(family_root / "fam" / m / "model.safetensors")
          for m in ("base", "math", "code")}
    got = load_file(tmp_path / "a" / "model.safetensors")
    suffixes = sorted(k.split(".", 3)[3] for k in sd["base"] if k.startswith("model.layers.0."))
    for slot in (1, 2, 3, 4):
        for suffix in suffixes:
            name = f"model.layers.{slot}.{suffix}"
            assert torch.equal(got[name], _expected(slot, suffix, sd)), name
    # the masks really drop entries, and the seed changes them
    q = "self_attn.q_proj.weight"
    assert not torch.equal(got[f"model.layers.1.{q}"], _expected(4, q, sd))
    assert not torch.equal(_dare([sd["math"][f"model.layers.2.{q}"]], sd["base"][
        f"model.layers.2.{q}"], f"2:{q}", 0.3, 7, True)[0], _dare(
        [sd["math"][f"model.layers.2.{q}"]], sd["base"][f"model.layers.2.{q}"], f"2:{q}", 0.3,
        8, True)[0])


def _merge(args: str, xs, base):
    from recipe_compiler.compiler.plan import merge_expr
    from recipe_compiler.execute.merge import combine

    op = parse(f'model a = "a"\nmodel b = "b"\nslot 0 = merge(a, b, {args})').slots[0].op
    return combine(merge_expr(op, (), None, None, "0:x"), xs, base)


def test_dare_at_density_one_is_its_deterministic_twin():
    gen = torch.Generator().manual_seed(0)
    base, a, b = (torch.randn(8, 8, generator=gen) for _ in range(3))
    w = "weights=[0.3, -0.2]"
    assert torch.equal(_merge(f"{w}, method=dare_linear", [a, b], base),
                       _merge(f"{w}, method=task_arithmetic", [a, b], base))
    assert torch.equal(_merge(f"{w}, method=dare_ties", [a, b], base),
                       _merge(f"{w}, method=ties, normalize=false", [a, b], base))
    assert not torch.equal(_merge(f"{w}, method=dare_ties, density=0.5", [a, b], base),
                           _merge(f"{w}, method=dare_ties, density=0.5, seed=1", [a, b], base))


def test_mergekit_dare_round_trip_and_refusals():
    text = """
slices:
  - sources:
      - {model: fam/base, layer_range: [0, 1]}
  - sources:
      - {model: fam/base, layer_range: [1, 3]}
      - {model: fam/math, layer_range: [1, 3], parameters: {weight: 0.5, density: 0.5}}
      - {model: fam/code, layer_range: [1, 3], parameters: {weight: 0.5, density: 0.4}}
  - sources:
      - {model: fam/base, layer_range: [3, 4]}
merge_method: dare_linear
base_model: fam/base
"""
    per_model = import_config(text, "x.yml").slots[1].op  # one density per model, as mergekit
    assert per_model.density == (0.5, 0.4)
    recipe = import_config(text.replace("0.4}", "0.5}"), "x.yml")
    op = recipe.slots[1].op
    assert (op.method, op.density, op.param("rescale"), op.normalize) == \
        ("dare_linear", 0.5, None, None)
    exported = export_recipe(recipe)
    assert "equals tailor's in distribution, not bit for bit" in exported
    assert import_config(exported, "x.yml") == recipe
    with pytest.raises(RecipeError, match="parameter .density. cannot be expressed"):
        import_config(text.replace("merge_method: dare_linear", "merge_method: linear"), "x.yml")
