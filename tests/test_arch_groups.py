"""The tensor groups and parts of every architecture file mean what mergekit's `filter:`
means: a group's name picks (as a substring of full tensor names, as mergekit matches
filters) exactly the group's tensors, and no tensor outside the layers; every tensor
outside the layers belongs to embed, norm or head."""

from __future__ import annotations

import pytest

from recipe_compiler.models.arch import all_architectures

ARCHES = all_architectures()


@pytest.mark.parametrize("arch", ARCHES, ids=[a.name for a in ARCHES])
def test_a_group_name_is_a_mergekit_filter_for_exactly_its_tensors(arch):
    layer = [arch.layer_tensor(3, n) for n, _ in arch.layer_shapes]
    outside = [n for n, _ in arch.shapes]
    assert arch.tensor_groups and "mlp" in arch.filter_groups()
    for group in arch.filter_groups():
        picked = [n for n in layer if group in n]
        assert picked == [n for n in layer if arch.group_of(arch.split(n)[1]) == group]
        assert not [n for n in outside if group in n]


@pytest.mark.parametrize("arch", ARCHES, ids=[a.name for a in ARCHES])
def test_every_tensor_outside_the_layers_has_a_part(arch):
    for name, _ in arch.shapes:
        assert arch.part_of(name) in ("embed", "norm", "head"), name
    assert arch.part_of(arch.embedding_tensor) == "embed"
    assert arch.part_of(arch.head_tensor) == "head"


def test_a_group_name_that_picks_other_tensors_is_no_filter():
    neox = next(a for a in ARCHES if a.name == "gpt_neox")
    assert "attention" not in neox.filter_groups()  # post_attention_layernorm holds it too
    from recipe_compiler.interop.mergekit import GROUPS

    assert "attention" not in GROUPS and {"self_attn", "mlp", "attn"} <= set(GROUPS)


def test_scale_filters_pick_only_scaled_tensors():
    llama = next(a for a in ARCHES if a.name == "llama")
    assert llama.scale_filters() == ("o_proj", "down_proj")
