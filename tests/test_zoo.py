"""The tiny model zoo: determinism, loadable checkpoints, disjoint splits, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from recipe_compiler.zoo import (
    FINETUNES,
    ZooManifest,
    ZooProgress,
    build_zoo,
    load_manifest,
    sha256,
)
from recipe_compiler.zoo import skills as zskills
from recipe_compiler.zoo.train import QUICK

NAMES = ["base", *FINETUNES]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[ZooManifest, list[ZooProgress]]:
    events: list[ZooProgress] = []
    manifest = build_zoo(tmp_path_factory.mktemp("zoo"), seed=0, quick=True,
                         on_progress=events.append)
    return manifest, events


def _hashes(m: ZooManifest) -> dict[str, str]:
    return {name: digest for name, _, _, digest in m.models}


def test_required_models_present(zoo) -> None:
    manifest, _ = zoo
    names = [name for name, *_ in manifest.models]
    assert names[0] == "base"
    assert {"base", "math", "code", "recall"} <= set(names)
    for _, _, path, digest in manifest.models:
        for f in ("model.safetensors", "config.json", "generation_config.json",
                  "tokenizer.json", "tokenizer_config.json"):
            assert (path / f).is_file(), f"{path.name}/{f} missing"
        assert sha256(path / "model.safetensors") == digest
    leftovers = [p.name for p in manifest.root.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary siblings were renamed away


def test_same_seed_same_weights_other_seed_differs(zoo, tmp_path: Path) -> None:
    manifest, _ = zoo
    # Rebuilt with fine-tunes in two worker processes: weights must not depend on that either.
    events: list[ZooProgress] = []
    again = build_zoo(tmp_path / "again", seed=0, quick=True, workers=2,
                      on_progress=events.append)
    assert _hashes(again) == _hashes(manifest)
    assert {e.model for e in events if e.phase == "train"} == set(NAMES)
    other = build_zoo(tmp_path / "other", seed=1, quick=True)
    assert all(_hashes(other)[n] != _hashes(manifest)[n] for n in NAMES)


def test_progress_reports(zoo) -> None:
    _, events = zoo
    for name in NAMES:
        steps = [e for e in events if e.model == name and e.phase == "train"]
        total = QUICK.base_steps if name == "base" else QUICK.finetune_steps
        assert [e.step for e in steps] == list(range(1, total + 1))
        assert all(e.total == total and isinstance(e.loss, float) for e in steps)
        assert any(e.model == name and e.phase == "save" for e in events)


def test_refuses_existing_zoo(zoo) -> None:
    manifest, _ = zoo
    with pytest.raises(FileExistsError):
        build_zoo(manifest.root, seed=0, quick=True)


def test_tokenizer_round_trip(zoo) -> None:
    manifest, _ = zoo
    tok = AutoTokenizer.from_pretrained(manifest.model_path("base"))
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.bos_token and tok.eos_token and tok.pad_token
    for text in ("12+345=357", "(a[b{c}]|", "c5,h2;c=", "the old cat sleeps.\nhe runs."):
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert len(ids) == len(text) + 1  # one token per character


def test_models_load_and_run(zoo) -> None:
    manifest, _ = zoo
    tok = AutoTokenizer.from_pretrained(manifest.model_path("base"))
    for name, _, path, _ in manifest.models:
        model = AutoModelForCausalLM.from_pretrained(path)
        assert type(model).__name__ == "LlamaForCausalLM", name
        assert model.config.num_hidden_layers == 12
        assert next(model.parameters()).dtype == torch.float32
        enc = tok(["12+34=", "ab"], return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = model(**enc).logits
        assert logits.shape == (2, enc["input_ids"].shape[1], len(tok))
        assert torch.isfinite(logits).all()
        out = model.generate(**tok("1+1=", return_tensors="pt"), max_new_tokens=3,
                             do_sample=False)
        assert out.shape[1] <= 5 + 3


def test_no_overlap_between_train_val_test() -> None:
    # The quick zoo's sizes are small; check the full-size split of one seed explicitly.
    held = zskills.heldout(0, 250, 150)
    pools = zskills.training_pools(0, 3000, held)
    for name in (*zskills.SKILLS, "text"):
        test = {p for p, _ in held[name]["test"]}
        val = {p for p, _ in held[name]["val"]}
        train = {p for p, _ in pools[name]}
        assert len(test) == 250 and len(val) == 150 and len(train) == 3000
        assert not test & val and not test & train and not val & train, name


def test_task_files_match_heldout_and_are_disjoint(zoo) -> None:
    manifest, _ = zoo
    held = zskills.heldout(0, QUICK.n_test, QUICK.n_val)
    pools = zskills.training_pools(0, QUICK.pool_size, held)
    for name in zskills.SKILLS:
        keys = {}
        for split, path in (("test", manifest.root / "tasks" / f"{name}.jsonl"),
                            ("val", manifest.root / "tasks" / "val" / f"{name}.jsonl")):
            items = [json.loads(line) for line in path.read_text().splitlines()]
            keys[split] = {i.get("prompt", i.get("context")) for i in items}
            assert len(keys[split]) == len(items)
            for item in items:
                if "choices" in item:
                    assert len(set(item["choices"])) == len(item["choices"]) >= 2
                    assert item["choices"][item["gold"]] == dict(held[name][split])[
                        item["context"]]
                else:
                    assert item["answer"] == dict(held[name][split])[item["prompt"]]
        train = {p for p, _ in pools[name]}
        assert not keys["test"] & keys["val"] and not (keys["test"] | keys["val"]) & train
    text_test = set(manifest.text.read_text().splitlines())
    text_val = set((manifest.root / "tasks" / "val" / "text.txt").read_text().splitlines())
    assert text_test and not text_test & text_val
    assert not (text_test | text_val) & {p for p, _ in pools["text"]}


def test_manifest_file(zoo) -> None:
    manifest, _ = zoo
    data = json.loads((manifest.root / "zoo.json").read_text())
    assert data["seed"] == 0 and data["quick"] is True
    assert [m["name"] for m in data["models"]] == NAMES
    assert {m["name"]: m["skill"] for m in data["models"]}["math"] == "math"
    assert all(len(m["sha256"]) == 64 for m in data["models"])
    assert all((manifest.root / t).is_file() for t in data["tasks"] + data["val_tasks"])
    assert "tasks/math.jsonl" in data["tasks"] and "tasks/text.txt" in data["tasks"]
    again = load_manifest(manifest.root)
    assert again.models == manifest.models and again.tasks == manifest.tasks


def test_tasks_load_with_evaluator(zoo) -> None:
    evaluate = pytest.importorskip("recipe_compiler.evaluate")
    manifest, _ = zoo
    kinds = {t.name: t.kind for t in evaluate.load_tasks(manifest.tasks)}
    assert kinds["text"] == "ppl"
    assert {kinds[name] for name in zskills.SKILLS} <= {"mc", "gen"}


def test_finetunes_change_decoder_layers_only(zoo) -> None:
    # Zoo v2 trains only what a recipe can take or merge: embeddings and final norm stay the
    # base's, so `merge(...)` and `take(...)` carry everything a fine-tune learnt.
    from safetensors.torch import load_file

    manifest, _ = zoo
    base = load_file(manifest.model_path("base") / "model.safetensors")
    assert QUICK.decoder_only and QUICK.replay > 0
    for name in FINETUNES:
        tuned = load_file(manifest.model_path(name) / "model.safetensors")
        assert tuned.keys() == base.keys()
        for key in ("model.embed_tokens.weight", "model.norm.weight"):
            assert torch.equal(tuned[key], base[key]), (name, key)
        assert any(not torch.equal(tuned[k], base[k]) for k in base if ".layers." in k), name
