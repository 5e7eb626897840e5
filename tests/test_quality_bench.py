"""bench/quality.py --quick: every baseline row runs end to end on the quick zoo (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "quality.py"


@pytest.mark.slow
def test_quick_bench_runs_every_row(tmp_path: Path, quick_zoo: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("quality_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality_bench", bench)  # dataclasses look it up
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    assert bench.main(["--quick", "--zoo", str(quick_zoo), "--seeds", "0", "1",
                       "--work", str(tmp_path)]) == 0
    raw = json.loads((tmp_path / "results.json").read_text())
    rows = raw["rows"]
    pruned = {f"{m} on {n}" for m in bench.METHODS for n in (*bench.MODELS, "merge")}
    assert pruned | {bench.MERGE, bench.RANDOM, *bench.SEARCHES} <= set(rows)
    for label in (bench.RANDOM, *bench.SEARCHES):
        assert [r["seed"] for r in rows[label]] == [0, 1]
    # random search spends what the search spent, seed by seed
    for ga, rnd in zip(rows[bench.SEARCH], rows[bench.RANDOM]):
        assert rnd["evaluations"] >= ga["evaluations"]
    assert all(len(r["drops"]) == 3 for m in pruned for r in rows[m])
    # the curve: one layer removed, by each pruner and by the reported configuration
    assert set(raw["curve"]) == {"block-influence", "sleb", "GPTailor"}
    assert all(set(points) == {"0", "1"} for points in raw["curve"].values())
