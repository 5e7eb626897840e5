"""Score a generation on a Ray cluster (`tailorc evolve --ray auto|ADDRESS`).

Consumes: recipes (IR objects, pickled by Ray: a few KB each) and a rung, exactly like
`LocalMap`. Produces: one per-task score dict per recipe, in the order given.

Each worker is a Ray actor that loads the source models once, in `__init__`, and keeps them
with its `Evaluator` (merged-layer, activation and score caches) for the whole run; the
driver never sends tensors. Candidates are dispatched one at a time as actors become free
(`ray.wait`), and a candidate goes preferably to the actor that already evaluated a recipe
with the same first layers, whose activation cache then holds that prefix. An actor that dies
is replaced (the new one loads the models again) and its candidate is queued again. Scores
depend only on the recipe, so the result is the same with any number of workers and any
assignment of candidates to them, and the same as a local run with the same seed.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recipe_compiler.language.recipe import Recipe

log = logging.getLogger(__name__)

# How many leading layer keys define "the same prefix" for routing. The activation cache is
# keyed by the whole prefix, so a shared start is where reuse happens; a few layers already
# separate unrelated candidates while keeping a mutated child next to its parent.
PREFIX_LAYERS = 4
# A candidate whose actor died this many times is not retried: it is probably what kills it.
MAX_ATTEMPTS = 3


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on: ray.init itself retries for minutes."""
    host, _, port = address.rpartition(":")
    if address in ("auto", "local") or not port.isdigit() or address.startswith("ray://"):
        return
    import socket

    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc})") from None


def _reason(exc: BaseException) -> str:
    """One line for a dead actor: Ray's message ends with the worker's own exception."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class _Worker:
    """The actor body: one `Evaluator`, built from the recipe file, kept across generations."""

    def __init__(self, recipe_path: str, overrides: dict, device: str, threads: int,
                 caches: bool) -> None:
        import torch

        from recipe_compiler.search.session import make_evaluator, prepare

        # One actor per CPU slot: more threads would fight the other actors on the node.
        torch.set_num_threads(threads)
        try:
            self.evaluator = make_evaluator(prepare(Path(recipe_path), overrides),
                                            device=device, caches=caches)
        except Exception as exc:  # noqa: BLE001 - see below
            # RecipeError and EvolveError do not survive Ray's exception pickling (the driver
            # would get UnserializableException); a RuntimeError with the message does.
            raise RuntimeError(f"a Ray worker could not load the recipe: {exc}") from None

    def scores(self, recipe: Recipe, rung: int) -> dict[str, float]:
        return self.evaluator.scores(recipe, rung)

    def pid(self) -> int:
        import os

        return os.getpid()


class RayMap:
    """`(recipes, rung) -> scores` on Ray actors; see the module docstring. `close()` kills
    the actors (and disconnects from Ray if this object connected)."""

    def __init__(self, evaluator: Any, init_args: tuple, *, address: str | None = "auto",
                 workers: int | None = None, prefix_layers: int = PREFIX_LAYERS,
                 on_result: Callable[[RayMap, int], None] | None = None) -> None:
        from recipe_compiler.search.session import EvolveError

        try:
            import ray
        except ImportError:
            raise EvolveError("--ray needs Ray: pip install '.[ray]' (or 'ray>=2.9')") from None
        self.ray = ray
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            # address None starts a private single-machine Ray; "auto" joins a running one.
            try:
                _reachable(address)
                ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise EvolveError(f"cannot reach the Ray cluster at {address}: {exc}") from None
        recipe_path, overrides, device, threads, caches = init_args
        # Workers do not run in the driver's directory: a relative recipe path would not resolve.
        self.init_args = (str(Path(recipe_path).resolve()), overrides, device, threads, caches)
        gpu = str(device).startswith("cuda")
        self.options = {"num_cpus": threads, "num_gpus": 1 if gpu else 0}
        if not workers:
            have = ray.cluster_resources().get("GPU" if gpu else "CPU", 0)
            workers = max(1, int(have // (1 if gpu else threads)))
        self.remote_cls = ray.remote(_Worker)
        self.actors = [self._start() for _ in range(workers)]
        self.evaluator = evaluator  # on the driver: computes layer keys for routing only
        self.prefix_layers = prefix_layers
        self.on_result = on_result
        # prefix -> index of the actor whose caches hold it
        self.owner: dict[tuple, int] = {}
        self.stats = {"evaluations": 0, "affine": 0, "replaced": 0, "requeued": 0}

    def _start(self):
        return self.remote_cls.options(**self.options).remote(*self.init_args)

    def _prefix(self, recipe: Recipe) -> tuple:
        plan = self.evaluator.layer_plan(recipe)
        return tuple(key for key, _, _ in plan[: self.prefix_layers])

    def _pick(self, pending: deque, actor: int) -> int:
        """Position in `pending` of the job for a free actor: one whose prefix it holds, else
        one whose prefix nobody holds yet (it becomes the owner), else the oldest (an idle
        actor is worse than a cold cache)."""
        unowned = None
        for pos, (_, prefix, _) in enumerate(pending):
            owner = self.owner.get(prefix)
            if owner == actor:
                self.stats["affine"] += 1
                return pos
            if owner is None and unowned is None:
                unowned = pos
        return unowned if unowned is not None else 0

    def __call__(self, recipes: list[Recipe], rung: int) -> list[dict[str, float]]:
        ray = self.ray
        results: list[dict[str, float] | None] = [None] * len(recipes)
        pending = deque((i, self._prefix(r), 0) for i, r in enumerate(recipes))
        running: dict[Any, tuple[int, tuple[int, tuple, int]]] = {}  # future -> (actor, job)
        idle = list(range(len(self.actors)))

        while pending or running:
            while pending and idle:
                actor = idle.pop(0)
                pos = self._pick(pending, actor)
                job = pending[pos]
                del pending[pos]
                index, prefix, _ = job
                self.owner.setdefault(prefix, actor)
                future = self.actors[actor].scores.remote(recipes[index], rung)
                running[future] = (actor, job)
            done, _ = ray.wait(list(running), num_returns=1)
            future = done[0]
            actor, (index, prefix, attempts) = running.pop(future)
            try:
                results[index] = ray.get(future)
            except ray.exceptions.RayActorError as exc:
                self._replace(actor, exc)
                if attempts + 1 >= MAX_ATTEMPTS:
                    from recipe_compiler.search.session import EvolveError

                    raise EvolveError(f"candidate {index} lost its Ray worker {MAX_ATTEMPTS} "
                                      f"times; last error: {_reason(exc)}") from None
                self.stats["requeued"] += 1
                pending.appendleft((index, prefix, attempts + 1))
                # The actor's other in-flight work (none: one job per actor) is gone with it.
                idle.append(actor)
                continue
            self.stats["evaluations"] += 1
            idle.append(actor)
            if self.on_result is not None:
                self.on_result(self, actor)
        return results  # type: ignore[return-value]

    def _replace(self, actor: int, exc: BaseException) -> None:
        log.warning("tailorc: warning: a Ray worker died (%s); starting another", _reason(exc))
        self.stats["replaced"] += 1
        # Its caches died with it: let any actor claim its prefixes again.
        self.owner = {p: a for p, a in self.owner.items() if a != actor}
        try:
            self.ray.kill(self.actors[actor], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.actors[actor] = self._start()

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone; closing must not fail
                pass
        self.actors = []
        if self.owns_ray:
            self.ray.shutdown()
