"""Models named by Hugging Face Hub id, as mergekit users write them.

Consumes: a model reference as written in a recipe (`"HuggingFaceTB/SmolLM2-135M"`, with an
optional `@revision`) and the recipe it is in.
Produces: the local directory to read (`locate`): the reference itself when it names a
local directory (paths always win), else the Hub snapshot in the Hugging Face cache, found
through `huggingface_hub` from the cache first. Not cached: downloaded (config, tokenizer and
safetensors files only, never pickles), or with `HF_HUB_OFFLINE=1` a `ModelError` naming
the id.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from recipe_compiler.language.recipe import Recipe, model_path
from recipe_compiler.language.source import first_line
from recipe_compiler.models.index import ModelError

# org/name, each part as the Hub allows; an optional @revision (branch, tag or commit)
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96})(?:@(?P<rev>[\w./-]{1,128}))?")
# what tailor reads from a model directory: never a pickle
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]


def hub_reference(recipe: Recipe, text: str) -> tuple[str, str | None] | None:
    """(repo id, revision) when `text` is a Hub id and no local directory has that name."""
    match = _HUB_ID.fullmatch(text)
    if match is None or model_path(recipe, text).exists() or text.startswith((".", "/", "~")):
        return None
    return match["repo"], match["rev"]


def hub_id(recipe: Recipe, text: str) -> str | None:
    """The repository id a reference names, without its revision; None for a local path."""
    ref = hub_reference(recipe, text)
    return ref[0] if ref else None


def locate(recipe: Recipe, text: str) -> Path:
    """The directory a model reference means (see the module docstring)."""
    ref = hub_reference(recipe, text)
    if ref is None:
        return model_path(recipe, text)
    return snapshot(*ref)


def snapshot(repo: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        raise ModelError(f"{repo}: a Hub id needs huggingface_hub (pip install "
                         "huggingface_hub)") from None
    name = f"{repo}@{revision}" if revision else repo
    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True,
                                      allow_patterns=ALLOW_PATTERNS))
    except LocalEntryNotFoundError:
        if _offline():
            raise ModelError(f"{name}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                             f"download it first (hf download {repo})") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{name}: {first_line(exc)}") from None
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(f"{name}: cannot download it ({first_line(exc)})") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
