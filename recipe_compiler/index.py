"""What is inside each model directory, read from config.json and safetensors headers only.

Consumes: Hugging Face checkpoint directories.
Produces: `ModelInfo` (architecture, layer count, every tensor's name, dtype, shape, file and
byte range), or `ModelError` with a one-line reason naming the file.

No weight is read and nothing is unpickled: a directory holding only `*.bin`/`*.pt`
checkpoints is refused. Headers are validated (sizes, offsets, truncation) so that the
executor can trust them.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .arch import Architecture, find_architecture, supported_names

# safetensors dtype -> bytes per element
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
RECIPE_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
MAX_HEADER = 100 * 1024 * 1024


class ModelError(Exception):
    """A model directory that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype, e.g. "BF16"
    shape: tuple[int, ...]
    file: str  # absolute path of the shard
    begin: int  # absolute byte offsets in that file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    arch: Architecture
    config: dict = field(compare=False, repr=False)
    num_layers: int
    tensors: dict[str, TensorInfo] = field(compare=False, repr=False)
    files: tuple[str, ...]
    # per layer: layer-relative name -> tensor, e.g. {"mlp.up_proj.weight": ...}
    layers: tuple[dict[str, TensorInfo], ...] = field(compare=False, repr=False)

    def layer(self, index: int) -> dict[str, TensorInfo]:
        return self.layers[index]

    def non_layer(self) -> dict[str, TensorInfo]:
        return {n: t for n, t in self.tensors.items() if self.arch.split(n) is None}

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", self.arch.name))

    def param_count(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    def layer_param_count(self, index: int) -> int:
        return sum(t.numel for t in self.layer(index).values())


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors file's header."""
    size = _file_size(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ModelError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER or 8 + n > size:
                raise ModelError(f"{path}: corrupt safetensors header (claims {n} bytes; "
                                 f"file has {size}); the file may be truncated")
            header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{path}: corrupt safetensors header ({exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    data_start, data_size = 8 + n, size - 8 - n
    tensors = {name: _tensor_info(path, name, entry, data_start, data_size)
               for name, entry in header.items()}
    _check_no_overlap(path, tensors)
    return tensors


def _tensor_info(path: Path, name: str, entry: object, start: int, size: int) -> TensorInfo:
    bad = f"{path}: corrupt safetensors header: tensor '{name}'"
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPE_SIZES:
        raise ModelError(f"{bad} has no known dtype")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ModelError(f"{bad} has a malformed shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and o >= 0 for o in offsets) and offsets[0] <= offsets[1]):
        raise ModelError(f"{bad} has malformed data_offsets {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * DTYPE_SIZES[entry["dtype"]]
    if end - begin != expected:
        raise ModelError(f"{bad} spans {end - begin} bytes but its shape {shape} and dtype "
                         f"{entry['dtype']} need {expected}")
    if end > size:
        raise ModelError(f"{path}: truncated: tensor '{name}' ends at byte {end} of the data "
                         f"section, which has only {size} bytes")
    return TensorInfo(name, entry["dtype"], tuple(shape), str(path), start + begin, start + end)


def _check_no_overlap(path: Path, tensors: dict[str, TensorInfo]) -> None:
    spans = sorted((t.begin, t.end, t.name) for t in tensors.values() if t.end > t.begin)
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise ModelError(f"{path}: corrupt safetensors header: tensors '{a}' and '{b}' "
                             "overlap")


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(f"{index}: not a valid safetensors index (no weight_map)") from None
        if not all(isinstance(n, str) and n and Path(n).name == n for n in names):
            raise ModelError(f"{index}: weight_map names a file outside {path}")
        files = [path / n for n in names]
        for f in files:
            if not f.exists():
                raise ModelError(f"{f}: missing (named by {index.name})")
        return files
    single = path / "model.safetensors"
    if single.exists():
        return [single]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for pat in PICKLE_PATTERNS for p in path.glob(pat))
    if pickles:
        raise ModelError(
            f"{path / pickles[0]}: pickle checkpoints are refused (tailor reads only "
            "safetensors and never unpickles); convert it first, e.g. with "
            "`save_pretrained(dir, safe_serialization=True)` in a trusted environment")
    raise ModelError(f"{path}: no *.safetensors weights found")


def _read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.exists():
        raise ModelError(f"{cfg}: missing (not a Hugging Face checkpoint directory?)")
    try:
        config = json.loads(cfg.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{cfg}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{cfg}: not a JSON object")
    return config


def load_model(name: str, path: Path) -> ModelInfo:
    if not path.exists():
        raise ModelError(f"{path}: no such directory")
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory (a model is a Hugging Face checkpoint dir)")
    config = _read_config(path)
    arch = find_architecture(config)
    if arch is None:
        got = ", ".join(config.get("architectures") or ["(none)"])
        raise ModelError(f"{path / 'config.json'}: unsupported architecture {got} "
                         f"(supported: {', '.join(supported_names())})")
    files = _weight_files(path)
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        for t_name, info in read_header(f).items():
            if t_name in tensors:
                raise ModelError(f"{f}: tensor '{t_name}' also appears in "
                                 f"{Path(tensors[t_name].file).name}")
            tensors[t_name] = info
    _check_index_agrees(path, tensors)
    layers = _split_layers(path, arch, config, tensors)
    return ModelInfo(name, path, arch, config, len(layers), tensors, tuple(map(str, files)),
                     layers)


def _check_index_agrees(path: Path, tensors: dict[str, TensorInfo]) -> None:
    index = path / "model.safetensors.index.json"
    if not index.exists():
        return
    weight_map = json.loads(index.read_text())["weight_map"]
    for t_name, file in weight_map.items():
        info = tensors.get(t_name)
        if info is None or Path(info.file).name != file:
            raise ModelError(f"{path / file}: does not contain tensor '{t_name}' "
                             f"that {index.name} places there")


def _split_layers(path: Path, arch: Architecture, config: dict,
                  tensors: dict[str, TensorInfo]) -> tuple[dict[str, TensorInfo], ...]:
    declared = config.get(arch.num_layers_key)
    if not isinstance(declared, int) or declared < 0:
        raise ModelError(f"{path / 'config.json'}: '{arch.num_layers_key}' is missing or "
                         "not a whole number")
    by_layer: dict[int, dict[str, TensorInfo]] = {}
    for t_name, info in tensors.items():
        split = arch.split(t_name)
        if split is not None:
            by_layer.setdefault(split[0], {})[split[1]] = info
    found = max(by_layer) + 1 if by_layer else 0
    if found != declared or len(by_layer) != found:
        raise ModelError(f"{path}: config.json says {arch.num_layers_key}={declared} but the "
                         f"weights hold layers {_ranges(sorted(by_layer))}")
    layers = tuple(by_layer[i] for i in range(found))
    for i, layer in enumerate(layers[1:], start=1):
        if layer.keys() != layers[0].keys():
            diff = sorted(layer.keys() ^ layers[0].keys())[0]
            raise ModelError(f"{path}: layer {i} does not have the same tensors as layer 0 "
                             f"(differs in '{diff}')")
    return layers


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))
