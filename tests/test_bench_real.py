"""bench/real_quality.py's guards: what it saved holds for the family's texts only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def rq(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "real_quality", raising=False)
    import real_quality

    return real_quality


def _family(root: Path, text: str) -> Path:
    (root / "tasks" / "val").mkdir(parents=True)
    (root / "tasks" / "val" / "text.txt").write_text(text)
    (root / "tasks" / "facts.jsonl").write_text('{"context": "a", "choices": ["b"], "gold": 0}\n')
    (root / "family.json").write_text(json.dumps({"sha256": {"base": "ab" * 32}}))
    return root


def test_tasks_digest_follows_every_split(rq, tmp_path: Path) -> None:
    family = _family(tmp_path / "f", "One line of English.\n")
    first = rq.tasks_sha(family)
    assert rq.tasks_sha(family) == first
    (family / "tasks" / "val" / "text.txt").write_text("One line of English.\nAnd one more.\n")
    assert rq.tasks_sha(family) != first


def test_reuse_baselines_refuses_rows_scored_on_other_texts(
        rq, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    family = _family(tmp_path / "f", "One line of English.\n")
    earlier = tmp_path / "baselines.json"
    for tasks, why in ((None, "other tasks or texts"), ("0" * 64, "other tasks or texts")):
        earlier.write_text(json.dumps({"family_sha256": {"base": "ab" * 32},
                                       "tasks_sha256": tasks, "rows": {}}))
        monkeypatch.setattr(sys, "argv", ["real_quality.py", "--family", str(family),
                                          "--work", str(tmp_path / "w"), "--reuse-baselines",
                                          str(earlier), "--baselines-only"])
        with pytest.raises(SystemExit, match=why):
            rq.main()
    earlier.write_text(json.dumps({"family_sha256": {"base": "cd" * 32},
                                   "tasks_sha256": rq.tasks_sha(family), "rows": {}}))
    with pytest.raises(SystemExit, match="other weights"):
        rq.main()


def test_earlier_task_scores_keep_tasks_and_rescore_the_text(rq, tmp_path: Path) -> None:
    other = tmp_path / "random-0-rung0-aaaa.json"  # another space: other task scores
    other.write_text(json.dumps({"g1": {"facts": 0.9, "text": 10.0}}))
    right = tmp_path / "random-0-rung0-bbbb.json"
    right.write_text(json.dumps({"g1": {"facts": 0.5, "text": 10.0},
                                 "g2": {"facts": 0.25, "text": 20.0}}))
    full = []
    earlier = rq.EarlierTaskScores(
        [other, right], {"facts"}, lambda r: full.append(r) or {"facts": 0.5, "text": 7.0},
        lambda r: {"text": 3.0})
    assert earlier.scores("g1", "r1") == {"facts": 0.5, "text": 7.0}  # checked in full
    assert earlier.scores("g2", "r2") == {"facts": 0.25, "text": 3.0}  # text scored again
    assert earlier.scores("g3", "r3") == {"facts": 0.5, "text": 7.0}  # not there: in full
    assert full == ["r1", "r3"] and earlier.reused == 1


def test_earlier_task_scores_refuse_a_cache_that_disagrees(rq, tmp_path: Path) -> None:
    cache = tmp_path / "random-0-rung0-aaaa.json"
    cache.write_text(json.dumps({"g1": {"facts": 0.9, "text": 10.0}}))
    earlier = rq.EarlierTaskScores([cache], {"facts"}, lambda r: {"facts": 0.5, "text": 7.0},
                                   lambda r: {"text": 3.0})
    with pytest.raises(SystemExit, match="same task scores"):
        earlier.scores("g1", "r1")
    with pytest.raises(SystemExit, match="no earlier"):
        rq.EarlierTaskScores([], {"facts"}, dict, dict)


def test_random_from_refuses_rows_scored_on_other_texts(
        rq, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    family = _family(tmp_path / "f", "One line of English.\n")
    baselines = tmp_path / "baselines.json"
    baselines.write_text(json.dumps({"family_sha256": {"base": "ab" * 32},
                                     "tasks_sha256": rq.tasks_sha(family), "rows": {}}))
    earlier = tmp_path / "results_real.json"
    earlier.write_text(json.dumps({"tasks_sha256": "0" * 64, "rows": {rq.RANDOM: []}}))
    monkeypatch.setattr(sys, "argv", [
        "real_quality.py", "--family", str(family), "--work", str(tmp_path / "w"),
        "--reuse-baselines", str(baselines), "--random-only", "--random-budget", "5",
        "--no-random", "--random-from", str(earlier)])
    with pytest.raises(SystemExit, match="other tasks or texts"):
        rq.main()


def test_the_shipped_real_family_recipe_is_the_measured_configuration(rq, tmp_path: Path) -> None:
    """recipes/real_family.tr says it is what docs/results.md measured: the bench's recipe
    with the settings its README command adds must search the same space the same way."""
    import argparse

    from recipe_compiler.language.parser import parse, parse_file

    a = argparse.Namespace(population=24, generations=3, local_search=96, setting=[
        "greedy_start=true", "greedy_sweep=true", 'max_memory="3GB"'])
    measured = parse(rq.search_recipe(tmp_path / "real-family", 0, a))
    shipped = parse_file(Path(__file__).resolve().parent.parent / "recipes" / "real_family.tr")

    def settings(recipe) -> dict:
        return {s.key: s.value for s in recipe.search if s.key != "tasks"}

    assert settings(shipped) == settings(measured)
    assert [m.name for m in shipped.models] == [m.name for m in measured.models]
    assert shipped.ops() == measured.ops()
