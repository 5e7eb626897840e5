"""Fuzzing model directories: whatever is on disk, loading it ends in a model or one line.

Every case mutates a valid tiny checkpoint (one per architecture, from `make_family`, and a
sharded copy of the llama one):
- config.json: each key's type and value (near misses such as "12", 12.0, true, -1, 10**12,
  and random JSON), deleted and added keys, deep nesting, a BOM, invalid JSON, a top level
  that is not an object, truncation; generation_config.json likewise (from_pretrained reads
  it too);
- the safetensors header: the length field, the JSON bytes, dtypes, shapes (negative, huge,
  booleans), offsets (overlapping, out of range, gaps), layer names, truncation;
- model.safetensors.index.json: shard names out of the directory (`../`, absolute, `evil.bin`,
  empty, NUL), missing shards, links out of the directory, FIFOs, weight_map types.

The property (`outcome`): `load_model` returns or raises `ModelError` whose one-line message
starts with the offending path, within `LOAD_SECONDS`; and `tailorc check` on a recipe naming
the directory exits 0 or 1, never 2. When `load_model` accepts a mutated config, transformers'
`from_pretrained(path, use_safetensors=True)` must build the model from it (`eval` and `prune`
rely on that). The arch/ schemas are valid JSON Schema and `jsonschema` agrees with
recipe_compiler.models.arch.schema on them.

The default suite runs a fixed (derandomised) set: `FAST`, 410 generated cases, plus 157
hand-picked ones (the fuzzer's report), in about 15 s. `pytest -m slow` runs `SLOW`, 4900 random
cases, in about 2 minutes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from recipe_compiler.cli import main
from recipe_compiler.models.arch import all_architectures, common_problem, schema_documents
from recipe_compiler.models.arch.schema import SUPPORTED, first_violation, is_type
from recipe_compiler.models.index import INDEX, ModelError, load_model
from recipe_compiler.zoo.families import ARCHES, make_family
from tests.deadline import deadline

FAST = {"config": 150, "header": 100, "index": 60, "transformers": 40, "jsonschema": 60}
SLOW = {"all": 4400, "transformers": 500}
LOAD_SECONDS = 2.0  # the property; the alarm that catches a hang is HANG_SECONDS
HANG_SECONDS = 20
LAYERS = 2


def fast(name: str):
    return settings(max_examples=FAST[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def slow(name: str):
    return settings(max_examples=SLOW[name], deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# --- seed checkpoints ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Path]:
    """A valid 2-layer checkpoint per architecture, and `sharded`: llama in two shards."""
    root = tmp_path_factory.mktemp("fuzz-seeds")
    paths = {arch: make_family(root / arch, arch, ("base",), layers=LAYERS, seed=0)["base"]
             for arch in ARCHES}
    paths["sharded"] = _shard(paths["llama"], root / "sharded")
    for path in paths.values():
        load_model("seed", path)  # every seed is valid to begin with
    return paths


def _shard(src: Path, dst: Path) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    names, weight_map = sorted(state), {}
    for k in range(2):
        file = f"model-{k + 1:05d}-of-00002.safetensors"
        save_file({n: state[n] for n in names[k::2]}, dst / file, metadata={"format": "pt"})
        weight_map.update({n: file for n in names[k::2]})
    (dst / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


@contextlib.contextmanager
def case_dir(seed: Path) -> Iterator[Path]:
    """A private copy of `seed`, as `<tmp>/m`, with `<tmp>/outside` beside it."""
    with tempfile.TemporaryDirectory(prefix="tailor-fuzz-") as tmp:
        d = Path(tmp) / "m"
        shutil.copytree(seed, d)
        (Path(tmp) / "outside").mkdir()
        yield d


# --- the property -------------------------------------------------------------------------


def load(d: Path):
    """`load_model`, holding it to the property: a ModelInfo or one line naming a path."""
    started = time.perf_counter()
    with deadline(HANG_SECONDS):
        try:
            info = load_model("m", d)
        except ModelError as exc:
            info, message = None, str(exc)
            assert message.startswith(str(d)) and "\n" not in message, message
            say(f"refused: {message}", "refused")
    if info is not None:
        say("accepted", "accepted")
    elapsed = time.perf_counter() - started
    assert elapsed < LOAD_SECONDS, f"load_model took {elapsed:.1f} s"
    return info


def say(text: str, kind: str) -> None:
    """`note` and `event` inside a hypothesis example (`--hypothesis-show-statistics` counts
    the kinds); nothing in a plain test."""
    with contextlib.suppress(InvalidArgument):
        note(text)
        event(kind)


def run_cli(*args: str) -> tuple[int, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with deadline(HANG_SECONDS), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        code = main(list(args))
    return code, stderr.getvalue()


def outcome(d: Path) -> object:
    info = load(d)
    recipe = d.parent / "r.tr"
    recipe.write_text(f'model base = "{d}"\nslot 0..{LAYERS} = take(base)\n')
    code, err = run_cli("check", str(recipe))
    assert code in (0, 1) and "Traceback" not in err and "internal error" not in err, err
    assert (code == 0) == (info is not None), err  # check refuses exactly what load refuses
    return info


# --- config.json mutations ----------------------------------------------------------------

EXTRA_KEYS = (
    "head_dim", "num_key_value_heads", "rope_theta", "rope_scaling", "rope_parameters",
    "layer_types", "sliding_window", "use_sliding_window", "max_window_layers", "torch_dtype",
    "dtype", "pad_token_id", "bos_token_id", "eos_token_id", "id2label", "label2id", "n_inner",
    "partial_rotary_factor", "rotary_pct", "attention_bias", "mlp_bias", "tie_word_embeddings",
    "hidden_size", "num_hidden_layers", "n_embd", "n_layer", "n_head", "n_positions",
    "max_position_embeddings", "is_encoder_decoder", "problem_type", "initializer_range",
    "output_hidden_states", "chunk_size_feed_forward", "pretraining_tp", "hidden_act",
    "attention_dropout", "rms_norm_eps", "layer_norm_eps", "model_type", "architectures",
)
WORDS = ("float32", "float16", "bfloat16", "float64", "int8", "auto", "silu", "gelu", "nope",
         "llama", "mistral", "gpt2", "default", "linear", "llama3", "longrope", "full_attention",
         "sliding_attention", "LlamaForCausalLM", "GPT2LMHeadModel", "", "12", "1e-5", "null")
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64),
    st.sampled_from([0, 1, -1, 2, 3, 4, 7, 8, 16, 64, 10_000, 10_001, 2**31, 10**12, 10**30]),
    st.floats(), st.sampled_from([0.0, 1.0, -0.0, 1e-6, 0.5, 2.0, 1e308]),
    st.sampled_from(WORDS), st.text(max_size=6))
JSON_ANY = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(WORDS + EXTRA_KEYS), inner,
                                                 max_size=3)), max_leaves=6)


def near(value: object) -> st.SearchStrategy:
    """Values a plausible mistake would put where `value` was."""
    if isinstance(value, bool):
        return st.sampled_from([not value, int(value), str(value).lower(), None])
    if isinstance(value, int):
        return st.sampled_from([value + 1, value - 1, value * 2, max(value // 2, 1), -value,
                                str(value), float(value), [value], None, True, 0, 10**12])
    if isinstance(value, float):
        return st.sampled_from([int(value) if math.isfinite(value) else 0, -value, value * 10,
                                str(value), float("nan"), float("inf"), 0.0, None])
    if isinstance(value, str):
        return st.sampled_from(WORDS + (value.upper(), value + " ", None, 1))
    if isinstance(value, list):
        return st.sampled_from([value[:-1], value + value[-1:], value[::-1], [], None,
                                [str(v) for v in value]])
    if isinstance(value, dict):
        return st.sampled_from(sorted(value) or [""]).flatmap(lambda k: st.one_of(
            near(value.get(k)).map(lambda v: {**value, k: v}),
            st.just({x: y for x, y in value.items() if x != k})))
    return JSON_LEAF


def plausible(value: object) -> st.SearchStrategy:
    """Values of the same kind as `value`: what a config that loads might hold instead."""
    if isinstance(value, bool) or value is None:
        return st.sampled_from([True, False, None, 0, 1, 2, 8, 0.0, 0.1, 1e-5, "silu"])
    if isinstance(value, int):
        return st.sampled_from([0, 1, 2, 3, 4, 8, 16, 64, 127, 128, 4096, value + 1, value * 2])
    if isinstance(value, float):
        return st.sampled_from([0.0, 1e-6, 1e-5, 0.02, 0.1, 0.5, 1.0, 2.0, 10000.0, 1e6])
    if isinstance(value, str):
        return st.sampled_from(WORDS)
    return near(value)


@st.composite
def config_edit(draw, config: dict, likely: bool = False) -> dict:
    """`config` with one to three keys changed, deleted or added; `likely` keeps to values
    of the kind already there, so that more of the edits are accepted."""
    config = dict(config)
    actions = ["plausible"] * 3 + ["delete"] if likely else ["near", "near", "any", "delete"]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(config) + list(EXTRA_KEYS)))
        action = draw(st.sampled_from(actions))
        if action == "delete":
            config.pop(key, None)
        elif action == "any":
            config[key] = draw(JSON_ANY)
        elif key not in config:
            config[key] = draw(JSON_ANY if action == "near" else
                               st.sampled_from([True, 1, 0.5, "x", None]).flatmap(plausible))
        else:
            config[key] = draw((near if action == "near" else plausible)(config[key]))
    return config


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def config_bytes(draw, good: bytes) -> bytes:
    """config.json as bytes: mostly structured edits, sometimes raw damage."""
    config = json.loads(good)
    kind = draw(st.sampled_from(["edit"] * 6 + ["bom", "cut", "deep", "top", "bytes", "nan"]))
    if kind == "edit":
        return json.dumps(draw(config_edit(config))).encode()
    if kind == "bom":
        return b"\xef\xbb\xbf" + good
    if kind == "cut":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == "deep":
        depth = draw(st.sampled_from([63, 64, 65, 1000, 100_000]))
        key = draw(st.sampled_from(sorted(config)))
        return json.dumps({**config, key: "@"}).replace('"@"', _nest(depth)).encode()
    if kind == "top":
        return json.dumps(draw(st.one_of(JSON_LEAF, st.lists(JSON_LEAF, max_size=2)))).encode()
    if kind == "nan":
        key = draw(st.sampled_from(sorted(config)))
        bad = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "1" * 5000]))
        return json.dumps({**config, key: "@"}).replace('"@"', bad).encode()
    return draw(st.binary(max_size=64))


@fast("config")
@given(data=st.data(), arch=st.sampled_from(sorted(ARCHES)))
def test_config_mutations(seeds, data, arch):
    with case_dir(seeds[arch]) as d:
        mutate_config(data, d)
        outcome(d)


GENERATION_KEYS = (
    "bos_token_id", "eos_token_id", "pad_token_id", "max_length", "max_new_tokens",
    "min_length", "num_beams", "num_return_sequences", "do_sample", "early_stopping",
    "temperature", "top_k", "top_p", "repetition_penalty", "suppress_tokens",
    "cache_implementation", "watermarking_config", "compile_config",
    "assistant_ensemble_weight", "transformers_version",
)


@st.composite
def generation_edit(draw, config: dict, likely: bool = False) -> dict:
    config = dict(config)
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(GENERATION_KEYS))
        if draw(st.integers(0, 4)) == 0:
            config.pop(key, None)
        elif likely:
            config[key] = draw(st.sampled_from([True, False, None, 0, 1, 2, 4, 0.5, 1.0, "never",
                                                "static", [1, 2]]))
        else:
            config[key] = draw(near(config[key]) if key in config else JSON_ANY)
    return config


def mutate_config(data, d: Path) -> None:
    """config.json, or now and then generation_config.json."""
    name = data.draw(st.sampled_from(["config.json"] * 4 + ["generation_config.json"]),
                     label="file")
    good = (d / name).read_bytes()
    if name == "config.json" or data.draw(st.booleans(), label="raw"):
        raw = data.draw(config_bytes(good), label=name)
    else:
        raw = json.dumps(data.draw(generation_edit(json.loads(good)), label=name)).encode()
    (d / name).write_bytes(raw)


# --- safetensors header mutations ---------------------------------------------------------


def read_st(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_st(path: Path, header: dict, body: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


DIMS = st.one_of(st.integers(-3, 300), st.sampled_from([2**31, 2**63, 2**64, 10**30]),
                 st.booleans(), st.floats(0, 4), st.just("8"), st.none())


@st.composite
def header_edit(draw, header: dict, body: bytes) -> tuple[dict, bytes]:
    header = json.loads(json.dumps(header))
    names = sorted(k for k in header if k != "__metadata__")
    name = draw(st.sampled_from(names))
    entry = header[name]
    what = draw(st.sampled_from(["dtype", "shape", "dim", "offsets", "shift", "swap", "drop",
                                 "rename", "entry", "metadata", "body"]))
    if what == "dtype":
        entry["dtype"] = draw(st.sampled_from(["F32", "F16", "BF16", "I64", "BOOL", "F33",
                                               "f32", "", "U8", "F8_E4M3"]) | JSON_ANY)
    elif what == "shape":
        entry["shape"] = draw(st.lists(DIMS, max_size=4) | JSON_LEAF)
    elif what == "dim" and entry["shape"]:
        i = draw(st.integers(0, len(entry["shape"]) - 1))
        entry["shape"][i] = draw(DIMS)
    elif what == "offsets":
        entry["data_offsets"] = draw(st.lists(st.integers(-5, len(body) + 5) | DIMS,
                                              max_size=3) | JSON_LEAF)
    elif what == "shift":
        k = draw(st.integers(-64, 64))
        entry["data_offsets"] = [o + k for o in entry["data_offsets"]]
    elif what == "swap":
        other = header[draw(st.sampled_from(names))]
        entry["data_offsets"], other["data_offsets"] = other["data_offsets"], entry[
            "data_offsets"]
    elif what == "drop":
        del header[name]
    elif what == "rename":
        new = draw(st.sampled_from(["model.layers.01.x.weight", "model.layers.7.mlp.w",
                                    "model.layers.99999999999.mlp.w",
                                    "model.layers." + "9" * 5000 + ".mlp.w",
                                    "transformer.h.2.attn.c_attn.weight", "", "__metadata__",
                                    "model.norm\nweight", "x" * 10_000]))
        header[new] = header.pop(name)
    elif what == "entry":
        header[name] = draw(JSON_ANY)
    elif what == "metadata":
        header["__metadata__"] = draw(JSON_ANY)
    else:
        body = draw(st.sampled_from([body[:-1], body + b"\0" * 4, b"", body[: len(body) // 2]]))
    return header, body


@st.composite
def header_bytes(draw, raw: bytes) -> bytes:
    (n,) = struct.unpack("<Q", raw[:8])
    header, body = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    kind = draw(st.sampled_from(["edit"] * 6 + ["length", "flip", "cut", "deep", "utf8"]))
    if kind == "edit":
        header, body = draw(header_edit(header, body))
        encoded = json.dumps(header).encode()
        return struct.pack("<Q", len(encoded)) + encoded + body
    if kind == "length":
        m = draw(st.sampled_from([0, 1, n - 1, n + 1, len(raw), 2**63, 2**64 - 1, 100 * 2**20])
                 | st.integers(0, 2**64 - 1))
        return struct.pack("<Q", m) + raw[8:]
    if kind == "flip":
        i = draw(st.integers(8, 8 + n - 1))
        return raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1 :]
    if kind == "cut":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "deep":
        nested = _nest(draw(st.sampled_from([65, 100_000]))).encode()
        return struct.pack("<Q", len(nested)) + nested + body
    return struct.pack("<Q", n) + raw[8 : 8 + n].replace(b'"', b"\xff", 1) + body


@fast("header")
@given(data=st.data(), arch=st.sampled_from(sorted(ARCHES)))
def test_safetensors_header_mutations(seeds, data, arch):
    with case_dir(seeds[arch]) as d:
        mutate_header(data, d)
        outcome(d)


def mutate_header(data, d: Path) -> None:
    """model.safetensors, or one shard of a sharded checkpoint."""
    files = sorted(p for p in d.glob("*.safetensors") if p.is_file() and not p.is_symlink())
    if files:
        f = data.draw(st.sampled_from(files), label="file")
        f.write_bytes(data.draw(header_bytes(f.read_bytes()), label=f.name))


# --- shard index mutations ----------------------------------------------------------------

SHARD_NAMES = ("../model-00001-of-00002.safetensors", "../outside/x.safetensors",
               "/etc/passwd", "/tmp/x.safetensors", "evil.bin", "pytorch_model.bin", "", ".",
               "..", "sub/x.safetensors", "x\\y.safetensors", "x\0.safetensors", "x\n.safetensors",
               "nope.safetensors",
               "model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors")


def mutate_index(data, d: Path) -> None:
    index = json.loads((d / INDEX).read_text())
    weight_map = index["weight_map"]
    shards = sorted(set(weight_map.values()))
    what = data.draw(st.sampled_from(["name", "name", "value", "map", "index", "missing",
                                      "link", "fifo", "dir", "extra", "bytes"]), label="index")
    tensor = data.draw(st.sampled_from(sorted(weight_map)), label="tensor")
    shard = d / data.draw(st.sampled_from(shards), label="shard")
    if what == "name":
        weight_map[tensor] = data.draw(st.sampled_from(SHARD_NAMES), label="name")
    elif what == "value":
        weight_map[tensor] = data.draw(JSON_ANY, label="value")
    elif what == "map":
        index["weight_map"] = data.draw(JSON_ANY, label="weight_map")
    elif what == "index":
        index = data.draw(JSON_ANY, label="index.json")
    elif what == "missing":
        shard.unlink()
    elif what == "link":  # a shard that is a link out of the directory (to a valid file)
        outside = d.parent / "outside" / shard.name
        shard.rename(outside)
        shard.symlink_to(data.draw(st.sampled_from([outside, Path("../outside") / shard.name])))
    elif what == "fifo":  # opening a FIFO for reading blocks until someone writes
        shard.unlink()
        os.mkfifo(shard)
    elif what == "dir":
        shard.unlink()
        shard.mkdir()
    elif what == "extra":
        weight_map["model.layers.9.mlp.up_proj.weight"] = shards[0]
    else:
        (d / INDEX).write_bytes(data.draw(st.binary(max_size=32), label="bytes"))
        return
    (d / INDEX).write_text(json.dumps(index))


@fast("index")
@given(data=st.data())
def test_shard_index_mutations(seeds, data):
    with case_dir(seeds["sharded"]) as d:
        mutate_index(data, d)
        outcome(d)


# --- everything, many times (pytest -m slow) ----------------------------------------------

MUTATORS: dict[str, Callable] = {"config": mutate_config, "header": mutate_header,
                                 "index": mutate_index}


@pytest.mark.slow
@slow("all")
@given(data=st.data(), arch=st.sampled_from(sorted(ARCHES) + ["sharded"] * 3),
       kinds=st.sampled_from([("config",), ("header",), ("index",), ("config", "header"),
                              ("config", "index"), ("header", "index")]))
def test_many_mutations(seeds, data, arch, kinds):
    """One or two kinds of damage at once (each kind once: a mutator starts from a valid
    file)."""
    with case_dir(seeds[arch]) as d:
        for kind in kinds:
            if kind != "index" or (d / INDEX).exists():
                MUTATORS[kind](data, d)
        outcome(d)


# --- accepted configs are configs transformers can build ----------------------------------


def transformers_builds(d: Path) -> None:
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    with deadline(HANG_SECONDS), contextlib.redirect_stderr(io.StringIO()):
        AutoModelForCausalLM.from_pretrained(d, use_safetensors=True)


def _accepted_then_built(seed: Path, data) -> None:
    with case_dir(seed) as d:
        name = data.draw(st.sampled_from(["config.json"] * 3 + ["generation_config.json"]))
        config = json.loads((d / name).read_text())
        edit = config_edit if name == "config.json" else generation_edit
        edited = data.draw(edit(config, likely=True), label=name)
        (d / name).write_text(json.dumps(edited))
        if load(d) is not None:
            say(f"accepted: {json.dumps(edited)}", "built by transformers")
            transformers_builds(d)


@fast("transformers")
@given(data=st.data(), arch=st.sampled_from(sorted(ARCHES)))
def test_accepted_configs_build_in_transformers(seeds, data, arch):
    _accepted_then_built(seeds[arch], data)


@pytest.mark.slow
@slow("transformers")
@given(data=st.data(), arch=st.sampled_from(sorted(ARCHES)))
def test_accepted_configs_build_in_transformers_many(seeds, data, arch):
    _accepted_then_built(seeds[arch], data)


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_every_seed_builds_in_transformers(seeds, arch):
    transformers_builds(seeds[arch])


# --- the arch/ schemas are JSON Schema, and jsonschema agrees with schema.py ---------------


def _keywords(node: object) -> Iterator[str]:
    """Every keyword used in a schema (not the names under properties or $defs)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key in ("properties", "$defs"):
                for sub in value.values():
                    yield from _keywords(sub)
            elif key not in ("enum", "const", "required", "description", "$comment"):
                yield from _keywords(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keywords(item)


def test_arch_schemas_are_json_schema_using_only_supported_keywords():
    from jsonschema import Draft202012Validator

    for name, doc in schema_documents().items():
        Draft202012Validator.check_schema(doc)
        unknown = set(_keywords(doc)) - SUPPORTED
        assert not unknown, f"{name} uses keywords schema.py ignores: {sorted(unknown)}"


def _jsonschema_valid(config: dict, *doc_names: str) -> bool:
    from jsonschema import Draft202012Validator, validators
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many({
        "integer": lambda _, v: is_type(v, "integer"), "number": lambda _, v: is_type(v, "number")})
    strict = validators.extend(Draft202012Validator, type_checker=checker)
    docs = schema_documents()
    registry = Registry().with_resources(
        (name, DRAFT202012.create_resource(doc)) for name, doc in docs.items())
    return all(strict(docs[name], registry=registry).is_valid(config) for name in doc_names)


@fast("jsonschema")
@given(data=st.data(), arch=st.sampled_from(sorted(ARCHES)))
def test_jsonschema_agrees_with_schema_py(seeds, data, arch):
    if data.draw(st.booleans(), label="generation_config.json"):
        names = ("_generation.json",)
        config = data.draw(generation_edit(
            json.loads((seeds[arch] / "generation_config.json").read_text())))
    else:
        names = ("_common.json", f"{arch}.json")
        config = data.draw(config_edit(json.loads((seeds[arch] / "config.json").read_text())))
    docs = schema_documents()
    ours = all(first_violation(config, docs[name], docs, name) is None for name in names)
    assert ours == _jsonschema_valid(config, *names)


# --- hand-picked cases (the fuzzer's 629-case report) -------------------------------------


def refused(seed: Path, edit: Callable[[Path], None], *needles: str) -> str:
    """Apply `edit`, then: load_model refuses naming the file and `needles`; check and build
    exit 1."""
    with case_dir(seed) as d:
        edit(d)
        info = load(d)
        assert info is None, "accepted"
        with pytest.raises(ModelError) as exc:
            load_model("m", d)
        message = str(exc.value)
        for needle in needles:
            assert needle in message, message
        recipe = d.parent / "r.tr"
        recipe.write_text(f'model base = "{d}"\nslot 0..{LAYERS} = take(base)\n')
        assert run_cli("check", str(recipe))[0] == 1
        code, err = run_cli("build", str(recipe), "-o", str(d.parent / "out"))
        assert code == 1 and not (d.parent / "out").exists(), err
        return message


def set_config(**changes: object) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        config.update(changes)
        (d / "config.json").write_text(json.dumps(config))

    return edit


def write_config(raw: bytes) -> Callable[[Path], None]:
    return lambda d: (d / "config.json").write_bytes(raw)


def test_seeds_are_accepted(seeds):
    for path in seeds.values():
        assert load_model("m", path).num_layers == LAYERS


@pytest.mark.parametrize("raw, needle", [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"null", "holds null; expected a JSON object"),
    (b"[1, 2]", "holds a list; expected a JSON object"),
    (b'"LlamaForCausalLM"', "holds a string"),
    (b"12", "holds a whole number"),
    (b"\xef\xbb\xbf{}", "byte order mark"),
    (b'{"architectures": ["Llama\xff"]}', "not UTF-8"),
    (_nest(100_000).encode(), "nested more than 64 levels"),
    (b'{"a": ' + _nest(65).encode() + b"}", "nested more than 64 levels"),
], ids=["invalid", "empty", "blank", "null", "array", "string", "number", "bom", "latin1",
        "deep", "deep-value"])
def test_unreadable_config_json_is_refused(seeds, raw, needle):
    refused(seeds["llama"], write_config(raw), "config.json", needle)


def test_bom_prefixed_valid_config_is_refused(seeds):
    good = (seeds["llama"] / "config.json").read_bytes()
    refused(seeds["llama"], write_config(b"\xef\xbb\xbf" + good), "byte order mark")


def test_huge_config_json_is_refused_unread(seeds):
    def edit(d: Path) -> None:
        with open(d / "config.json", "r+b") as f:
            f.truncate(17 * 2**20)  # sparse: no 17 MB written

    refused(seeds["llama"], edit, "config.json", "under 16777216 bytes")


@pytest.mark.parametrize("value, found", [
    ("12", '"12" (a string)'), (12.0, "12.0 (a decimal number)"), (2.5, "2.5 (a decimal"),
    (True, "true (a boolean)"), (None, "null"), ([2], "[2] (a list)"), (-1, "-1"),
    (0, "0"), (10**12, "1000000000000"), (10**100, "1" + "0" * 56 + "..."),
], ids=["string", "float", "fraction", "bool", "null", "list", "negative", "zero", "huge",
        "googol"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_bad_layer_count_is_refused_quickly(seeds, arch, value, found):
    key = "n_layer" if arch == "gpt2" else "num_hidden_layers"
    message = refused(seeds[arch], set_config(**{key: value}), f"config.json: {key} is {found}",
                      "expected a whole number of layers from 1 to 10000")
    assert "\n" not in message


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_layer_count_disagreeing_with_tensors_is_refused(seeds, arch):
    arch_ = next(a for a in all_architectures() if a.name == arch)
    per_layer = dict.fromkeys(arch_.per_layer_config)  # null: let transformers fill them in
    refused(seeds[arch], set_config(**{arch_.num_layers_key: LAYERS + 1}, **per_layer),
            f"{arch_.num_layers_key}={LAYERS + 1}", "weights hold")


@pytest.mark.parametrize("key, value, needles", [
    ("hidden_size", 48, ("hidden_size=48", "'model.embed_tokens.weight' the shape [128, 48]",
                         "has [128, 32]")),
    ("intermediate_size", 96, ("intermediate_size=96", "mlp.gate_proj.weight' the shape [96",)),
    ("num_attention_heads", 8, ("num_attention_heads=8", "self_attn.q_proj.weight")),
    ("num_attention_heads", 3, ("num_attention_heads is 3; expected a multiple of "
                                "num_key_value_heads (2)",)),
    ("num_key_value_heads", 4, ("num_key_value_heads=4", "self_attn.k_proj.weight' the shape "
                                "[32, 32], but model.safetensors has [16, 32]")),
    ("num_key_value_heads", None, ("num_key_value_heads=4 (by default)",)),
    ("vocab_size", 100, ("vocab_size=100", "embed_tokens.weight' the shape [100, 32]")),
    ("head_dim", 16, ("head_dim=16", "q_proj.weight' the shape [64, 32]")),
    ("head_dim", 9, ("head_dim is 9; expected an even number",)),
    ("hidden_size", "32", ('hidden_size is "32" (a string)',)),
    ("vocab_size", True, ("vocab_size is true (a boolean)",)),
    ("intermediate_size", 0, ("intermediate_size is 0; expected a whole number from 1",)),
    ("pad_token_id", 128, ("pad_token_id is 128; expected null or a token id below vocab_size",)),
], ids=lambda v: str(v) if not isinstance(v, tuple) else "")
def test_widths_disagreeing_with_tensors_are_refused(seeds, key, value, needles):
    refused(seeds["llama"], set_config(**{key: value}), "config.json", *needles)


@pytest.mark.parametrize("arch, key, value, needle", [
    ("gpt2", "n_embd", 64, "'transformer.wte.weight' the shape [128, 64]"),
    ("gpt2", "n_positions", 64, "'transformer.wpe.weight' the shape [64, 32]"),
    ("gpt2", "n_inner", 64, "mlp.c_fc.weight' the shape [32, 64]"),
    ("gpt2", "n_head", 5, "n_embd is 32; expected a multiple of n_head (5)"),
    ("gpt2", "hidden_size", 64, "hidden_size is 64; expected 32, the same as n_embd"),
    ("gpt_neox", "hidden_size", 64, "gpt_neox.embed_in.weight' the shape [128, 64]"),
    ("gpt_neox", "num_attention_heads", 3, "hidden_size is 32; expected a multiple of"),
    ("phi3", "num_key_value_heads", 4, "qkv_proj.weight' the shape [96, 32]"),
    ("phi3", "intermediate_size", 48, "gate_up_proj.weight' the shape [96, 32]"),
    ("qwen2", "num_key_value_heads", 1, "k_proj.weight' the shape [8, 32]"),
    ("qwen3", "head_dim", 4, "q_proj.weight' the shape [16, 32]"),
    ("qwen3", "head_dim", None, "head_dim is null; expected a whole number"),
    ("mistral", "num_key_value_heads", None, "num_key_value_heads is null"),
    ("mistral", "sliding_window", "4096", 'sliding_window is "4096" (a string)'),
])
def test_each_architecture_checks_its_widths(seeds, arch, key, value, needle):
    refused(seeds[arch], set_config(**{key: value}), "config.json", needle)


@pytest.mark.parametrize("key, value, needle", [
    ("torch_dtype", "int8", "torch_dtype is \"int8\"; expected one of"),
    ("dtype", "auto", "dtype is \"auto\""),
    ("tie_word_embeddings", 1, "tie_word_embeddings is 1 (a whole number); expected true or "
                               "false"),
    ("tie_word_embeddings", "false", "tie_word_embeddings is \"false\""),
    ("rope_theta", -1.0, "rope_theta is -1.0; expected a positive finite number"),
    ("rope_theta", 0, "rope_theta is 0"),
    ("rope_parameters", {"rope_type": "default", "rope_theta": "x"},
     "rope_parameters.rope_theta is \"x\""),
    ("rope_parameters", {"rope_type": "linear", "rope_theta": 1e4}, "rope_parameters.factor is "
                                                                     "missing"),
    ("rope_parameters", {"rope_type": "bogus"}, "rope_parameters.rope_type is \"bogus\""),
    ("rope_parameters", [1], "rope_parameters is [1] (a list)"),
    ("rms_norm_eps", 0.0, "rms_norm_eps is 0.0; expected a small positive decimal number"),
    ("rms_norm_eps", 1, "rms_norm_eps is 1 (a whole number)"),
    ("layer_norm_eps", -1e-5, "layer_norm_eps is -1e-05"),
    ("max_position_embeddings", 0, "max_position_embeddings is 0; expected a whole number of "
                                   "positions"),
    ("max_position_embeddings", 128.0, "max_position_embeddings is 128.0 (a decimal number)"),
    ("hidden_act", "nope", "hidden_act is \"nope\"; expected an activation"),
    ("model_type", "mistral", "model_type is \"mistral\"; expected \"llama\""),
    ("architectures", "LlamaForCausalLM", "architectures is \"LlamaForCausalLM\" (a string)"),
    ("architectures", [], "architectures is []"),
    ("architectures", ["BertModel"], "unsupported architecture BertModel"),
    ("layer_types", ["full_attention"], "layer_types has 1 entry; expected one per layer"),
    ("layer_types", ["full_attention", "x"], "layer_types[1] is \"x\""),
    ("initializer_range", 2.0, "initializer_range is 2.0"),
    ("id2label", {"a": "b"}, "id2label is {\"a\": \"b\"}"),
    ("use_cache", "yes", "use_cache is \"yes\" (a string); expected true or false"),
])
def test_config_values_are_checked(seeds, key, value, needle):
    refused(seeds["llama"], set_config(**{key: value}), "config.json", needle)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(seeds, text):
    def edit(d: Path) -> None:
        raw = (d / "config.json").read_text()
        (d / "config.json").write_text(raw.replace('"rms_norm_eps": 1e-06',
                                                   f'"rms_norm_eps": {text}'))

    refused(seeds["llama"], edit, "rms_norm_eps is", "not a finite number")


def set_shard(name: object, tensor: str | None = None) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        index = json.loads((d / INDEX).read_text())
        index["weight_map"][tensor or next(iter(index["weight_map"]))] = name
        (d / INDEX).write_text(json.dumps(index))

    return edit


@pytest.mark.parametrize("name, needle", [
    ("evil.bin", 'names "evil.bin"; expected a .safetensors file'),
    ("/etc/passwd", "a file outside"),
    ("/tmp/model-00001-of-00002.safetensors", "a file outside"),
    ("../model-00001-of-00002.safetensors", "a file outside"),
    ("sub/model.safetensors", "a file outside"),
    ("..\\model.safetensors", "a file outside"),
    ("..", "a file outside"),
    ("", "a file outside"),
    ("model\0.safetensors", "expected a plain file name"),
    ("model\n.safetensors", '"model\\n.safetensors"; expected a plain file name'),
    ("missing.safetensors", "missing.safetensors: missing"),
    (5, "is 5; expected a file name"),
    (None, "is null; expected a file name"),
], ids=["bin", "absolute", "absolute-st", "dotdot", "subdir", "backslash", "parent", "empty",
        "nul", "newline", "missing", "int", "null"])
def test_index_naming_a_file_outside_or_not_safetensors_is_refused(seeds, name, needle):
    refused(seeds["sharded"], set_shard(name), needle)


@pytest.mark.parametrize("index, needle", [
    ({}, "weight_map is null"), ({"weight_map": []}, "weight_map is []"),
    ({"weight_map": {}}, "weight_map is {}"), ([], "holds a list"),
], ids=["no-map", "list-map", "empty-map", "list"])
def test_malformed_index_is_refused(seeds, index, needle):
    refused(seeds["sharded"], lambda d: (d / INDEX).write_text(json.dumps(index)), INDEX,
            needle)


def test_deep_index_is_refused(seeds):
    refused(seeds["sharded"], lambda d: (d / INDEX).write_text(_nest(100_000)), INDEX,
            "nested more than 64 levels")


def test_shard_linked_out_of_the_directory_is_refused(seeds):
    def edit(d: Path) -> None:
        shard = d / "model-00001-of-00002.safetensors"
        outside = d.parent / "outside" / shard.name
        shard.rename(outside)
        shard.symlink_to(outside)

    refused(seeds["sharded"], edit, "model-00001-of-00002.safetensors: a link to",
            "outside the model directory")


def test_config_linked_out_of_the_directory_is_refused(seeds):
    def edit(d: Path) -> None:
        outside = d.parent / "outside" / "config.json"
        (d / "config.json").rename(outside)
        (d / "config.json").symlink_to(outside)

    refused(seeds["llama"], edit, "config.json: a link to", "outside the model directory")


def test_links_inside_the_directory_and_into_a_hub_cache_are_followed(seeds, tmp_path):
    repo = tmp_path / "models--x"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in sorted(seeds["llama"].iterdir()):
        blob = repo / "blobs" / f"blob-{f.name}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(Path("../../blobs") / blob.name)
    assert load_model("hub", snap).num_layers == LAYERS
    local = tmp_path / "local"
    shutil.copytree(seeds["llama"], local)
    (local / "model.safetensors").rename(local / "weights.data")
    (local / "model.safetensors").symlink_to("weights.data")
    assert load_model("local", local).num_layers == LAYERS


@pytest.mark.parametrize("what", ["fifo", "dir"])
def test_shard_that_is_not_a_regular_file_is_refused_without_blocking(seeds, what):
    def edit(d: Path) -> None:
        shard = d / "model-00002-of-00002.safetensors"
        shard.unlink()
        os.mkfifo(shard) if what == "fifo" else shard.mkdir()

    refused(seeds["sharded"], edit, "model-00002-of-00002.safetensors: not a regular file")


def test_config_that_is_a_fifo_is_refused_without_blocking(seeds):
    def edit(d: Path) -> None:
        (d / "config.json").unlink()
        os.mkfifo(d / "config.json")

    refused(seeds["llama"], edit, "config.json: not a regular file")


@pytest.mark.parametrize("how, needle", [
    ("gap", "bytes before tensor"),
    ("trailing", "belong to no tensor in the header"),
    ("bool-shape", "malformed shape"),
    ("bool-offset", "malformed data_offsets"),
    ("huge-dim", "malformed shape"),
    ("metadata", "__metadata__ is"),
    ("utf16", "not UTF-8"),
    ("leading-zero", "layer 1 does not have the same tensors as layer 0"),
    ("list-dtype", "has no known dtype ([\"F32\"])"),
    ("newline-name", 'tensor "bad\\nname" has no known dtype'),
])
def test_headers_the_safetensors_library_refuses_are_refused(seeds, how, needle):
    def edit(d: Path) -> None:
        f = d / "model.safetensors"
        header, body = read_st(f)
        names = sorted(k for k in header if k != "__metadata__")
        last = max(names, key=lambda k: header[k]["data_offsets"][1])
        entry = header[names[0]]
        if how == "gap":
            body += b"\0" * 4
            header[last]["data_offsets"] = [o + 4 for o in header[last]["data_offsets"]]
        elif how == "trailing":
            body += b"\0" * 4
        elif how == "bool-shape":
            entry["shape"] = [True] * len(entry["shape"])
        elif how == "bool-offset":
            entry["data_offsets"][0] = False
        elif how == "huge-dim":
            entry["shape"] = [2**64, 0]
        elif how == "newline-name":
            header["bad\nname"] = {**header.pop(names[0]), "dtype": "F33"}
        elif how == "list-dtype":
            entry["dtype"] = ["F32"]
        elif how == "metadata":
            header["__metadata__"] = {"format": 1}
        elif how == "leading-zero":
            name = next(n for n in names if ".layers.1." in n)
            header[name.replace(".layers.1.", ".layers.01.")] = header.pop(name)
        if how == "utf16":
            raw = json.dumps(header).encode("utf-16")
            f.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
        else:
            write_st(f, header, body)

    refused(seeds["llama"], edit, needle)


@pytest.mark.parametrize("arch, key, value, needle", [
    ("gpt2", "rope_parameters", {"rope_type": "default"}, "rope_parameters is"),
    ("gpt2", "layer_types", [], "layer_types has 0 entries; expected one per layer"),
    ("phi3", "layer_types", ["full_attention"], "layer_types has 1 entry"),
    ("phi3", "rope_parameters", {"rope_type": "linear", "factor": 2.0},
     "rope_parameters.rope_type is \"linear\""),
    ("phi3", "pad_token_id", "absent", "pad_token_id (by default) is 32000; expected null or a "
                                       "token id below vocab_size (128)"),
    ("gpt_neox", "hidden_dropout", None, "hidden_dropout is null; expected a probability"),
    ("mistral", "attention_dropout", None, "attention_dropout is null"),
])
def test_keys_transformers_reads_differently_per_architecture(seeds, arch, key, value, needle):
    def edit(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        if value == "absent":
            config.pop(key)
        else:
            config[key] = value
        (d / "config.json").write_text(json.dumps(config))

    refused(seeds[arch], edit, "config.json", needle)


@pytest.mark.parametrize("raw, needle", [
    (b"null", "holds null"),
    (b"[]", "holds a list"),
    (_nest(100_000).encode(), "nested more than 64 levels"),
    (b'{"max_new_tokens": 0}', "max_new_tokens is 0; expected null or a whole number"),
    (b'{"early_stopping": "x"}', 'early_stopping is "x"'),
    (b'{"suppress_tokens": 1}', "suppress_tokens is 1 (a whole number)"),
    (b'{"watermarking_config": {}}', "watermarking_config is {} (an object)"),
    (b'{"num_return_sequences": 2}', "num_return_sequences is 2; expected null or 1"),
    (b'{"eos_token_id": [2, "x"]}', 'eos_token_id[1] is "x" (a string)'),
], ids=["null", "list", "deep", "max_new_tokens", "early_stopping", "suppress", "watermark",
        "return_sequences", "eos"])
def test_generation_config_transformers_would_refuse_is_refused(seeds, raw, needle):
    refused(seeds["llama"], lambda d: (d / "generation_config.json").write_bytes(raw),
            "generation_config.json", needle)


BAD_FOR_EVERY_COMMAND = {
    "layers-string": set_config(num_hidden_layers="12"),
    "layers-huge": set_config(num_hidden_layers=10**12),
    "width": set_config(num_key_value_heads=4),
    "deep": write_config(_nest(100_000).encode()),
    "bom": lambda d: (d / "config.json").write_bytes(b"\xef\xbb\xbf{}"),
    "type": set_config(use_cache="yes"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOR_EVERY_COMMAND))
@pytest.mark.parametrize("command", ["eval", "prune"])
def test_eval_and_prune_refuse_what_check_refuses(seeds, command, case):
    """`eval` and `prune` hand the directory to transformers, after `load_model`."""
    with case_dir(seeds["llama"]) as d:
        BAD_FOR_EVERY_COMMAND[case](d)
        tasks, calib = d.parent / "t.jsonl", d.parent / "calib.txt"
        tasks.write_text('{"prompt": "1+1=", "answer": "2"}\n')
        calib.write_text("some calibration text\n")
        args = (["eval", str(d), "--tasks", str(tasks)] if command == "eval" else
                ["prune", str(d), "--method", "angular", "--calib", str(calib), "-o",
                 str(d.parent / "p.tr")])
        code, err = run_cli(*args)
        assert code == 1 and f"tailorc: error: {d}" in err, err


def test_common_problem_needs_no_architecture():
    assert common_problem({"architectures": ["X"], "model_type": "x"}) is None
    assert "architectures[0] is 5" in common_problem({"architectures": [5], "model_type": "x"})


def test_architecture_files_match_their_own_schema_and_a_bad_one_names_its_key(tmp_path):
    """arch/_architecture.json describes an architecture file; every shipped file passes it
    by jsonschema too, and a malformed one is refused naming the file and the key."""
    from jsonschema import Draft202012Validator

    from recipe_compiler.models.arch import ARCHITECTURE_SCHEMA, HERE, _load

    schema = json.loads((HERE / ARCHITECTURE_SCHEMA).read_text())
    Draft202012Validator.check_schema(schema)
    assert not set(_keywords(schema)) - SUPPORTED
    for path in sorted(HERE.glob("*.json")):
        if not path.name.startswith("_"):
            Draft202012Validator(schema).validate(json.loads(path.read_text()))
    bad = json.loads((HERE / "llama.json").read_text())
    bad["tied_embeddings"]["head"] = 5
    del bad["layer_shapes"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad.json: not a valid architecture file: "):
        _load(tmp_path / "bad.json")
