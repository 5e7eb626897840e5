"""mergekit configs in and out: goldens, round trips, and the same tensors as mergekit.

Goldens in tests/golden/mergekit/ (regenerate with TAILOR_UPDATE_GOLDEN=1, review the diff):
  in_X.yml -> in_X.tr (the imported recipe)      inerr_X.yml -> inerr_X.txt (the errors)
  out_X.tr -> out_X.yml (the exported config)    outerr_X.tr -> outerr_X.txt (the errors)
The build comparison runs mergekit-yaml from $TAILOR_MERGEKIT_YAML or PATH (skipped when
neither has it) on the fixture family and compares every output tensor with tailorc build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from recipe_compiler.interop.mergekit import export_recipe, import_config
from recipe_compiler.language.parser import parse, parse_file
from recipe_compiler.language.printer import compact_slots, format_recipe
from recipe_compiler.language.source import RecipeError, render_all

from .conftest import GOLDEN, check_golden

HERE = GOLDEN / "mergekit"
IMPORTS = sorted(HERE.glob("in_*.yml"))
IMPORT_ERRORS = sorted(HERE.glob("inerr_*.yml"))
EXPORTS = sorted(HERE.glob("out_*.tr"))
EXPORT_ERRORS = sorted(HERE.glob("outerr_*.tr"))


def _rel(path: Path) -> str:
    """Goldens name files relative to the repository, whatever the working directory."""
    return str(path.relative_to(HERE.parent.parent.parent))


def _import(path: Path):
    return import_config(path.read_text(), _rel(path))


@pytest.mark.parametrize("path", IMPORTS, ids=[p.stem for p in IMPORTS])
def test_import_golden(path):
    recipe = _import(path)
    text = format_recipe(recipe)
    check_golden(path.with_suffix(".tr"), text)
    assert parse(text) == recipe


@pytest.mark.parametrize("path", IMPORTS, ids=[p.stem for p in IMPORTS])
def test_import_export_import(path):
    recipe = _import(path)
    exported = export_recipe(recipe)
    again = import_config(exported, "exported.yml")
    assert again == recipe
    assert export_recipe(again) == exported


@pytest.mark.parametrize("path", IMPORT_ERRORS, ids=[p.stem for p in IMPORT_ERRORS])
def test_import_errors(path):
    with pytest.raises(RecipeError) as exc:
        _import(path)
    check_golden(path.with_suffix(".txt"), render_all(exc.value.diagnostics, exc.value.source)
                 + "\n")


@pytest.mark.parametrize("path", EXPORTS, ids=[p.stem for p in EXPORTS])
def test_export_golden_and_back(path):
    recipe = parse(path.read_text(), _rel(path))
    exported = export_recipe(recipe)
    check_golden(path.with_suffix(".yml"), exported)
    back = import_config(exported, "exported.yml")
    # dropped slots vanish and later slots move up, so compare what each output layer does
    assert _layers(back) == _layers(recipe)


def _layers(recipe) -> list[tuple]:
    """(operation without its layer, source layer, base model path) per kept slot."""
    from dataclasses import replace

    from recipe_compiler.language.recipe import Drop

    paths = {m.name: m.path for m in recipe.models}
    out = []
    for i, op in enumerate(recipe.ops()):
        if isinstance(op, Drop):
            continue
        layer = op.layer if op.layer is not None else i
        names = (op.model,) if hasattr(op, "model") else op.models
        out.append((type(op).__name__, tuple(paths[n] for n in names),
                    replace(op, layer=None, **({"model": ""} if hasattr(op, "model") else
                                               {"models": ()})), layer))
    return out + [("base", paths[recipe.base_name], recipe.dtype)]


@pytest.mark.parametrize("path", EXPORT_ERRORS, ids=[p.stem for p in EXPORT_ERRORS])
def test_export_errors(path):
    recipe = parse(path.read_text(), _rel(path))
    with pytest.raises(RecipeError) as exc:
        export_recipe(recipe)
    from recipe_compiler.language.source import Source

    check_golden(path.with_suffix(".txt"),
                 render_all(exc.value.diagnostics, Source(_rel(path), path.read_text())) + "\n")


def test_names_are_sanitised_and_unique():
    text = """
slices:
  - sources:
      - {model: "org/Llama-3.1 8B", layer_range: [0, 2]}
  - sources:
      - {model: "other/Llama-3.1 8B", layer_range: [2, 3]}
  - sources:
      - {model: "./9drop/", layer_range: [3, 4]}
  - sources:
      - {model: "org/Llama-3.1 8B", layer_range: [4, 5]}
merge_method: passthrough
"""
    recipe = import_config(text, "names.yml")
    assert [(m.name, m.path) for m in recipe.models] == [
        ("Llama-3_1_8B", "org/Llama-3.1 8B"), ("Llama-3_1_8B_2", "other/Llama-3.1 8B"),
        ("m_9drop", "./9drop/")]
    assert parse(format_recipe(recipe)) == recipe


def test_yaml_syntax_error_has_a_position():
    with pytest.raises(RecipeError) as exc:
        import_config("slices:\n  - sources: [\n", "bad.yml")
    assert render_all(exc.value.diagnostics).startswith("bad.yml:3:1: error: not valid YAML")


def test_import_keeps_the_name_or_takes_the_file_stem():
    text = ("slices:\n  - sources: [{model: fam/base, layer_range: [0, 4]}]\n"
            "merge_method: passthrough\n")
    assert import_config(text, "dir/prune.yml").name == "prune"
    assert import_config(text, "<config>").name is None
    named = import_config("name: tiny-pruned\n" + text, "dir/prune.yml")
    assert named.name == "tiny-pruned"
    assert yaml.safe_load(export_recipe(named))["name"] == "tiny-pruned"


def test_import_writes_ranges_drops_and_repeats_as_a_person_would():
    text = """
slices:
  - sources: [{model: fam/base, layer_range: [2, 5]}]
  - sources: [{model: fam/base, layer_range: [3, 4]}]
  - sources: [{model: fam/base, layer_range: [7, 8]}]
merge_method: passthrough
"""
    printed = format_recipe(import_config(text, "x.yml")).split("\n\n")[-1]
    assert printed == ("slot 0..2 = drop\nslot 2..5 = take(base)\nslot 5    = take(base, layer=3)"
                       "\nslot 6    = drop\nslot 7    = take(base)\n")


def test_export_reports_each_problem_once_per_declaration():
    recipe = parse((HERE / "outerr_repeat.tr").read_text(), "r.tr")
    with pytest.raises(RecipeError) as exc:
        export_recipe(recipe)
    assert [d.span.line for d in exc.value.diagnostics] == [6, 7, 8]


def test_take_in_a_task_arithmetic_config_is_copied_not_recomputed():
    """base + 1 * (m - base) is m only up to rounding; a slice whose own base_model is m is
    m's tensor itself (mergekit merges no task vector)."""
    recipe = parse('model base = "fam/base"\nmodel math = "fam/math"\n'
                   "slot 0 = take(math)\nslot 1 = merge(math, weights=[0.5], "
                   "method=task_arithmetic)\nslot 2 = merge(math, method=linear)\n")
    exported = export_recipe(recipe)
    slices = yaml.safe_load(exported)["slices"]
    assert [s.get("base_model") for s in slices] == [None, "fam/math", None, "fam/math", None]
    assert slices[3]["sources"] == [{"model": "fam/math", "layer_range": [2, 3]}]
    back = import_config(exported, "back.yml")
    assert [type(op).__name__ for op in back.ops()] == ["Take", "Merge", "Take"]


# --- fmt: the compact form --------------------------------------------------------------


def test_fmt_joins_adjacent_equal_declarations():
    r = parse('model a = "x"\nslot 0 = take(a)\nslot 1 = take(a)\nslot 2..4 = take(a)\n'
              "slot 4 = drop\nslot 5 = drop\nslot 6 = take(a, layer=2)\n"
              "slot 7 = take(a, layer=2)\nslot 8 = ?\nslot 9 = ?\nslot 10 = take(a)\n")
    text = format_recipe(r)
    assert text.split("\n\n")[1] == (
        "slot 0..4 = take(a)\nslot 4..6 = drop\nslot 6    = take(a, layer=2)\n"
        "slot 7    = take(a, layer=2)\nslot 8    = ?\nslot 9    = ?\nslot 10   = take(a)\n")
    assert parse(text) == compact_slots(r) and parse(text).ops() == r.ops()


def test_fmt_leaves_commented_declarations_alone():
    text = ('model a = "x"\n\nslot 0    = take(a)\n# the second one matters\n'
            "slot 1    = take(a)\nslot 2    = take(a)  # so does this\nslot 3    = take(a)\n"
            "slot 4    = take(a)\n")
    assert format_recipe(parse(text)) == text.replace("slot 3    = take(a)\nslot 4    = take(a)",
                                                      "slot 3..5 = take(a)")


# --- the same tensors as mergekit ---------------------------------------------------------


def _mergekit_yaml() -> str | None:
    return os.environ.get("TAILOR_MERGEKIT_YAML") or shutil.which("mergekit-yaml")


@pytest.mark.slow
@pytest.mark.skipif(_mergekit_yaml() is None, reason="mergekit-yaml not found (set "
                    "TAILOR_MERGEKIT_YAML=/path/to/mergekit-yaml)")
@pytest.mark.parametrize("path", IMPORTS, ids=[p.stem for p in IMPORTS])
def test_same_tensors_as_mergekit(path, family_root, tmp_path):
    import torch
    from safetensors.torch import load_file

    from recipe_compiler.cli import main

    if "dare" in path.stem:  # DARE's drop is random: equal in distribution (test_methods.py)
        pytest.skip("DARE drops at random: mergekit's and tailor's masks differ by design")

    work = family_root / "mk" / path.stem
    work.mkdir(parents=True)
    config = work.parent.parent / f"{path.stem}.yml"  # fam/ resolves from family_root
    shutil.copy(path, config)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([_mergekit_yaml(), config.name, str(work / "mergekit"),
                           "--no-copy-tokenizer", "--no-write-model-card"],
                          cwd=family_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    recipe_file = family_root / f"{path.stem}.tr"
    recipe_file.write_text(format_recipe(_import(path)))
    assert main(["build", str(recipe_file), "-o", str(work / "tailor"), "--device", "cpu"]) == 0
    theirs = _tensors(work / "mergekit", load_file)
    ours = _tensors(work / "tailor", load_file)
    assert sorted(theirs) == sorted(ours)
    # passthrough is bytes moved: equal; merges may round differently (mergekit batches)
    exact = all(type(d.op).__name__ == "Take" for d in parse_file(recipe_file).slots)
    for name, t in theirs.items():
        assert t.dtype == ours[name].dtype, name
        if exact:
            assert torch.equal(t, ours[name]), name
        else:
            torch.testing.assert_close(ours[name], t, rtol=1e-5, atol=1e-6, msg=name)


def _tensors(directory: Path, load_file) -> dict:
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(f))
    return out


# --- mergekit's own examples --------------------------------------------------------------

EXAMPLES = sorted((Path(__file__).parent / "data" / "mergekit_examples").glob("*.yml"))
REFUSED_EXAMPLES = {"arcee_fusion": "merge_method 'arcee_fusion' cannot be expressed"}
# stand-ins for the models the examples name: (family directory, architecture, models)
STAND_INS = (
    ("psmathur", "llama", ("orca_mini_v3_13b",)),
    ("garage-bAInd", "llama", ("Platypus2-13B",)),
    ("WizardLM", "llama", ("WizardLM-13B-V1.2", "WizardMath-13B-V1.0")),
    ("TheBloke", "llama", ("Llama-2-13B-fp16",)),
    ("mistralai", "mistral", ("Mistral-7B-v0.1", "Mistral-7B-Instruct-v0.2")),
    ("BioMistral", "mistral", ("BioMistral-7B",)),
)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_mergekit_examples_import_or_are_refused_at_their_line(path):
    if path.stem in REFUSED_EXAMPLES:
        with pytest.raises(RecipeError) as exc:
            _import(path)
        assert REFUSED_EXAMPLES[path.stem] in render_all(exc.value.diagnostics, None)
        return
    recipe = _import(path)
    text = format_recipe(recipe)
    assert parse(text, "x.tr") == compact_slots(recipe)
    check_golden(GOLDEN / "mergekit" / "examples" / f"{path.stem}.tr", text)
    exported = export_recipe(recipe)  # Hub ids stay Hub ids; whole-model stays `models:`
    check_golden(GOLDEN / "mergekit" / "examples" / f"{path.stem}.out.yml", exported)
    assert import_config(exported, "exported.yml") == recipe


@pytest.fixture(scope="module")
def example_root(tmp_path_factory) -> Path:
    """The examples' models as tiny stand-ins of the same architecture, 40 layers deep,
    at the paths the examples name (a local directory wins over a Hub id)."""
    from recipe_compiler.zoo.families import make_family

    root = tmp_path_factory.mktemp("examples")
    for seed, (org, arch, names) in enumerate(STAND_INS):
        make_family(root / org, arch, names, layers=40, seed=seed + 1)
    return root


@pytest.mark.slow
@pytest.mark.skipif(_mergekit_yaml() is None, reason="mergekit-yaml not found (set "
                    "TAILOR_MERGEKIT_YAML=/path/to/mergekit-yaml)")
@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem not in REFUSED_EXAMPLES],
                         ids=[p.stem for p in EXAMPLES if p.stem not in REFUSED_EXAMPLES])
def test_examples_build_the_same_tensors_as_mergekit(path, example_root):
    """Each imported example, built by both tools on the stand-ins. The examples ask for
    float16, in which mergekit also computes; the copy built here says float32 so that
    both compute alike (tailor always merges in float32) and rtol 1e-5 means something."""
    import torch
    from safetensors.torch import load_file

    from recipe_compiler.cli import main

    text = path.read_text().replace("dtype: float16", "dtype: float32")
    config = example_root / path.name
    config.write_text(text)
    out = example_root / "out" / path.stem
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([_mergekit_yaml(), config.name, str(out / "mergekit"),
                           "--no-copy-tokenizer", "--no-write-model-card"],
                          cwd=example_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    recipe_file = example_root / f"{path.stem}.tr"
    recipe_file.write_text(format_recipe(import_config(text, str(config))))
    assert main(["build", str(recipe_file), "-o", str(out / "tailor"), "--device", "cpu"]) == 0
    theirs = _tensors(out / "mergekit", load_file)
    ours = _tensors(out / "tailor", load_file)
    assert sorted(theirs) == sorted(ours)
    recipe = parse_file(recipe_file)
    exact = all(type(d.op).__name__ == "Take" for d in recipe.slots + recipe.parts)
    # and `tailorc export` of the recipe builds the same in mergekit
    exported = example_root / f"{path.stem}.exported.yml"
    exported.write_text(export_recipe(recipe))
    done = subprocess.run([_mergekit_yaml(), exported.name, str(out / "exported"),
                           "--no-copy-tokenizer", "--no-write-model-card"],
                          cwd=example_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    again = _tensors(out / "exported", load_file)
    for name, t in theirs.items():
        assert t.dtype == ours[name].dtype == again[name].dtype, name
        if exact:
            assert torch.equal(t, ours[name]) and torch.equal(t, again[name]), name
        else:
            torch.testing.assert_close(ours[name], t, rtol=1e-5, atol=1e-6, msg=name)
            torch.testing.assert_close(again[name], t, rtol=1e-5, atol=1e-6, msg=name)
