"""Architecture definitions as data: one small JSON file per model family.

Consumes: the JSON files beside this module and a model's config.json.
Produces: `Architecture`, which says where a model keeps its layers, which config key
counts them, which per-layer config lists must be re-indexed when layers move, which
tensors `scale=` multiplies, and how tied embeddings are spelled.

Adding an architecture is adding a file; nothing else changes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Architecture:
    name: str  # the file stem, e.g. "llama"
    architectures: tuple[str, ...]  # config.json "architectures" values it covers
    layer_prefix: str  # e.g. "model.layers.{i}."
    num_layers_key: str  # e.g. "num_hidden_layers"
    per_layer_config: tuple[str, ...]  # config lists with one entry per layer
    scale_tensors: tuple[str, ...]  # layer-relative names (glob patterns) that `scale` multiplies
    tie_config_key: str
    tie_default: bool
    head_tensor: str
    embedding_tensor: str

    @property
    def layer_pattern(self) -> re.Pattern[str]:
        head, tail = self.layer_prefix.split("{i}")
        return re.compile(re.escape(head) + r"(\d+)" + re.escape(tail) + r"(.+)")

    def layer_tensor(self, index: int, suffix: str) -> str:
        return self.layer_prefix.format(i=index) + suffix

    def split(self, tensor: str) -> tuple[int, str] | None:
        """`model.layers.3.mlp.up_proj.weight` -> (3, "mlp.up_proj.weight")."""
        m = self.layer_pattern.fullmatch(tensor)
        return (int(m.group(1)), m.group(2)) if m else None

    def is_scaled(self, suffix: str) -> bool:
        return any(fnmatchcase(suffix, pat) for pat in self.scale_tensors)

    def ties_embeddings(self, config: dict) -> bool:
        return bool(config.get(self.tie_config_key, self.tie_default))


def _load(path: Path) -> Architecture:
    data = json.loads(path.read_text())
    tied = data["tied_embeddings"]
    return Architecture(
        name=path.stem,
        architectures=tuple(data["architectures"]),
        layer_prefix=data["layer_prefix"],
        num_layers_key=data["num_layers_key"],
        per_layer_config=tuple(data["per_layer_config"]),
        scale_tensors=tuple(data["scale_tensors"]),
        tie_config_key=tied["config_key"],
        tie_default=bool(tied["default"]),
        head_tensor=tied["head"],
        embedding_tensor=tied["embedding"],
    )


@lru_cache(maxsize=1)
def all_architectures() -> tuple[Architecture, ...]:
    return tuple(_load(p) for p in sorted(Path(__file__).parent.glob("*.json")))


def supported_names() -> tuple[str, ...]:
    return tuple(a for arch in all_architectures() for a in arch.architectures)


def find_architecture(config: dict) -> Architecture | None:
    names = config.get("architectures") or []
    for arch in all_architectures():
        if any(n in arch.architectures for n in names):
            return arch
    return None
