"""bench/quality.py --quick: every baseline row runs end to end on the quick zoo (slow)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "quality.py"


def load_bench(monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("quality_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality_bench", bench)  # dataclasses look it up
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    return bench


def test_reuse_refuses_another_zoos_rows(tmp_path: Path, quick_zoo: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Zoos differ across CPUs (docs/zoo.md): rows measured on another draw must not be
    mixed into this one's table."""
    bench = load_bench(monkeypatch)
    earlier = tmp_path / "results.json"
    earlier.write_text(json.dumps({"base_sha256": "a2d3a67c" + "0" * 56, "rows": {}}))
    with pytest.raises(SystemExit, match="measured on a zoo whose base is a2d3a67c"):
        bench.main(["--quick", "--zoo", str(quick_zoo), "--reuse", str(earlier),
                    "--only", "nothing", "--work", str(tmp_path / "work")])


@pytest.mark.slow
def test_quick_bench_runs_every_row(tmp_path: Path, quick_zoo: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_bench(monkeypatch)
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
