"""Pruning baselines on a model whose answer is known: identity layers must go first."""

from __future__ import annotations

import pytest
import torch

from recipe_compiler.models.arch import find_architecture
from recipe_compiler.prune import (
    angular_distances,
    block_influence,
    choose_drops,
    drop_recipe,
    layer_list,
    layer_states,
    perplexity,
    removal_count,
    without_layers,
)
from recipe_compiler.zoo.families import make_family


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("prune")
    make_family(root, "llama", ("base",), layers=8, seed=4)
    m = AutoModelForCausalLM.from_pretrained(root / "base").eval()
    with torch.no_grad():
        for i in (2, 5, 6):  # no residual contribution: output == input exactly
            m.model.layers[i].self_attn.o_proj.weight.zero_()
            m.model.layers[i].mlp.down_proj.weight.zero_()
    return m


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padding must be ignored
    mask[3, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


ARCH = find_architecture({"architectures": ["LlamaForCausalLM"]})


def test_hooks_see_raw_layer_inputs_and_outputs(model, batch):
    states = layer_states(model, ARCH, batch)
    out = model(**batch, output_hidden_states=True, use_cache=False)
    for i in range(len(states) - 1):  # transformers' hidden_states[i] is layer i's input
        torch.testing.assert_close(states[i], out.hidden_states[i].float())
    assert torch.equal(states[3], states[2])  # layer 2 is an identity


def test_block_influence_ranks_identity_layers_lowest(model, batch):
    bi = block_influence(model, ARCH, batch)
    assert bi[2] == pytest.approx(0, abs=1e-6) and bi[5] == pytest.approx(0, abs=1e-6)
    assert min(v for i, v in enumerate(bi) if i not in (2, 5, 6)) > 1e-3
    drops, _ = choose_drops("block-influence", model, ARCH, batch, 3)
    assert drops == {2, 5, 6}


def test_angular_finds_the_identity_block(model, batch):
    d = angular_distances(model, ARCH, batch, 2)
    assert d[5] == pytest.approx(0, abs=1e-3)
    drops, _ = choose_drops("angular", model, ARCH, batch, 2)
    assert drops == {5, 6}


def test_ppl_and_sleb_drop_what_does_not_matter(model, batch):
    full = perplexity(model, batch)
    with without_layers(model, ARCH, {2}):
        assert perplexity(model, batch) == pytest.approx(full, rel=1e-5)
    assert len(model.model.layers) == 8  # restored
    # A random model's other layers may help or hurt, so check the definitions themselves.
    drops, scores = choose_drops("ppl", model, ARCH, batch, 3)
    p = scores["ppl_without"]
    for i in (2, 5, 6):
        assert p[i] == pytest.approx(full, rel=1e-5)
    assert drops == set(sorted(p, key=lambda i: (p[i], i))[:3])
    drops, info = choose_drops("sleb", model, ARCH, batch, 3)
    steps = info["steps"]
    assert steps[0]["removed"] == min(p, key=lambda i: (p[i], i))
    removed: set[int] = set()
    for step in steps:  # each step removes the least harmful layer of the pruned model
        with without_layers(model, ARCH, removed | {step["removed"]}):
            assert perplexity(model, batch) == pytest.approx(step["ppl"], rel=1e-6)
        removed.add(step["removed"])
    assert drops == removed


def test_drop_recipe_and_counts():
    from recipe_compiler.language.printer import format_recipe

    r = drop_recipe("m", "../m", 8, {2, 5, 6}, ["why"])
    assert format_recipe(r) == ('# why\n\nmodel m = "../m"\n\nslot 0..2 = take(m)\n'
                                'slot 2    = drop\nslot 3..5 = take(m)\nslot 5..7 = drop\n'
                                'slot 7    = take(m)\n')
    assert removal_count("25%", 12) == 3 and removal_count("4", 12) == 4


@pytest.mark.parametrize("arch", ["llama", "qwen3", "phi3", "gpt2", "gpt_neox"])
def test_ppl_without_each_reuses_the_prefix_and_gets_the_same_values(arch, batch,
                                                                     tmp_path, monkeypatch):
    """Runs without layer i start from i's input, kept from one pass: the very values of
    running the whole model without i, for every layer and after earlier drops; with room
    for some inputs only, from the nearest one before i; with none, whole runs."""
    from transformers import AutoModelForCausalLM

    from recipe_compiler import prune
    from recipe_compiler.prune import ppl_without_each

    make_family(tmp_path, arch, ("base",), layers=6, seed=2)
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    a = find_architecture(m.config.to_dict())
    calls = []
    for layer in layer_list(m, a):
        layer.register_forward_hook(lambda *args: calls.append(1))
    one = batch["input_ids"].numel() * 32 * 4  # one hidden state: hidden 32, float32
    for room, dropped in ((10, set()), (10, {1}), (10, {0, 4}), (2, set()), (0, {1})):
        monkeypatch.setattr(prune, "KEPT_STATES_BYTES", room * one)
        calls.clear()
        got = ppl_without_each(m, a, batch, dropped)
        fast = len(calls)
        want = {}
        for i in range(6):
            if i not in dropped:
                with without_layers(m, a, dropped | {i}):
                    want[i] = perplexity(m, batch)
        assert got == want  # exactly
        kept = 6 - len(dropped)
        whole = kept * (kept - 1)
        assert (fast < whole) if room else (fast == whole), (fast, kept, room)
