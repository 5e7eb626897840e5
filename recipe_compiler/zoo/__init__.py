"""A tiny trained model family (base + fine-tunes) and its held-out evaluation tasks.

Consumes an output directory and a seed; produces, deterministically::

    DIR/base, DIR/math, DIR/code, DIR/recall, DIR/strings   Hugging Face Llama checkpoints
    DIR/tasks/<skill>.jsonl, DIR/tasks/text.txt            held-out test tasks
    DIR/tasks/val/<skill>.jsonl, DIR/tasks/val/text.txt    validation split (for search)
    DIR/zoo.json                                           manifest with weight hashes

``base`` is trained on a uniform mixture of every skill plus English-like text; each fine-tune
starts from ``base`` and trains its decoder layers on its one skill, with part of every batch
replayed from the base's mixture (zoo v2), so it improves there and stays near the base
elsewhere: a family like real ones, whose layers and task vectors GPTailor can stitch and
merge. Library code never prints; progress goes to the optional ``on_progress`` callback.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from recipe_compiler.zoo import skills as _skills
from recipe_compiler.zoo.tokenizer import build_tokenizer
from recipe_compiler.zoo.train import FULL, QUICK, Replay, ZooSize, make_model, train

__all__ = ["ZooManifest", "ZooProgress", "FINETUNES", "build_zoo", "load_manifest", "sha256"]

# Fine-tune name -> the skill it trains on. Recipes refer to these directory names.
FINETUNES: dict[str, str] = {name: name for name in _skills.SKILLS}
BASE_SKILL = "mixture"
MANIFEST = "zoo.json"
# One thread per training process, always. Float reductions depend on how work is split
# across threads, so a fixed count is what makes weights bit-identical; and on a shared
# 2-core machine a 2-thread job stalls at every OpenMP barrier whenever another process holds
# a core (measured: ~6x slower per step than 1 thread), so parallelism comes from running
# fine-tunes in separate processes instead.
THREADS = 1


@dataclass(frozen=True)
class ZooProgress:
    """One progress report: ``phase`` is "data", "train" or "save"; loss only while training."""

    model: str
    step: int
    total: int
    loss: float | None
    phase: str


@dataclass(frozen=True)
class ZooManifest:
    """Mirror of ``zoo.json``. Paths are absolute here and relative to the zoo in the file."""

    root: Path
    seed: int
    quick: bool
    models: tuple[tuple[str, str, Path, str], ...]  # (name, skill, path, sha256)
    tasks: tuple[Path, ...]
    val_tasks: tuple[Path, ...]
    text: Path
    train_seconds: float

    def model_path(self, name: str) -> Path:
        for n, _, path, _ in self.models:
            if n == name:
                return path
        raise KeyError(name)


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_jsonl(path: Path, items: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")


def _write_tasks(out: Path, held: dict[str, dict[str, list[_skills.Pair]]], seed: int
                 ) -> tuple[list[Path], list[Path]]:
    tests, vals = [], []
    for name, skill in _skills.SKILLS.items():
        for split, sub, acc in (("test", "", tests), ("val", "val", vals)):
            rng = random.Random(f"tailor-zoo/{seed}/{name}/{split}/choices")
            items = [_skills.to_item(skill, pair, rng) for pair in held[name][split]]
            path = out / "tasks" / sub / f"{name}.jsonl"
            _write_jsonl(path, items)
            acc.append(path)
    for split, sub in (("test", ""), ("val", "val")):
        (out / "tasks" / sub / "text.txt").write_text(
            "".join(p + "\n" for p, _ in held["text"][split]))
    return tests, vals


def _save(model: torch.nn.Module, tokenizer: object, final: Path) -> str:
    # Write into a temporary sibling and rename, so a crash never leaves a half-written model
    # that looks complete.
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # save_pretrained draws its own tqdm bar on stderr; library code must stay silent.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]
        tokenizer.save_pretrained(tmp)  # type: ignore[attr-defined]
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    digest = sha256(tmp / "model.safetensors")
    os.replace(tmp, final)
    return digest


@dataclass(frozen=True)
class _Job:
    """Everything one fine-tune needs, picklable so it can run in a worker process."""

    name: str
    skill: str
    pools: dict[str, list[_skills.Pair]]  # the skill's, plus the base's for replay
    base_state: dict[str, torch.Tensor]
    size: ZooSize
    seed: int
    out: Path


_QUEUE: Any = None  # the worker's progress queue, set by _init_worker


def _init_worker(queue: Any) -> None:
    global _QUEUE
    _QUEUE = queue
    torch.set_num_threads(THREADS)


def _finetune(job: _Job, report: Callable[[ZooProgress], None] | None = None) -> str:
    """Fine-tune a copy of the base on one skill and save it; return the weights' sha256."""
    send = report or (lambda p: _QUEUE.put(p) if _QUEUE is not None else None)
    tokenizer = build_tokenizer()
    model = make_model(job.size, tokenizer, job.seed)
    model.load_state_dict(job.base_state)
    size = job.size
    replay = Replay((*_skills.SKILLS, "text"), size.replay) if size.replay > 0 else None
    train(model, job.pools, [job.skill], size, size.finetune_steps, size.finetune_lr,
          tokenizer, job.seed, lambda s, n, loss: send(ZooProgress(job.name, s, n, loss, "train")),
          replay=replay, layers=tuple(range(size.layers)) if size.decoder_only else None)
    send(ZooProgress(job.name, job.size.finetune_steps, job.size.finetune_steps, None, "save"))
    return _save(model, tokenizer, job.out)


def _run_jobs(jobs: list[_Job], workers: int, report: Callable[[ZooProgress], None]
              ) -> list[str]:
    """Run fine-tunes, in ``workers`` processes when > 1; results do not depend on ``workers``.

    Every job trains single-threaded, so running two at once uses both cores without the
    thread-barrier stalls a 2-thread job suffers on a busy machine, and a job's arithmetic is
    identical whether it runs here or in a worker.
    """
    if workers <= 1:
        return [_finetune(job, report) for job in jobs]
    ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
    queue = ctx.Queue()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(queue,)) as pool:
        futures = [pool.submit(_finetune, job) for job in jobs]
        while not all(f.done() for f in futures):
            try:
                report(queue.get(timeout=0.1))
            except Empty:
                pass
        digests = [f.result() for f in futures]  # re-raises a worker's exception here
    while True:  # flush reports that arrived after the last poll
        try:
            report(queue.get_nowait())
        except Empty:
            break
    return digests


def build_zoo(out_dir: Path, *, seed: int = 0, quick: bool = False,
              on_progress: Callable[[ZooProgress], None] | None = None,
              workers: int | None = None) -> ZooManifest:
    """Train the zoo into ``out_dir`` and return its manifest.

    ``out_dir`` may exist but must not already hold a zoo (``zoo.json``, ``tasks`` or a model
    directory); the caller decides whether to delete an old one. Same seed and ``quick`` give
    bit-identical weights on the same machine, whatever ``workers`` is (default: 2 processes
    for the fine-tunes, 1 when ``quick``, where starting processes would cost more than it saves).
    Workers are started with ``spawn``, which re-imports the calling script: a script that
    calls this with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
    """
    out_dir = Path(out_dir).resolve()
    names = ["base", *FINETUNES]
    clash = [n for n in [MANIFEST, "tasks", *names] if (out_dir / n).exists()]
    if clash:
        raise FileExistsError(f"{out_dir} already holds a zoo ({', '.join(clash)}); remove it")
    out_dir.mkdir(parents=True, exist_ok=True)
    size: ZooSize = QUICK if quick else FULL
    if workers is None:
        workers = 1 if quick else min(2, os.cpu_count() or 1)

    def report(p: ZooProgress) -> None:
        if on_progress is not None:
            on_progress(p)

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    try:
        report(ZooProgress("data", 0, 1, None, "data"))
        tokenizer = build_tokenizer()
        held = _skills.heldout(seed, size.n_test, size.n_val)
        pools = _skills.training_pools(seed, size.pool_size, held)
        tests, vals = _write_tasks(out_dir, held, seed)
        report(ZooProgress("data", 1, 1, None, "data"))

        base = make_model(size, tokenizer, seed)
        train(base, pools, [*_skills.SKILLS, "text"], size, size.base_steps, size.base_lr,
              tokenizer, seed,
              lambda s, n, loss: report(ZooProgress("base", s, n, loss, "train")))
        report(ZooProgress("base", size.base_steps, size.base_steps, None, "save"))
        models = [("base", BASE_SKILL, out_dir / "base", _save(base, tokenizer, out_dir / "base"))]
        state = {k: v.detach().clone() for k, v in base.state_dict().items()}
        jobs = [_Job(name, skill, pools if size.replay > 0 else {skill: pools[skill]}, state,
                     size, seed, out_dir / name) for name, skill in FINETUNES.items()]
        digests = _run_jobs(jobs, workers, report)
        models += [(j.name, j.skill, j.out, d) for j, d in zip(jobs, digests)]
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(prev_threads)

    manifest = ZooManifest(root=out_dir, seed=seed, quick=quick, models=tuple(models),
                           tasks=(*tests, out_dir / "tasks" / "text.txt"),
                           val_tasks=(*vals, out_dir / "tasks" / "val" / "text.txt"),
                           text=out_dir / "tasks" / "text.txt", train_seconds=seconds)
    (out_dir / MANIFEST).write_text(json.dumps(_to_json(manifest), indent=2) + "\n")
    return manifest


def _to_json(m: ZooManifest) -> dict[str, object]:
    rel = lambda p: p.relative_to(m.root).as_posix()  # noqa: E731 - tiny local helper
    return {
        "format": "tailor-zoo/1",
        "seed": m.seed,
        "quick": m.quick,
        "models": [{"name": n, "skill": s, "path": rel(p), "sha256": h}
                   for n, s, p, h in m.models],
        "tasks": [rel(p) for p in m.tasks],
        "val_tasks": [rel(p) for p in m.val_tasks],
        "text": rel(m.text),
        "train_seconds": round(m.train_seconds, 2),
    }


def load_manifest(zoo_dir: Path) -> ZooManifest:
    """Read ``zoo_dir/zoo.json`` back into a ``ZooManifest`` with absolute paths."""
    root = Path(zoo_dir).resolve()
    data = json.loads((root / MANIFEST).read_text())
    return ZooManifest(
        root=root, seed=data["seed"], quick=data["quick"],
        models=tuple((d["name"], d["skill"], root / d["path"], d["sha256"])
                     for d in data["models"]),
        tasks=tuple(root / p for p in data["tasks"]),
        val_tasks=tuple(root / p for p in data["val_tasks"]),
        text=root / data["text"], train_seconds=data["train_seconds"],
    )
