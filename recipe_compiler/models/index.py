"""What is inside each model directory, read from config.json and safetensors headers only.

Consumes: Hugging Face checkpoint directories.
Produces: `ModelInfo` (architecture, layer count, every tensor's name, dtype, shape, file and
byte range), or `ModelError` with a one-line reason naming the file.

No weight is read and nothing is unpickled: a directory holding only `*.bin`/`*.pt`
checkpoints is refused. Headers are validated (sizes, offsets, truncation, packing) so that
the executor can trust them, and config.json is validated against its architecture's
description in arch/ (types, ranges, and agreement with the tensor shapes), so that a
directory `load_model` accepts is one transformers' `from_pretrained` can build. Every file
read must be a regular file inside the directory (a Hugging Face cache snapshot may link to
its blobs).
"""

from __future__ import annotations

import codecs
import json
import math
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

from recipe_compiler.language.source import first_line
from recipe_compiler.models.arch import (
    Architecture,
    common_problem,
    expected_shape,
    find_architecture,
    generation_problem,
    names_in,
    supported_names,
)
from recipe_compiler.models.arch.schema import kind_of, show

# safetensors dtype -> bytes per element
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
RECIPE_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
MAX_JSON = 16 * 1024 * 1024  # config.json and the shard index; real ones are kilobytes
MAX_DEPTH = 64  # real configs nest 3 deep; deeper only risks recursion in readers
MAX_DIM = 2**62  # a shape dimension the safetensors library can multiply without overflow
INDEX = "model.safetensors.index.json"


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
            header = _parse_json(f.read(n).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ModelError(f"{path}: corrupt safetensors header ({_reason(exc)})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ModelError(f"{path}: corrupt safetensors header (__metadata__ is {show(metadata)}; "
                         "expected an object of strings)")
    data_start, data_size = 8 + n, size - 8 - n
    tensors = {name: _tensor_info(path, name, entry, data_start, data_size)
               for name, entry in header.items()}
    _check_packed(path, tensors, data_start, size)
    return tensors


def _quoted(name: str | None) -> str:
    """'model.norm.weight'; a name that would break the one-line message is escaped."""
    if name is not None and name.isprintable() and len(name) <= 200:
        return f"'{name}'"
    return show(name, 200)


def _whole(value: object, high: int = MAX_DIM) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def _tensor_info(path: Path, name: str, entry: object, start: int, size: int) -> TensorInfo:
    bad = f"{path}: corrupt safetensors header: tensor {_quoted(name)}"
    dtype = entry.get("dtype") if isinstance(entry, dict) else None
    if not (isinstance(dtype, str) and dtype in DTYPE_SIZES):
        raise ModelError(f"{bad} has no known dtype ({show(dtype)})")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(_whole(d) for d in shape)):
        raise ModelError(f"{bad} has a malformed shape {show(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise ModelError(f"{bad} has malformed data_offsets {show(offsets)}")
    begin, end = offsets
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise ModelError(f"{bad} spans {end - begin} bytes but its shape {shape} and dtype "
                         f"{dtype} need {expected}")
    if end > size:
        raise ModelError(f"{path}: truncated: tensor {_quoted(name)} ends at byte {end} of "
                         f"the data section, which has only {size} bytes")
    return TensorInfo(name, dtype, tuple(shape), str(path), start + begin, start + end)


def _check_packed(path: Path, tensors: dict[str, TensorInfo], start: int, size: int) -> None:
    """Tensors back to back from the end of the header to the end of the file, as the
    safetensors library (and so transformers) insists."""
    at, previous = start, None
    for begin, end, name in sorted((t.begin, t.end, t.name) for t in tensors.values()):
        if begin < at:
            raise ModelError(f"{path}: corrupt safetensors header: tensors {_quoted(previous)} and "
                             f"{_quoted(name)} overlap")
        if begin > at:
            raise ModelError(f"{path}: corrupt safetensors header: {begin - at} bytes before "
                             f"tensor {_quoted(name)} belong to no tensor")
        at, previous = end, name
    if at != size:
        raise ModelError(f"{path}: corrupt safetensors file: its last {size - at} bytes belong "
                         "to no tensor in the header")


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None


# --- JSON files: config.json and the shard index -----------------------------------------


def read_json(path: Path, root: Path) -> dict:
    """A JSON object from a small file inside model directory `root`."""
    size = _regular_inside(path, root).st_size
    if size > MAX_JSON:
        raise ModelError(f"{path}: {size} bytes; expected a JSON file under {MAX_JSON} bytes")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None
    if raw.startswith(codecs.BOM_UTF8):
        raise ModelError(f"{path}: starts with a UTF-8 byte order mark, which transformers "
                         "cannot read; save the file without one")
    if not raw.strip():
        raise ModelError(f"{path}: empty; expected a JSON object")
    try:
        value = _parse_json(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{path}: not valid JSON ({_reason(exc)})") from None
    if not isinstance(value, dict):
        found = "null" if value is None else kind_of(value)
        raise ModelError(f"{path}: holds {found}; expected a JSON object {{...}}")
    return value


def _parse_json(text: str) -> object:
    value = json.loads(text)
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return value


def _depth(value: object) -> int:
    """How deeply lists and objects nest, without recursion; stops counting past MAX_DEPTH."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack and deepest <= MAX_DEPTH:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text: byte {exc.start}"
    return first_line(exc)


def _regular_inside(f: Path, root: Path) -> os.stat_result:
    """Refuse a file that is missing, not a regular file (a FIFO would block, a device never
    end), or a link out of the model directory."""
    try:
        st = os.stat(f)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ModelError(f"{f}: cannot read ({reason})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{f}: not a regular file")
    if f.is_symlink():
        target, home = f.resolve(), root.resolve()
        in_cache = home.parent.name == "snapshots" and target.is_relative_to(
            home.parent.parent / "blobs")  # ~/.cache/huggingface/hub/models--x/snapshots/rev
        if not (target.is_relative_to(home) or in_cache):
            raise ModelError(f"{f}: a link to {target}, outside the model directory {root}")
    return st


def _weight_map(path: Path) -> dict[str, str] | None:
    """The shard index's tensor -> file map, or None when there is no index."""
    index = path / INDEX
    if not os.path.lexists(index):
        return None
    weight_map = read_json(index, path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelError(f"{index}: not a valid safetensors index: weight_map is "
                         f"{show(weight_map)}; expected an object from tensor names to files")
    for t_name, file in weight_map.items():
        if not isinstance(file, str):
            raise ModelError(f"{index}: weight_map[{show(t_name)}] is {show(file)}; expected "
                             "a file name")
        if file in ("", ".", "..") or "/" in file or "\\" in file:
            raise ModelError(f"{index}: weight_map names {show(file)}, a file outside {path}; "
                             "expected a file name in that directory")
        if not file.isprintable():
            raise ModelError(f"{index}: weight_map names {show(file)}; expected a plain file "
                             "name (no control characters)")
        if not file.endswith(".safetensors"):
            raise ModelError(f"{index}: weight_map names {show(file)}; expected a "
                             ".safetensors file (tailor never reads other weight formats)")
    return weight_map


def _weight_files(path: Path, weight_map: dict[str, str] | None) -> list[Path]:
    if weight_map is not None:
        files = [path / n for n in sorted(set(weight_map.values()))]
        for f in files:
            if not os.path.lexists(f):
                raise ModelError(f"{f}: missing (named by {INDEX})")
    elif os.path.lexists(single := path / "model.safetensors"):
        files = [single]
    else:
        files = sorted(path.glob("*.safetensors"))
    for f in files:
        _regular_inside(f, path)
    if files:
        return files
    pickles = sorted(p.name for pat in PICKLE_PATTERNS for p in path.glob(pat))
    if pickles:
        raise ModelError(
            f"{path / pickles[0]}: pickle checkpoints are refused (tailor reads only "
            "safetensors and never unpickles); convert it first, e.g. with "
            "`save_pretrained(dir, safe_serialization=True)` in a trusted environment")
    raise ModelError(f"{path}: no *.safetensors weights found")


def _read_config(path: Path) -> tuple[dict, Architecture]:
    cfg = path / "config.json"
    if not os.path.lexists(cfg):
        raise ModelError(f"{cfg}: missing (not a Hugging Face checkpoint directory?)")
    config = read_json(cfg, path)
    if problem := common_problem(config):
        raise ModelError(f"{cfg}: {problem}")
    arch = find_architecture(config)
    if arch is None:
        raise ModelError(f"{cfg}: unsupported architecture {', '.join(config['architectures'])} "
                         f"(supported: {', '.join(supported_names())})")
    if problem := arch.config_problem(config):
        raise ModelError(f"{cfg}: {problem}")
    generation = path / "generation_config.json"  # from_pretrained reads it too
    if os.path.lexists(generation) and (problem := generation_problem(read_json(generation,
                                                                                path))):
        raise ModelError(f"{generation}: {problem}")
    return config, arch



# the models a recipe names, by name, as checked: what check, plan, build and search share
Models = dict[str, ModelInfo]

def load_model(name: str, path: Path) -> ModelInfo:
    if "\0" in str(path):
        raise ModelError(f"{str(path)!r}: not a usable path (it holds a NUL character)")
    if not path.exists():
        raise ModelError(f"{path}: no such directory")
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory (a model is a Hugging Face checkpoint dir)")
    config, arch = _read_config(path)
    weight_map = _weight_map(path)
    files = _weight_files(path, weight_map)
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        for t_name, info in read_header(f).items():
            if t_name in tensors:
                raise ModelError(f"{f}: tensor {_quoted(t_name)} also appears in "
                                 f"{Path(tensors[t_name].file).name}")
            tensors[t_name] = info
    if weight_map is not None:
        _check_index_agrees(path, weight_map, tensors)
    layers = _split_layers(path, arch, config, tensors)
    _check_shapes(path, arch, config, tensors, layers)
    return ModelInfo(name, path, arch, config, len(layers), tensors, tuple(map(str, files)),
                     layers)


def _check_index_agrees(path: Path, weight_map: dict[str, str],
                        tensors: dict[str, TensorInfo]) -> None:
    for t_name, file in weight_map.items():
        info = tensors.get(t_name)
        if info is None or Path(info.file).name != file:
            raise ModelError(f"{path / file}: does not contain tensor {_quoted(t_name)} "
                             f"that {INDEX} places there")


def _check_shapes(path: Path, arch: Architecture, config: dict, tensors: dict[str, TensorInfo],
                  layers: tuple[dict[str, TensorInfo], ...]) -> None:
    """Every tensor the architecture describes has the shape its config implies, so that
    transformers can load it into the model the config builds."""
    values = arch.dimensions(config)
    specs = [(dims, [tensors.get(name)]) for name, dims in arch.shapes]
    specs += [(dims, [layer.get(suffix) for layer in layers]) for suffix, dims in arch.layer_shapes]
    for dims, found in specs:
        want = expected_shape(dims, values)
        for t in found:
            if want is not None and t is not None and t.shape != want:
                keys = dict.fromkeys(k for d in dims for k in names_in(d))
                given = ", ".join(f"{k}={values[k]}" + ("" if config.get(k) is not None
                                                         else " (by default)") for k in keys)
                raise ModelError(f"{path / 'config.json'}: {given} give tensor "
                                 f"{_quoted(t.name)} the shape {list(want)}, but "
                                 f"{Path(t.file).name} has {list(t.shape)}")


def _split_layers(path: Path, arch: Architecture, config: dict,
                  tensors: dict[str, TensorInfo]) -> tuple[dict[str, TensorInfo], ...]:
    declared = config[arch.num_layers_key]  # a whole number from 1 to 10000 (arch schema)
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
                             f"(differs in {_quoted(diff)})")
    return layers


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))
