"""`--ray`: a real two-node Ray cluster on loopback gives the local result, even when a worker
dies mid-generation. Skipped when Ray is not installed (`pip install .[ray]`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recipe_compiler.search import make_evaluator, prepare
from recipe_compiler.search.run import Search

from .test_evolve import SEARCH, run_search, summary, write_recipe

ray = pytest.importorskip("ray")

RAY = str(Path(sys.executable).with_name("ray"))  # the venv's CLI: workers import this package
OVERRIDES = {"generations": 1, "population": 4}


@pytest.fixture()
def space_file(tmp_path, quick_zoo):
    return write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a second node, one CPU each, on 127.0.0.1; stopped whatever happens."""
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                        *common], check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *common], check=True,
                       env=env, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _ray_search(space_file: Path, address: str, on_result=None):
    from recipe_compiler.search.ray_map import RayMap

    p = prepare(space_file, OVERRIDES)
    ev = make_evaluator(p)
    score = RayMap(ev, (str(space_file), OVERRIDES, "cpu", 1, True), address=address,
                   on_result=on_result)
    try:
        assert len(score.actors) == 2  # one per CPU of the cluster: one on each node
        search = Search(p.space, score, ev.fitness, warm=[{9, 10, 11}])
        pop, _ = search.run()
    finally:
        score.close()
    return summary(search, pop), score.stats


def test_a_ray_cluster_gives_the_local_result_even_when_a_worker_dies(space_file, cluster):
    local = summary(*run_search(prepare(space_file, OVERRIDES))[:2])

    result, stats = _ray_search(space_file, cluster)
    assert result == local
    assert stats["replaced"] == 0 and stats["evaluations"] > 0

    killed = []

    def kill_once(score_map, actor):
        # After the first result, kill the *other* actor, which is busy with a candidate.
        if not killed:
            victim = score_map.actors[1 - actor]
            killed.append(victim)
            ray.kill(victim, no_restart=True)

    result, stats = _ray_search(space_file, cluster, on_result=kill_once)
    assert killed and stats["replaced"] >= 1 and stats["requeued"] >= 1
    assert result == local


def test_an_unreachable_cluster_is_a_clear_error_fast():
    import socket
    import time

    from recipe_compiler.search.ray_map import _reachable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="nothing answers"):
        _reachable(f"127.0.0.1:{port}")
    assert time.perf_counter() - start < 6
