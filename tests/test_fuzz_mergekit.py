"""Fuzzing `tailorc import`: every mergekit config ends in a Recipe or in diagnostics, fast.

The property (`outcome`): `import_config(text, path)` returns a Recipe, whose printed text
encodes as UTF-8 and parses back to it, which `export_recipe` writes as a config or refuses
with diagnostics, and whose exported config imports back to the same recipe; or it raises a
RecipeError whose diagnostics point into `path` and render. Never another exception, and
within `LIMIT_S` seconds (a SIGALRM guard turns a hang into a failure). The CLI property
(`cli_outcome`): `tailorc import CONFIG -o OUT` exits 0 having written OUT, or 1 having
written nothing, within `LIMIT_S` seconds too.

Three generators and a list:
- configs drawn as data (plausible slices of the fixture family's models, every merge
  method, parameters with aliases and merge keys) with hostile values put in at random
  places: NaN, infinities, 5000-digit numbers, unknown tags, huge layer ranges, odd names;
- the shipped goldens (tests/golden/mergekit/*.yml) mutated as text (lines deleted,
  duplicated, swapped, truncated, hostile snippets inserted) and as bytes (flipped, with
  invalid UTF-8 kept as lone surrogates for the API and as bytes for the CLI);
- the same inputs through the CLI;
- `HOSTILE`: the cases a first fuzzing round found (50 internal errors, 6 hangs in 615
  cases) and the limits, each an explicit regression test.

The default run draws `FAST` examples per test, derandomised; `pytest -m slow` draws `SLOW`
random ones. Counts are in docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipe_compiler.cli import main
from recipe_compiler.interop.mergekit import (
    MAX_ALIASED_NODES,
    MAX_CHARS,
    MAX_NODES,
    METHODS,
    export_recipe,
    import_config,
)
from recipe_compiler.language.parser import parse
from recipe_compiler.language.printer import compact_slots, format_recipe
from recipe_compiler.language.recipe import Recipe
from recipe_compiler.language.source import RecipeError, Source, render, render_all
from tests.deadline import deadline

from .test_fuzz import recipes

GOLDENS = sorted((Path(__file__).parent / "golden" / "mergekit").glob("*.yml"))
LIMIT_S = 10  # the worst case allowed by the limits takes ~1 s; a hang takes forever
FAST = {"configs": 150, "mutated": 150, "bytes": 50, "cli": 40, "fmt": 100}
SLOW = {"configs": 2000, "mutated": 1500, "bytes": 500, "cli": 500, "fmt": 1000}


def fast(name: str):
    return settings(max_examples=FAST[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def slow(name: str):
    return settings(max_examples=SLOW[name], deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# --- the properties -----------------------------------------------------------------------


def outcome(text: str, path: str = "fuzz.yml") -> Recipe | RecipeError:
    """The import property; the recipe, or the error."""
    try:
        with deadline(LIMIT_S):
            recipe = import_config(text, path)
    except RecipeError as exc:
        _assert_diagnostics(exc, text, path)
        return exc
    printed = format_recipe(recipe)
    printed.encode("utf-8")  # a lone surrogate would fail here, and in the CLI's write
    assert parse(printed, "printed.tr") == compact_slots(recipe) == recipe, printed
    _assert_exports(recipe)
    return recipe


def _assert_diagnostics(exc: RecipeError, text: str, path: str) -> None:
    assert exc.diagnostics, "a RecipeError without diagnostics"
    for d in exc.diagnostics:
        assert d.span is not None and d.span.file == path, d
        assert d.severity == "error" and d.message
        assert render(d, exc.source).startswith(path)
    render_all(exc.diagnostics, Source(path, text)).encode("utf-8", "surrogateescape")


def _assert_exports(recipe: Recipe) -> None:
    """What import reads, export writes exactly or refuses; what export writes, import reads
    back to the same recipe."""
    try:
        exported = export_recipe(recipe)
    except RecipeError as exc:
        assert exc.diagnostics
        return
    assert import_config(exported, "fuzz.yml") == recipe, exported


def cli_outcome(tmp: Path, data: bytes) -> int:
    config, out = tmp / "fuzz.yml", tmp / "fuzz.tr"
    config.write_bytes(data)
    out.unlink(missing_ok=True)
    with deadline(LIMIT_S):
        code = main(["import", str(config), "-o", str(out)])
    assert code in (0, 1), code
    if code == 0:
        assert isinstance(parse(out.read_text(encoding="utf-8"), str(out)), Recipe)
    else:
        assert not out.exists(), "an error, yet something was written"
    return code


# --- 1. configs drawn as data -------------------------------------------------------------

MODELS = ("fam/base", "fam/math", "fam/code")
ODD_MODELS = ("", "fam/base+lora", "a/b c", "é/模型", "true", "slot", "x" * 300, "../x/", "-1",
              "a\nb", "\t", "a\x00b", "\u2028", 7, None, ["fam/base"], {"a": 1})
# Text put in place of a value after dumping (PyYAML cannot dump most of these itself).
RAW = ("9" * 5000, "1" + "0" * 400, ".nan", ".inf", "-.inf", "1e999", "-0.0", "0x1F", "0o17",
       "!!python/object/apply:os.system [ls]", "!!binary ZZZ=", "!!timestamp 2001-99-99",
       "!!float abc", "!!int 12x", "!!set {a, b}", "!!omap [a, b]", "<<", "*nowhere", "~",
       "[]", "{}", "[0, 1000000000000]", "[-1, 2]", "[2.5, 3]", "[true, false]", "[0, 1, 2]",
       '"\\ud800"', '"\\x00"', '"\\U0010FFFF"', "'it''s'", "&a [*a]", "[", "{", "]", ": :",
       "|\n  block", ">-\n  folded", "!custom 3", "2001-12-14", "yes", "Off", "=", "? a")
PARAM_NAMES = ("weight", "density", "normalize", "t", "scale", "int8_mask", "rescale",
               "lambda", "gamma", "epsilon", "filter")


def rarely(draw, one_in: int) -> bool:
    """True about once in `one_in` draws (hypothesis favours the ends of a range, so the
    value asked for is one in the middle)."""
    return draw(st.integers(0, 2 * one_in - 2)) == one_in - 1


@st.composite
def values(draw, name: str):
    """A parameter value: mostly plausible, sometimes hostile."""
    if not rarely(draw, 8):
        if name == "scale":
            s = draw(st.sampled_from((0.5, 0.0, 2)))
            return draw(st.sampled_from((1, [{"filter": "o_proj", "value": s}, {
                "filter": "down_proj", "value": s}, {"value": 1.0}])))
        return draw(st.booleans() if name in ("normalize", "int8_mask", "rescale") else
                    st.sampled_from((0.5, 1.0, 1, 0.3, 0.7)))
    return draw(st.one_of(
        st.floats(-3, 3),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**30), 10**30),
        st.sampled_from(("x", None, [], {}, [0.1, 0.9], [True], "RAW")),
        st.lists(st.fixed_dictionaries({}, optional={
            "filter": st.sampled_from(("o_proj", "down_proj", "*", None, "", 3, ["o_proj"],
                                       {"o_proj": 1})),
            "value": st.sampled_from((0.5, 1.0, 1, -1, None, [0.5, 1], "x", float("nan"))),
            "other": st.just(1)}), max_size=4),
    ))


@st.composite
def parameters(draw, method: str, shared: list) -> dict | None:
    names = PARAMETERS_FOR.get(method, ("weight",)) + PARAM_NAMES
    known = st.sampled_from(names[:len(PARAMETERS_FOR.get(method, ("weight",)))])
    keys = draw(st.lists(st.sampled_from(names) if rarely(draw, 8) else known, max_size=3,
                         unique=True))
    if "weight" in PARAMETERS_FOR.get(method, ()) and "weight" not in keys \
            and not rarely(draw, 10):
        keys.append("weight")
    params = {k: draw(values(k)) for k in keys}
    if shared and rarely(draw, 5):
        params = draw(st.sampled_from(shared))  # the same dict twice: PyYAML writes an alias
    elif shared and rarely(draw, 5):
        params = {"MERGE_KEY": draw(st.sampled_from(shared)), **params}  # becomes `<<:`
    shared.append(params)
    return params or None


PARAMETERS_FOR = {"passthrough": ("scale",), "linear": ("weight", "normalize"),
                  "task_arithmetic": ("weight", "normalize"), "ties": ("weight", "density"),
                  "slerp": ("t",)}


@st.composite
def sources(draw, method: str, start: int, n: int, shared: list) -> list[dict]:
    models = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True))
    if method in ("task_arithmetic", "ties", "slerp") and "fam/base" not in models:
        models = ["fam/base"] + models[:2]
    if method == "passthrough":
        models = models[:1]
    elif method == "slerp" and not rarely(draw, 5):
        models = ["fam/base", draw(st.sampled_from(MODELS[1:]))]
    out = []
    for model in models:
        src: dict = {"model": draw(st.sampled_from(ODD_MODELS)) if rarely(draw, 40) else model,
                     "layer_range": [start, start + n]}
        if rarely(draw, 30):
            src["layer_range"] = draw(st.sampled_from(([start, start + n + 1], [n, start],
                                                       [0, 2**40], None, "0-4", [start])))
        if params := draw(parameters(method, shared)):
            src["parameters"] = params
        out.append(src)
    return out


@st.composite
def configs(draw) -> dict:
    # slerp configs are always refused (ends merged): drawn less often
    method = draw(st.sampled_from(("dare_ties", "", None, 3, "slerp") if rarely(draw, 10)
                                  else METHODS[:4]))
    shared: list = []  # parameter dicts, to be used again (aliases, merge keys)
    config: dict = {"merge_method": method, "slices": draw(slice_list(str(method), shared)),
                    "base_model": "fam/base"}
    optional = {"base_model": st.sampled_from(MODELS + ODD_MODELS[:4]),
                "dtype": st.sampled_from(("float32", "bfloat16", "float16", "torch.float16",
                                          "int8", None)),
                "out_dtype": st.sampled_from(("bfloat16", "float32", "x")),
                "name": st.sampled_from(("merged", "", "a\nb", 3, "é")),
                "parameters": parameters(str(method), shared),
                "tokenizer_source": st.just("union"), "models": st.just([]),
                "residual": st.just(1)}
    for key in draw(st.lists(st.sampled_from(sorted(optional)), max_size=3, unique=True)):
        if key in ("dtype", "parameters") or rarely(draw, 3):
            config[key] = draw(optional[key])
    return config


@st.composite
def slice_list(draw, method: str, shared: list) -> list[dict]:
    """Mostly: the base model alone (zero-length) first and last, slices in between."""
    base_alone = {"sources": [{"model": "fam/base", "layer_range": [0, 0]}]}
    if method == "linear":
        base_alone["sources"][0]["parameters"] = {"weight": 1.0}
    slices, layer = [base_alone] if not rarely(draw, 6) else [], 0
    for _ in range(draw(st.integers(0, 4)) if rarely(draw, 10) else draw(st.integers(1, 4))):
        n = draw(st.integers(0, 4)) if rarely(draw, 5) else draw(st.integers(1, 4))
        start = draw(st.sampled_from((layer, layer, max(0, layer - 2), layer + 1)))
        sl: dict = {"sources": draw(sources(method, start, n, shared))}
        if rarely(draw, 6):
            sl["base_model"] = draw(st.sampled_from(MODELS))
        if rarely(draw, 4) and (params := draw(parameters(method, shared))):
            sl["parameters"] = params
        slices.append(sl)
        layer = start + n
    return slices + ([base_alone] if not rarely(draw, 6) else [])


@st.composite
def config_texts(draw) -> str:
    config = draw(configs())
    if rarely(draw, 20):  # a structure that contains itself
        config["parameters"] = loop = {}
        loop["weight"] = loop
    text = yaml.safe_dump(config, sort_keys=draw(st.booleans()),
                          default_flow_style=draw(st.sampled_from((None, False, True))))
    text = text.replace("MERGE_KEY", "<<")
    while "RAW" in text:
        text = text.replace("RAW", draw(st.sampled_from(RAW)), 1)
    return text


@fast("configs")
@given(config_texts())
def test_configs_import_or_diagnose(text):
    outcome(text)


@pytest.mark.slow
@slow("configs")
@given(config_texts())
def test_configs_import_or_diagnose_slow(text):
    outcome(text)


def test_config_generator_reaches_recipes():
    """The generator is worth something only if some of its configs import."""
    found = {"ok": 0, "error": 0}

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(config_texts())
    def run(text):
        found["ok" if isinstance(outcome(text), Recipe) else "error"] += 1

    run()
    assert found["ok"] >= 10 and found["error"] >= 10, found


# --- 2. the goldens, mutated --------------------------------------------------------------

SEEDS = [p.read_text(encoding="utf-8") for p in GOLDENS]
SNIPPETS = RAW + ("  <<: *half\n", "&x ", "*x", "- ", "\t", "\ufeff", "\r\n", "---\n",
                  "...\n", "%YAML 1.1\n", "- {model: fam/base, layer_range: [0, 0]}\n",
                  "parameters: {weight: .nan}\n", "x: &b [*b]\n")


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        lines = text.split("\n")
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        kind = draw(st.sampled_from(("delete", "duplicate", "swap", "insert", "indent",
                                     "truncate", "token")))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "insert":
            col = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:col] + draw(st.sampled_from(SNIPPETS)) + lines[i][col:]
        elif kind == "indent":
            lines[i] = draw(st.sampled_from(("", " ", "  ", "\t"))) + lines[i].lstrip()
        elif kind == "truncate":
            lines = lines[:i]
        else:  # a value swapped for a hostile one
            head, sep, _ = lines[i].partition(": ")
            lines[i] = head + (sep or ": ") + draw(st.sampled_from(RAW))
        text = "\n".join(lines)
    return text


@fast("mutated")
@given(mutated())
def test_mutated_goldens_import_or_diagnose(text):
    outcome(text)


@pytest.mark.slow
@slow("mutated")
@given(mutated())
def test_mutated_goldens_import_or_diagnose_slow(text):
    outcome(text)


@st.composite
def mutated_bytes(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)).encode())
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


@fast("bytes")
@given(mutated_bytes())
def test_mutated_bytes_import_or_diagnose(data):
    outcome(data.decode("utf-8", "surrogateescape"))  # invalid UTF-8: lone surrogates


@pytest.mark.slow
@slow("bytes")
@given(mutated_bytes())
def test_mutated_bytes_import_or_diagnose_slow(data):
    outcome(data.decode("utf-8", "surrogateescape"))


# --- 3. the CLI -------------------------------------------------------------------------

CLI_INPUTS = st.one_of(config_texts().map(str.encode), mutated().map(str.encode),
                       mutated_bytes())


def test_cli_exits_0_or_1_and_writes_nothing_on_error(tmp_path):
    @fast("cli")
    @given(CLI_INPUTS)
    def run(data):
        cli_outcome(tmp_path, data)

    run()


@pytest.mark.slow
def test_cli_exits_0_or_1_and_writes_nothing_on_error_slow(tmp_path):
    @slow("cli")
    @given(CLI_INPUTS)
    def run(data):
        cli_outcome(tmp_path, data)

    run()


# --- 4. fmt's joined ranges (the form import writes) --------------------------------------


def _assert_fmt_property(recipe: Recipe) -> None:
    """What fmt prints parses back to the recipe with adjacent equal declarations joined,
    which gives every slot the same operation; printing that again changes nothing."""
    text = format_recipe(recipe)
    again = parse(text, "printed.tr")
    assert again == compact_slots(recipe), text
    assert again.ops() == recipe.ops()
    assert format_recipe(again) == text


@fast("fmt")
@given(recipes())
def test_fmt_joins_ranges_and_keeps_every_slot(recipe):
    _assert_fmt_property(recipe)


@pytest.mark.slow
@slow("fmt")
@given(recipes())
def test_fmt_joins_ranges_and_keeps_every_slot_slow(recipe):
    _assert_fmt_property(recipe)


# --- 5. what the first fuzzing round found, and the limits --------------------------------


def _bomb(levels: int, shape: str) -> str:
    """'billion laughs': each level lists the one before nine times."""
    lines = ["slices:", "  - sources:", "      - model: fam/base", "        layer_range: [0, 8]",
             "        parameters:", "          scale:"]
    for k in range(levels):
        prev = f"*l{k - 1}" if k else "1"
        if shape == "seq":
            lines.append(f"            - &l{k} [{', '.join([prev] * 9)}]")
        elif shape == "map":
            lines.append(f"            - &l{k} {{{', '.join(f'k{j}: {prev}' for j in range(9))}}}")
        else:  # merge keys, each level merging the one before nine times
            merged = ", ".join([prev if k else "{a: 1}"] * 9)
            lines.append(f"            - &l{k} {{<<: [{merged}]}}")
    return "\n".join(lines) + "\nmerge_method: passthrough\n"


def _ranges(*pairs: tuple[str, str]) -> str:
    body = "".join(f"  - sources:\n      - model: fam/base\n        layer_range: [{a}, {b}]\n"
                   for a, b in pairs)
    return f"slices:\n{body}merge_method: passthrough\n"


def _weight(value: str) -> str:
    return ("slices:\n  - sources:\n      - model: fam/base\n        layer_range: [0, 4]\n"
            f"        parameters: {{weight: {value}}}\nmerge_method: linear\n")


def _scale(entries: str) -> str:
    return ("slices:\n  - sources:\n      - model: fam/base\n        layer_range: [0, 4]\n"
            f"        parameters:\n          scale: {entries}\nmerge_method: passthrough\n")


def _slices(n: int, source: str) -> str:
    return "merge_method: passthrough\nslices:\n" + "".join(
        f"- sources: [{source.format(i=i, j=i + 1)}]\n" for i in range(n))


HOSTILE = {
    # hangs: alias bombs (three shapes) and a range counted through before it was checked
    "bomb-sequences": (_bomb(9, "seq"), "aliases expand to more than"),
    "bomb-mappings": (_bomb(9, "map"), "aliases expand to more than"),
    "bomb-merge-keys": (_bomb(9, "merge"), "aliases expand to more than"),
    "range-1e12": (_ranges(("0", "1000000000000")), "reaches layer 999999999999"),
    "range-past-limit": (_ranges(("0", "65537")), "tailor's limit is 65536 layers"),
    "ranges-sum-past-limit": (_ranges(("0", "65536"), ("0", "65536")), "more than 65536 layers"),
    # internal errors
    "empty-slices": ("slices: []\nmerge_method: passthrough\n", "'slices' lists no slice"),
    "null-slices": ("slices:\nmerge_method: passthrough\n", "'slices' must be a list"),
    "weight-nan": (_weight(".nan"), "must be a finite number, got nan"),
    "weight-inf": (_weight(".inf"), "must be a finite number, got inf"),
    "weight-minus-inf": (_weight("-.inf"), "must be a finite number, got -inf"),
    "weight-400-digits": (_weight("1" + "0" * 400), "must be a finite number"),
    "weight-5000-digits": (_weight("9" * 5000), "cannot read this value"),
    "scale-nan": (_scale("[{filter: o_proj, value: .nan}, {filter: down_proj, value: .nan}, "
                         "{value: 1}]"), "must be a finite number, got nan"),
    "scale-5000-digits": (_scale("[{filter: o_proj, value: " + "9" * 5000 + "}]"),
                          "cannot read this value"),
    "scale-scalar-inf": (_scale(".inf"), "must be a finite number, got inf"),
    "filter-null": (_scale("[{filter: null, value: 0.5}]"), "per-tensor filters"),
    "filter-list": (_scale("[{filter: [o_proj], value: 0.5}]"), "'filter' must be part of"),
    "filter-map": (_scale("[{filter: {a: 1}, value: 0.5}]"), "'filter' must be part of"),
    "filter-value-list": (_scale("[{filter: o_proj, value: [1, 2]}]"), "'value' must be"),
    "filter-value-map": (_scale("[{filter: o_proj, value: {a: 1}}]"), "'value' must be"),
    "filter-not-a-map": (_scale("[{filter: o_proj, value: 1}, 3]"), "must be a mapping"),
    "filter-unhashable-values": (_scale("[{filter: o_proj, value: [1]}, {filter: down_proj, "
                                        "value: [1]}, {value: 1}]"), "'value' must be"),
    "merge-key-scalar": ("<<: 3\nslices: []\nmerge_method: passthrough\n",
                         "a merge key '<<' takes a mapping"),
    "merge-key-out-of-place": (_weight("<<"), "cannot read this value"),
    "recursive-sequence": ("slices: &s [*s]\nmerge_method: passthrough\n",
                           "used inside its own anchor"),
    "recursive-mapping": ("slices:\n  - &s {sources: [{model: m, layer_range: [0, 1], "
                          "parameters: *s}]}\nmerge_method: passthrough\n",
                          "used inside its own anchor"),
    "recursive-merge-key": ("a: &a {<<: *a}\n", "used inside its own anchor"),
    "model-surrogate-escape": (_ranges(("0", "4")).replace("fam/base", '"fam/\\ud800"'),
                               None),  # libyaml: not YAML; PyYAML: the model is refused
    "model-nul": (_ranges(("0", "4")).replace("fam/base", '"fam/\\0x"'), "cannot hold"),
    "model-newline": (_ranges(("0", "4")).replace("fam/base", '"fam/\\nbase"'), "cannot hold"),
    "name-surrogate": ('name: "\\udc80"\n' + _ranges(("0", "4")), None),
    "text-surrogate": (_ranges(("0", "4")).replace("fam/base", "fam/\udc80"), "lone surrogate"),
    # limits and odd YAML
    "too-long": ("#" * (MAX_CHARS + 1), "tailor reads configs of up to"),
    "too-many-nodes": (_slices(MAX_NODES // 9, "{{model: m, layer_range: [0, 1]}}"),
                       "YAML nodes"),
    "nodes-under-limit": (_slices(MAX_NODES // 11, "{{model: m, layer_range: [{i}, {j}]}}"),
                          None),
    "many-errors": (_slices(1000, "{{model: m, layer_range: [5, 1]}}"),
                    "errors; the first 100 are shown"),
    "many-models-one-stem": (_slices(1000, "{{model: a{i}/x, layer_range: [0, 1]}}"), None),
    "aliases-under-limit": ("slices:\n  - &s {sources: [{model: fam/base, layer_range: [0, 1]}]}"
                            "\n" + "  - *s\n" * (MAX_ALIASED_NODES // 12) +
                            "merge_method: passthrough\n", None),
    "deep-flow": ("a: " + "[" * 10_000, "nest"),  # libyaml's scanner stops it at 1000
    "deep-block": ("".join("  " * i + "- \n" for i in range(200)), "deeper than"),
    "two-documents": ("a: 1\n---\nb: 2\n", "not valid YAML"),
    "undefined-alias": ("slices: *nowhere\n", "not valid YAML"),
    "python-tag": ("merge_method: !!python/object/apply:os.system [echo hi]\n", "cannot read"),
    "binary-tag": (_weight("!!binary ZZZ="), "must be a finite number"),
    "bad-binary-tag": (_weight("!!binary Z"), "cannot read"),
    "bad-timestamp": (_weight("!!timestamp 2001-99-99"), "cannot read"),
    "nul-byte": ("slices: \x00\n", "not valid YAML"),
    "bom-and-crlf": ("\ufeff" + _ranges(("0", "4")).replace("\n", "\r\n"), None),
    "only-a-comment": ("# nothing\n", "the config is empty"),
    "a-scalar": ("3\n", "must be a mapping"),
    "unhashable-key": ("? [a]\n: 1\n", "keys must be names"),
    "slerp-same-model-twice": ("slices:\n  - sources:\n      - {model: fam/base, layer_range: "
                               "[0, 4]}\n      - {model: fam/base, layer_range: [0, 4]}\n"
                               "merge_method: slerp\nbase_model: fam/base\nparameters: {t: 0.5}\n",
                               "a source of this slice twice"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_config(name, tmp_path):
    text, expected = HOSTILE[name]
    result = outcome(text, "hostile.yml")
    if expected is None:
        pass  # either outcome; the property is what matters
    elif isinstance(result, RecipeError):
        assert any(expected in d.message for d in result.diagnostics), str(result)[:2000]
    else:
        pytest.fail(f"imported, expected an error: {expected}")
    cli_outcome(tmp_path, text.encode("utf-8", "surrogateescape"))


# The same at the node limit: seconds each, on a busy machine.
AT_LIMIT = {
    "many-errors": _slices(MAX_NODES // 11, "{{model: m, layer_range: [5, 1]}}"),
    "many-models-one-stem": _slices(MAX_NODES // 11, "{{model: a{i}/x, layer_range: [0, 1]}}"),
    "many-models-used": _slices(MAX_NODES // 11, "{{model: a{i}/x, layer_range: [0, 1]}}")
    .replace("a0/x", "x").replace(f"a{MAX_NODES // 11 - 1}/x", "x"),
    "many-layers-repeated": _slices(MAX_NODES // 11, "{{model: m, layer_range: [60000, 60001]}}"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(AT_LIMIT))
def test_hostile_config_at_the_limit(name, tmp_path):
    outcome(AT_LIMIT[name], "hostile.yml")
    cli_outcome(tmp_path, AT_LIMIT[name].encode())


def test_merge_keys_mean_what_yaml_says():
    """`<<` gives the keys a mapping does not set itself, from the first mapping listed."""
    text = ("slices:\n  - sources:\n      - model: fam/base\n        layer_range: [0, 2]\n"
            "        parameters: &p {weight: 1.0}\n  - sources:\n"
            "      - {model: fam/math, layer_range: [2, 4], parameters: &q {weight: 0.5}}\n"
            "      - model: fam/code\n        layer_range: [2, 4]\n"
            "        parameters: {<<: [*q, *p], normalize: false}\n"
            "  - sources:\n      - {model: fam/base, layer_range: [4, 8], parameters: *p}\n"
            "merge_method: linear\n")
    merge = import_config(text, "m.yml").slots[1].op
    assert merge.weights == (0.5, 0.5) and merge.normalize is None  # normalize is per slice

