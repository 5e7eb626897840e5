"""Open a model for scoring: a checkpoint directory or a recipe, validated before loading.

Consumes: a path — a Hugging Face checkpoint directory, or a closed recipe (`.tr`) that is
assembled in memory — a device and a compute dtype.
Produces: `Opened` (the torch model in eval mode, its tokenizer, the dtype used), or raises
`ModelError` / `RecipeError` with a one-line reason.

Every command that runs a model (`eval`, `prune`) comes through here, so a directory is
read only after `index.load_model` has validated its config.json, safetensors headers and
index, the same checks `tailorc check` makes: a pickle-only directory is refused before
anything is loaded, and the index cannot point outside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipe_compiler.language.source import first_line
from recipe_compiler.models.index import ModelError, ModelInfo, load_model

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class Opened:
    model: Any
    tokenizer: Any
    dtype: str
    info: ModelInfo  # the checkpoint's headers (for a recipe: its base model's)


def default_dtype(device: str) -> str:
    """float32 on a CPU (16-bit matmuls are slow on most and change scores); bf16 on a GPU.
    The same on every CPU, so that a seeded search finds the same recipe on any machine:
    where bfloat16 would pay, `bfloat16_hint` says so instead."""
    return "float32" if device == "cpu" else "bfloat16"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (e.g. `amx_bf16`); empty where the
    file is missing or unreadable."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def bfloat16_hint(device: str, dtype: str | None, info: ModelInfo,
                  cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """A line suggesting `--dtype bfloat16`, when no dtype was asked for, the model is
    stored in bfloat16 (scoring in it loses nothing the checkpoint holds) and the CPU
    multiplies bfloat16 in hardware (Intel AMX, `amx_bf16` in /proc/cpuinfo: see
    `bench/layer_dtype.py` for one layer, docs/results.md for the real family's search,
    2.1x); None otherwise."""
    if device != "cpu" or dtype is not None:
        return None
    if not any(t.dtype == "BF16" for t in info.tensors.values()):
        return None
    if "amx_bf16" not in cpu_flags(cpuinfo):
        return None
    return ("note: this CPU multiplies bfloat16 in hardware (AMX) and the models are stored "
            "in it: --dtype bfloat16 (or dtype = \"bfloat16\" in the search block) scores "
            "about twice as fast; scores then differ a little from float32's")


def open_model(path: Path, *, device: str, dtype: str | None = None) -> Opened:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or default_dtype(device)
    torch_dtype = getattr(torch, dtype)
    if path.suffix == ".tr":
        from recipe_compiler.execute.assemble import assemble, load_recipe

        recipe, models = load_recipe(path)
        info = models[recipe.base_name or ""]
        model = assemble(recipe, models, device="cpu")
    else:
        info = load_model(path.name or str(path), path)  # refuses pickles, checks the index
        try:
            model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True,
                                                         dtype=torch_dtype)
        except Exception as exc:  # noqa: BLE001 - the directory passed tailor's checks;
            # what transformers still refuses (a config detail no check covers) is the
            # checkpoint's problem, so it is a one-line user error naming it, not a crash
            raise ModelError(f"{path}: transformers cannot load it ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
    model = model.to(device=device, dtype=torch_dtype).eval()
    return Opened(model, open_tokenizer(info.path), dtype, info)


def open_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load a tokenizer ({first_line(exc)})") from None



def display_names(paths: list[Path]) -> list[str]:
    """One distinct row label per model: its name, else the path as given, else numbered."""
    short = [p.stem if p.suffix == ".tr" else (p.name or str(p)) for p in paths]
    names = [s if short.count(s) == 1 else str(p) for s, p in zip(short, paths)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if names.count(name) == 1 else f"{name} #{seen[name]}")
    return unique
