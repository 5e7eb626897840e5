"""bench/real_choice.py's rule and its reading of the committed choice table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def choice(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("real_choice", "real_reach", "real_quality"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import real_choice

    return real_choice


def test_rule_prefers_accuracy_within_the_reference(choice) -> None:
    means = {"a": {"holdout": 40.0, "val_ppl": 50.0}, "b": {"holdout": 45.0, "val_ppl": 55.0},
             "c": {"holdout": 60.0, "val_ppl": 70.0}}
    assert choice.choose(means, 56.0)[0] == "b"  # c scores more but is above R
    assert choice.choose(means, 80.0)[0] == "c"


def test_rule_falls_back_to_the_lowest_perplexity(choice) -> None:
    means = {"a": {"holdout": 45.0, "val_ppl": 64.0}, "b": {"holdout": 41.0, "val_ppl": 59.7}}
    label, why = choice.choose(means, 56.3)
    assert label == "b" and "no variant is within R" in why


def test_reads_a_row_of_the_choice_table(choice, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text(
        "| ppl_weight 0.5 | 1 | 40.7 | 65.8 | 44.4 | 59.1 |\n"  # outside the block
        "<!-- real-choice:begin -->\n| variant | seed | a | b | c | d |\n|---|\n"
        "| ppl_weight 0.5, ppl_tolerance 2.5 | 1 | 35.3 | 65.3 | 42.7 | 59.9 |\n"
        "| ppl_weight 0.5 | 1 | 40.7 | 65.8 | 44.4 | 59.1 |\n<!-- real-choice:end -->\n")
    monkeypatch.setattr(choice, "ROOT", tmp_path)
    [row] = choice.winner_rows("choice#ppl_weight 0.5, ppl_tolerance 2.5:1", tmp_path)
    assert (row["seed"], row["holdout"], row["val_ppl"], row["test"]) == (1, 35.3, 65.3, 42.7)
    with pytest.raises(SystemExit, match="no such row"):
        choice.winner_rows("choice#ppl_weight 0.5, ppl_tolerance 2.5:7", tmp_path)
