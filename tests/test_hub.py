"""Models named by Hugging Face Hub id, resolved offline from a Hugging Face cache.

The cache is laid out as huggingface_hub lays it out (blobs, refs, snapshots of symlinks),
and huggingface_hub's own `scan_cache_dir` must recognise it before tailor is asked to use
it; nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from recipe_compiler.cli import main

COMMIT = "0" * 39 + "1"


def cache_model(cache: Path, repo: str, source: Path) -> Path:
    """Put `source`'s files into `cache` as the snapshot of `repo` at `main`."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / COMMIT
    (root / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    for f in sorted(source.iterdir()):
        data = f.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    return snap


@pytest.fixture()
def hub(quick_zoo, tmp_path, monkeypatch):
    import huggingface_hub

    cache = tmp_path / "hub"
    for name in ("base", "math"):
        cache_model(cache, f"tailor-test/{name}", quick_zoo / name)
    repos = {r.repo_id for r in huggingface_hub.scan_cache_dir(cache).repos}
    assert repos == {"tailor-test/base", "tailor-test/math"}  # huggingface_hub agrees
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


RECIPE = """model base = "tailor-test/base"
model math = "tailor-test/math@main"
slot 0..6 = take(base)
slot 6 = merge(base, math, weights=[0.5, 0.5])
slot 7..12 = take(math)
"""


def test_hub_ids_build_and_stay_hub_ids(hub, capsys):
    recipe = hub / "r.tr"
    recipe.write_text(RECIPE)
    assert main(["check", str(recipe)]) == 0
    assert main(["build", str(recipe), "-o", str(hub / "out")]) == 0
    written = (hub / "out" / "recipe.tr").read_text()
    assert '"tailor-test/base"' in written and '"tailor-test/math@main"' in written
    front = (hub / "out" / "README.md").read_text().split("---")[1]
    assert "- tailor-test/base" in front and "- tailor-test/math" in front
    assert main(["check", str(hub / "out" / "recipe.tr")]) == 0  # rebuilds as is
    capsys.readouterr()
    assert main(["export", str(recipe), "--to", "mergekit"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert {s["model"] for sl in config["slices"] for s in sl["sources"]} <= {
        "tailor-test/base", "tailor-test/math@main"}


def test_an_uncached_id_offline_is_a_clear_error(hub, capsys):
    recipe = hub / "r.tr"
    recipe.write_text(RECIPE.replace("tailor-test/math@main", "tailor-test/absent"))
    assert main(["check", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "tailor-test/absent: not in the Hugging Face cache and HF_HUB_OFFLINE is set" in err


def test_a_local_directory_wins_over_a_hub_id(hub, quick_zoo, capsys):
    (hub / "tailor-test").mkdir()
    (hub / "tailor-test" / "absent").symlink_to(quick_zoo / "base")
    recipe = hub / "r.tr"
    recipe.write_text('model base = "tailor-test/absent"\nslot 0..12 = take(base)\n')
    assert main(["check", str(recipe)]) == 0
