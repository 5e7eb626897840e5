"""A real model family: SmolLM2-135M-Instruct and three short fine-tunes on distinct skills.

Consumes: the dequantized base checkpoint (`real.smollm2_checkpoint`), a directory and a
seed. Produces, deterministically (one torch thread, fixed seeds)::

    DIR/base                      the base checkpoint (hard links into the cache, else a copy)
    DIR/facts, DIR/lexicon, DIR/arith   fine-tunes (see `real_skills` for the skills)
    DIR/tasks/<skill>.jsonl, DIR/tasks/text.txt          test split (reports)
    DIR/tasks/val/<skill>.jsonl, DIR/tasks/val/text.txt  validation split (search)
    DIR/family.json               manifest: seed, training settings, seconds, sha256 of weights

Each part is written into a hidden temporary directory beside it and renamed into place, and
carries a stamp of what it was made from (settings, seed, a digest of its data), so a killed
build leaves only whole parts and the next build reuses every part whose stamp still matches
(a second build takes seconds).

Keeping the fine-tunes in the base's basin, as real ones are (a family whose merges keep
each skill): only the decoder layers and the final norm train (the tied embedding and head
stay the base's, so the vocabulary's geometry is untouched), for a few dozen AdamW steps at a
low learning rate, and every step also pulls the fine-tune towards the base's own
next-token distribution on four lines of English (`data/english_train.txt`, disjoint from
the perplexity samples): the base's behaviour replayed, since its data is not at hand.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Empty

from recipe_compiler.zoo import real
from recipe_compiler.zoo.real_skills import SKILLS, english, english_lines, make_skills

__all__ = ["FAMILY", "MEMBERS", "PART_NAMES", "FamilyProgress", "FineTune",
           "build_real_family", "family_tasks", "score_family"]

STAMP = "tailor-family.json"
MANIFEST = "family.json"


@dataclass(frozen=True)
class FineTune:
    """How one fine-tune is trained: `steps` AdamW steps of `skill_rows` rows of its skill
    (`per_row` examples joined by newlines) and `text_rows` English lines, plus `kl_rows`
    English lines on which the fine-tune is pulled towards the base's own next-token
    distribution (KL(base || fine-tune), times `kl_weight`): the base's behaviour replayed,
    since its training data is not at hand."""

    name: str
    steps: int = 24
    lr: float = 5e-4  # peak; decays linearly to zero
    skill_rows: int = 8
    per_row: int = 4
    text_rows: int = 2
    kl_rows: int = 0
    kl_weight: float = 1.0


# Family v3. 40 steps of 48 examples (60 for arith: digits are harder): each of a skill's 250
# examples about 8 times, at 1.5e-4, with the pull towards the base on 4 English lines a
# step. v2 (3e-4, and 3 English lines trained on as text instead of the pull) taught the
# skills as well but moved each fine-tune far from the base: the task-arithmetic merge of
# `facts` and `lexicon` (weight 1 each) kept 42 of facts' 65 and took the English perplexity
# from 28 to 82 (validation); v3's keeps 73 of 87 at perplexity 28 (docs/zoo.md, v2 and v3).
FAMILY: tuple[FineTune, ...] = (
    FineTune("facts", steps=40, lr=1.5e-4, per_row=6, text_rows=0, kl_rows=4),
    FineTune("lexicon", steps=40, lr=1.5e-4, per_row=6, text_rows=0, kl_rows=4),
    FineTune("arith", steps=60, lr=1.5e-4, per_row=6, text_rows=0, kl_rows=4),
)
MEMBERS = ("base", *(f.name for f in FAMILY))
PART_NAMES = (*MEMBERS, "tasks", MANIFEST)  # all a family directory holds (and dot files)
TASK_NAMES = (*SKILLS, "text")


@dataclass(frozen=True)
class FamilyProgress:
    """One report: ``phase`` is "load", "train", "save" or "done"; loss only while training."""

    model: str
    step: int
    total: int
    loss: float | None = None


def build_real_family(out: Path, *, seed: int = 0, cache_dir: Path | None = None,
                      on_progress: Callable[[FamilyProgress], None] | None = None,
                      workers: int = 2) -> dict:
    """Make (or complete) the family in `out`; returns the manifest written to
    ``out/family.json``. Parts already there with a matching stamp are kept as they are.

    Fine-tunes train in `workers` processes, one torch thread each (the weights do not
    depend on `workers`). Workers are started with ``spawn``, which re-imports the calling
    script: a script calling this needs the ``if __name__ == "__main__":`` guard."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    report = on_progress or (lambda p: None)
    base_src = real.smollm2_checkpoint(cache_dir)
    skills = make_skills(seed)
    base_stamp = json.loads((base_src / real.SOURCE_FILE).read_text(encoding="utf-8"))
    _ensure(out / "base", {"kind": "base", "source": base_stamp},
            lambda tmp: _link_tree(base_src, tmp))
    _ensure(out / "tasks", {"kind": "tasks", "seed": seed, "data": _data_digest(
        [(s.val, s.test) for s in skills.values()] + [english("val"), english("test")])},
            lambda tmp: _write_tasks(tmp, skills))
    jobs = []
    for tune in FAMILY:
        stamp = {"kind": "finetune", "seed": seed, "source": base_stamp, **asdict(tune),
                 "data": _data_digest([skills[tune.name].train, english("train")])}
        if _read_stamp(out / tune.name) != stamp:
            jobs.append((out, tune, stamp, skills[tune.name].train, seed))
    seconds = dict(_run_jobs(jobs, workers, report))
    return _write_manifest(out, seed, seconds)


def _data_digest(data) -> str:
    """What a part was made from, so that changed texts or items rebuild just that part."""
    return hashlib.sha256(repr(data).encode("utf-8")).hexdigest()[:16]


def _remove_leftovers(out: Path) -> None:
    """Staging directories of a killed build (a kill by signal skips their clean-up).
    One build at a time per directory: a concurrent build's staging would go too."""
    for part in PART_NAMES:
        for tmp in out.glob(f".{part}.*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)


def family_tasks(out: Path, split: str = "test") -> list[Path]:
    """The task files of a built family, skills first, then the English text."""
    folder = Path(out) / "tasks" / ("val" if split == "val" else "")
    return [folder / f"{name}.jsonl" for name in SKILLS] + [folder / "text.txt"]


# --- cached parts ---------------------------------------------------------------------


def _ensure(target: Path, stamp: dict, make: Callable[[Path], None]) -> bool:
    """Make the family part `target` unless it holds `stamp`; True if it was made."""
    return real.ensure_cached(target, stamp, make, STAMP)


def _read_stamp(path: Path) -> dict | None:
    return real.read_stamp(path, STAMP)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link the files of `src` into `dst` (the cache is only ever replaced by a rename,
    never edited in place, so sharing inodes is safe); copy where links are not possible."""
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name == real.SOURCE_FILE:
            continue
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)


def _write_tasks(tmp: Path, skills: dict) -> None:
    (tmp / "val").mkdir()
    for split, folder in (("test", tmp), ("val", tmp / "val")):
        for name in SKILLS:
            items = getattr(skills[name], split)
            lines = [json.dumps({"context": i.context, "choices": list(i.choices),
                                 "gold": i.gold}) for i in items]
            (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (folder / "text.txt").write_text(english(split), encoding="utf-8")


def _write_manifest(out: Path, seed: int, seconds: dict[str, float]) -> dict:
    old = _read_json(out / MANIFEST) or {}
    manifest = {
        "seed": seed,
        "finetunes": {t.name: asdict(t) for t in FAMILY},
        "train_seconds": {**old.get("train_seconds", {}), **seconds},
        "built": sorted(seconds),  # the fine-tunes trained by this call (others were cached)
        "sha256": {m: _digest(out / m) for m in MEMBERS},
        "tasks": {"test": [str(p.relative_to(out)) for p in family_tasks(out, "test")],
                  "val": [str(p.relative_to(out)) for p in family_tasks(out, "val")]},
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return manifest


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _digest(model: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(model.glob("*.safetensors")):
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# --- training ---------------------------------------------------------------------------

_QUEUE = None  # a worker process's progress queue


def _run_jobs(jobs: list[tuple], workers: int, report: Callable[[FamilyProgress], None]
              ) -> list[tuple[str, float]]:
    """(name, seconds) of each fine-tune job, run here or in `workers` spawned processes."""
    if workers <= 1 or len(jobs) <= 1:
        return [_job(*job, report) for job in jobs]
    ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
    queue = ctx.Queue()
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx,
                             initializer=_init_worker, initargs=(queue,)) as pool:
        futures = [pool.submit(_job, *job) for job in jobs]
        while not all(f.done() for f in futures):
            try:
                report(queue.get(timeout=0.2))
            except Empty:
                pass
        results = [f.result() for f in futures]  # a worker's exception is raised here
    while True:
        try:
            report(queue.get_nowait())
        except Empty:
            return results


def _init_worker(queue) -> None:
    global _QUEUE
    _QUEUE = queue


def _job(out: Path, tune: FineTune, stamp: dict, texts: tuple, seed: int,
         report: Callable[[FamilyProgress], None] | None = None) -> tuple[str, float]:
    started = time.perf_counter()
    send = report or _QUEUE.put
    _ensure(out / tune.name, stamp, lambda tmp: _finetune(out / "base", tmp, tune, texts,
                                                           seed, send))
    return tune.name, round(time.perf_counter() - started, 1)


def _finetune(base: Path, out: Path, tune: FineTune, texts: tuple, seed: int,
              report: Callable[[FamilyProgress], None]) -> None:
    """Train `base` on `tune`'s rows and save it to `out` in the base's dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical weights need a fixed thread count
    hf_logging.disable_progress_bar()
    try:
        report(FamilyProgress(tune.name, 0, tune.steps))
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True)
        dtype = model.dtype
        model.float().train()
        model.get_input_embeddings().weight.requires_grad_(False)  # tied: the head too
        params = [p for p in model.parameters() if p.requires_grad]
        reference = None
        if tune.kl_rows:
            reference = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True)
            reference.float().eval().requires_grad_(False)
        optimizer = torch.optim.AdamW(params, lr=tune.lr, weight_decay=0.0)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / tune.steps)
        for step, (rows, replay) in enumerate(_rows(tune, texts, seed)):
            batch = _batch(tokenizer, rows)
            loss = model(**batch).loss
            if replay:
                loss = loss + tune.kl_weight * _kl_to(reference, model, tokenizer, replay)
            loss.backward()
            optimizer.step()
            decay.step()
            optimizer.zero_grad(set_to_none=True)
            report(FamilyProgress(tune.name, step + 1, tune.steps, loss.item()))
        report(FamilyProgress(tune.name, tune.steps, tune.steps))
        model.eval().to(dtype).save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        torch.set_num_threads(threads)


def _rows(tune: FineTune, texts: tuple[tuple[str, str], ...], seed: int):
    """`tune.steps` pairs (rows, replay). Each row is a list of (prompt, answer) pairs: skill
    examples packed `per_row` to a row, cycled in a seeded order, then `text_rows` English
    lines (all answer: their every token is trained on); `replay` is `kl_rows` English
    lines for the pull towards the base."""
    rng = random.Random(f"{seed}-{tune.name}")
    skill = _cycle(rng, list(texts))
    prose = _cycle(rng, [("", line) for line in english_lines("train")])
    for _ in range(tune.steps):
        rows = [[next(skill) for _ in range(tune.per_row)] for _ in range(tune.skill_rows)]
        rows += [[next(prose)] for _ in range(tune.text_rows)]
        yield rows, [next(prose)[1] for _ in range(tune.kl_rows)]


def _kl_to(reference, model, tokenizer, lines: list[str]):
    """Mean over the tokens of `lines` of KL(reference || model) between next-token
    distributions: zero while the fine-tune predicts English as the base does."""
    import torch

    enc = tokenizer(lines, return_tensors="pt", padding=True)
    with torch.no_grad():
        target = reference(**enc).logits.log_softmax(-1)
    logp = model(**enc).logits.log_softmax(-1)
    kl = (target.exp() * (target - logp)).sum(-1)  # (B, T)
    mask = enc["attention_mask"].to(kl.dtype)
    return (kl * mask).sum() / mask.sum()


def _cycle(rng: random.Random, items: list):
    while True:
        order = items[:]
        rng.shuffle(order)
        yield from order


def _batch(tokenizer, rows: list[list[tuple[str, str]]]) -> dict:
    """Right-padded ids of each row's pairs joined by newlines; only answer tokens are
    targets (label -100 elsewhere, padding included)."""
    import torch

    texts, spans = [], []
    for row in rows:
        text, scored = "", []
        for prompt, answer in row:
            text += ("\n" if text else "") + prompt
            scored.append((len(text), len(text) + len(answer)))
            text += answer
        texts.append(text)
        spans.append(scored)
    enc = tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=True)
    keep = torch.zeros_like(enc["input_ids"], dtype=torch.bool)  # (B, T)
    for b, scored in enumerate(spans):
        for t, (start, end) in enumerate(enc["offset_mapping"][b].tolist()):
            keep[b, t] = end > start and any(lo <= start < hi for lo, hi in scored)
    keep &= enc["attention_mask"].bool()
    labels = enc["input_ids"].masked_fill(~keep, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": labels}


# --- scores -----------------------------------------------------------------------------


def score_family(out: Path, split: str = "test", models: tuple[str, ...] = MEMBERS,
                 threads: int | None = None) -> dict[str, dict[str, float]]:
    """Each member's primary score on each of the split's tasks, as `tailorc eval` computes
    it in float32 on the CPU: accuracy in percent for the skills, perplexity for ``text``."""
    import torch

    from recipe_compiler.evaluate import evaluate, load_tasks
    from recipe_compiler.evaluate.checkpoint import open_model

    tasks = load_tasks(family_tasks(out, split))
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        table = {}
        for name in models:
            opened = open_model(Path(out) / name, device="cpu", dtype="float32")
            scores = evaluate(opened.model, opened.tokenizer, tasks)
            table[name] = {t: (s.primary if s.kind == "ppl" else 100 * s.primary)
                           for t, s in scores.items()}
        return table
    finally:
        torch.set_num_threads(saved)
