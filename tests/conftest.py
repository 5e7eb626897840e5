"""Shared fixtures: tiny random model families, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recipe_compiler.zoo.families import make_family

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("TAILOR_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="session")
def family_root(tmp_path_factory) -> Path:
    """A directory holding `fam/` (llama: base, math, code; 8 layers) for recipes to name."""
    root = tmp_path_factory.mktemp("families")
    make_family(root / "fam", "llama", ("base", "math", "code"), layers=8, seed=0)
    make_family(root / "wide", "llama", ("base",), layers=8, hidden=64, seed=0)
    make_family(root / "gpt", "gpt2", ("base",), layers=8, seed=0)
    # a pickle checkpoint: must be refused without being opened
    (root / "pickled").mkdir()
    (root / "pickled" / "config.json").write_text((root / "fam/base/config.json").read_text())
    (root / "pickled" / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    # a truncated safetensors file
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text((root / "fam/base/config.json").read_text())
    data = (root / "fam/base/model.safetensors").read_bytes()
    (root / "broken" / "model.safetensors").write_bytes(data[: len(data) // 2])
    (root / "noconfig").mkdir()
    (root / "noconfig" / "model.safetensors").write_bytes(data)
    (root / "recipes").mkdir()
    return root


@pytest.fixture(scope="session")
def arch_family(tmp_path_factory):
    """`arch_family(name)` -> directory with base, math, code of that architecture."""
    cache: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in cache:
            root = tmp_path_factory.mktemp(f"fam-{arch}")
            make_family(root, arch, ("base", "math", "code"), layers=6, seed=1)
            cache[arch] = root
        return cache[arch]

    return make


def check_golden(path: Path, actual: str) -> None:
    """Compare with a golden file; TAILOR_UPDATE_GOLDEN=1 rewrites it (review the diff)."""
    if UPDATE_GOLDEN or not path.exists():
        path.write_text(actual)
        if not UPDATE_GOLDEN:
            pytest.fail(f"golden file {path.name} was missing and has been written; review it")
    assert actual == path.read_text(), f"output differs from {path}"


@pytest.fixture(scope="session")
def quick_zoo(tmp_path_factory) -> Path:
    """A quick trained zoo (seconds): base + one fine-tune per skill, tasks in tasks/."""
    from recipe_compiler.zoo import build_zoo

    root = tmp_path_factory.mktemp("quickzoo")
    build_zoo(root / "zoo", seed=0, quick=True)
    return root / "zoo"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models: one thread is several times faster than two fighting for two cores."""
    import torch

    torch.set_num_threads(1)
