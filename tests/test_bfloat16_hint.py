"""`tailorc evolve`'s hint to score in bfloat16: only where it pays and loses nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from recipe_compiler.evaluate.checkpoint import bfloat16_hint, default_dtype

AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
NO_AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"


def _model(dtype: str):
    return SimpleNamespace(tensors={"model.embed_tokens.weight": SimpleNamespace(dtype=dtype),
                                    "lm_head.weight": SimpleNamespace(dtype=dtype)})


@pytest.fixture
def cpuinfo(tmp_path):
    def write(text: str):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return path
    return write


def test_hint_on_an_amx_cpu_for_a_bf16_model(cpuinfo):
    line = bfloat16_hint("cpu", None, _model("BF16"), cpuinfo(AMX))
    assert line is not None and "--dtype bfloat16" in line and "AMX" in line


@pytest.mark.parametrize("device, dtype, stored, flags", [
    ("cpu", "float32", "BF16", AMX),  # a dtype asked for: the user chose
    ("cpu", "bfloat16", "BF16", AMX),
    ("cpu", None, "F32", AMX),  # a float32 model would lose precision
    ("cpu", None, "BF16", NO_AMX),  # avx512_bf16 alone: not measured to pay
    ("cuda", None, "BF16", AMX),  # already bfloat16 there
])
def test_no_hint_elsewhere(cpuinfo, device, dtype, stored, flags):
    assert bfloat16_hint(device, dtype, _model(stored), cpuinfo(flags)) is None


def test_no_hint_without_cpuinfo(tmp_path):
    assert bfloat16_hint("cpu", None, _model("BF16"), tmp_path / "missing") is None


def test_the_default_does_not_depend_on_the_cpu():
    assert default_dtype("cpu") == "float32" and default_dtype("cuda") == "bfloat16"
