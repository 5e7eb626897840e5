"""Builds for every supported architecture, compared tensor by tensor with arithmetic done
directly in torch here (not with tailor's merge code), then loaded by transformers and run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from recipe_compiler.compiler.check import load_and_check
from recipe_compiler.compiler.plan import lower
from recipe_compiler.execute.output import write_checkpoint
from recipe_compiler.language.parser import parse

# arch -> (layer prefix, tensors that scale= multiplies), written out independently of
# recipe_compiler/models/arch/*.json so a mistake there shows up here.
ARCHES = {
    "llama": ("model.layers.", ("self_attn.o_proj.weight", "mlp.down_proj.weight")),
    "mistral": ("model.layers.", ("self_attn.o_proj.weight", "mlp.down_proj.weight")),
    "qwen2": ("model.layers.", ("self_attn.o_proj.weight", "mlp.down_proj.weight")),
    "qwen3": ("model.layers.", ("self_attn.o_proj.weight", "mlp.down_proj.weight")),
    "phi3": ("model.layers.", ("self_attn.o_proj.weight", "mlp.down_proj.weight")),
    "gpt2": ("transformer.h.", ("attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight",
                                "mlp.c_proj.bias")),
    "gpt_neox": ("gpt_neox.layers.", ("attention.dense.weight", "attention.dense.bias",
                                      "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias")),
}

RECIPE = """
model base = "base"
model math = "math"
model code = "code"
{dtype}
slot 0 = take(base)
slot 1 = take(math, layer=3)
slot 2 = drop
slot 3 = merge(math, code, weights=[0.6, 0.4], method=linear)
slot 4 = merge(math, code, weights=[0.5, 0.3], method=task_arithmetic, layer=2)
slot 5 = merge(math, code, weights=[0.7, 0.3], method=ties, density=0.5)
slot 6 = merge(math, code, method=slerp, t=0.3, layer=1, scale=0.5)
slot 7 = take(code, layer=5, scale=0.5)
"""
# output layer -> (op, source layer); slot 2 is dropped
EXPECTED_LAYERS = [("take:base", 0), ("take:math", 3), ("linear", 3), ("ta", 2), ("ties", 5),
                   ("slerp", 1), ("take:code", 5)]
SCALED = {5: 0.5, 6: 0.5}


def ref_ties(xs, base, weights, density):
    deltas = []
    for x in xs:
        d = (x - base).reshape(-1)
        k = int(density * d.numel())
        keep = torch.zeros_like(d)
        keep[torch.argsort(d.abs(), descending=True, stable=True)[:k]] = 1
        deltas.append((d * keep).view_as(x))
    w = [torch.full_like(base, v) for v in weights]
    weighted = [wi * d for wi, d in zip(w, deltas)]
    total = weighted[0] + weighted[1]
    sign = torch.where(total >= 0, 1.0, -1.0)
    agree = [(d.sign() == sign).float() for d in weighted]
    mixed = weighted[0] * agree[0] + weighted[1] * agree[1]
    divisor = w[0] * agree[0] + w[1] * agree[1]
    divisor[divisor == 0] = 1
    return base + mixed / divisor


def ref_slerp(a, b, t):
    ua, ub = a / a.norm(), b / b.norm()
    dot = float((ua * ub).sum())
    if abs(dot) > 0.9995:  # nearly parallel (e.g. norm weights): mergekit falls back to lerp
        return (1 - t) * a + t * b
    theta = math.acos(dot)
    s0 = math.sin((1 - t) * theta) / math.sin(theta)
    s1 = math.sin(t * theta) / math.sin(theta)
    return s0 * a + s1 * b


def expected_layer(op, src, suffix, sd, prefix):
    def x(model, layer=src):
        return sd[model][f"{prefix}{layer}.{suffix}"].float()

    if op.startswith("take:"):
        return x(op[5:])
    if op == "linear":
        return (0.6 * x("math") + 0.4 * x("code")) / 1.0
    if op == "ta":
        b = x("base")
        return b + (0.5 * (x("math") - b) + 0.3 * (x("code") - b))
    if op == "ties":
        return ref_ties([x("math"), x("code")], x("base"), (0.7, 0.3), 0.5)
    return ref_slerp(x("math"), x("code"), 0.3)


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_build_matches_direct_arithmetic(arch, dtype, arch_family, tmp_path):
    from transformers import AutoModelForCausalLM

    root = arch_family(arch)
    recipe_path = root / f"recipe-{dtype}.tr"
    text = RECIPE.format(dtype=f"dtype = {dtype}" if dtype else "")
    recipe = parse(text, str(recipe_path))
    models, diags = load_and_check(recipe, require_closed=True)
    assert not diags
    out = tmp_path / "out"
    write_checkpoint(recipe, lower(recipe, models), out)

    prefix, scaled = ARCHES[arch]
    sd = {m: load_file(root / m / "model.safetensors") for m in ("base", "math", "code")}
    got = load_file(out / "model.safetensors")
    suffixes = sorted({k[len(prefix):].split(".", 1)[1] for k in sd["base"]
                       if k.startswith(prefix)})
    want_dtype = torch.bfloat16 if dtype else torch.float32
    expected = {k: v.to(want_dtype) for k, v in sd["base"].items() if not k.startswith(prefix)}
    for i, (op, src) in enumerate(EXPECTED_LAYERS):
        for suffix in suffixes:
            value = expected_layer(op, src, suffix, sd, prefix)
            if i in SCALED and suffix in scaled:
                value = value * SCALED[i]
            expected[f"{prefix}{i}.{suffix}"] = value.to(want_dtype)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        if name.startswith(prefix) and EXPECTED_LAYERS[_layer_of(name, prefix)][0] == "slerp":
            # slerp's coefficients come from a float64 angle; allow one rounding step
            torch.testing.assert_close(got[name].float(), value.float(), rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(got[name], value), name

    config = json.loads((out / "config.json").read_text())
    n_layers = config.get("num_hidden_layers", config.get("n_layer"))
    assert n_layers == 7
    if "layer_types" in config:
        assert len(config["layer_types"]) == 7
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(_layers(model)) == 7
    logits = model(torch.tensor([[1, 5, 9, 3]])).logits
    assert logits.shape == (1, 4, model.config.vocab_size)
    assert torch.isfinite(logits).all()


def _layer_of(name, prefix):
    return int(name[len(prefix):].split(".", 1)[0])


def _layers(model):
    base = getattr(model, model.base_model_prefix)
    return getattr(base, "layers", None) or base.h


def test_assembled_in_memory_equals_built_checkpoint(arch_family, tmp_path):
    from transformers import AutoModelForCausalLM

    from recipe_compiler.execute.assemble import assemble

    root = arch_family("gpt2")  # tied embeddings: the head must follow the embedding
    recipe = parse(RECIPE.format(dtype=""), str(root / "r.tr"))
    models, _ = load_and_check(recipe, require_closed=True)
    write_checkpoint(recipe, lower(recipe, models), tmp_path / "out")
    built = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    in_memory = assemble(recipe, models)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        assert torch.equal(built(ids).logits, in_memory(ids).logits)
