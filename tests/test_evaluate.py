"""Tests for recipe_compiler.evaluate: the batched evaluator against a naive reference.

The reference below scores one example at a time with no padding, no attention mask and no
position ids, straight from the formulas; the evaluator must agree with it for every batch size
on items of very different lengths, so padding, sorting, de-duplication and gathering are all
exercised. A stub model that emits crafted logits checks that exact match can reach 1.0.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from recipe_compiler.evaluate import (
    Task,
    TaskError,
    TaskScore,
    encode_pair,
    evaluate,
    greedy_generate,
    load_task,
    load_tasks,
    loglikelihoods,
    mean_score,
    rolling_token_logprobs,
    scores_to_json,
)

REPO = Path(__file__).resolve().parents[1]
HARNESS_DIR = REPO / "tests" / "data" / "harness"
MAX_LEN = 64  # small, so long items are truncated and the text spans several windows
BATCH_SIZES = [1, 3, 32]

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list(" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?!:;'\"-+=()\n")
# A few merges, so tokens span characters and context/continuation boundaries can shift.
MERGES = [("t", "h"), ("th", "e"), (" ", "t"), ("e", " "), ("i", "n"), ("a", "n"), ("an", "d")]

LONG = "In a hole in the ground there lived a hobbit, not a nasty dirty wet hole. " * 2
MC_ITEMS = [
    {"context": "The cat sat on the", "choices": [" mat", " moon", " and then left"], "gold": 0},
    {"context": "the ", "choices": ["end", "the end", "and"], "gold": 1},
    {"context": "x", "choices": ["y", "yy", "y y y y y y y y y y y y y y y"], "gold": 2},
    {"context": "", "choices": ["hello", "the world"], "gold": 0},
    {"context": LONG, "choices": [" hobbit-hole", " house"], "gold": 0},
    {"context": "The cat sat on the", "choices": [" mat", " rug"], "gold": 1},
    {"context": "Q: 2+2?\nA:", "choices": [" 4", " 5", " 22", " four"], "gold": 0},
]
GEN_ITEMS = [
    {"prompt": "Q: 1+1=", "answer": "2"},
    {"prompt": "Spell cat backwards:", "answer": " tac"},
    {"prompt": "a", "answer": "b"},
    {"prompt": LONG + "Say the:", "answer": "the"},
    {"prompt": "Q: 1+1=", "answer": "2"},
]
TEXT = "The quick brown fox jumps over the lazy dog. Then the dog and the fox sleep.\n" * 3


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS + ["".join(m) for m in MERGES])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=MERGES, unk_token="<unk>"))
    tok.add_special_tokens(SPECIALS)
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core box spinning threads crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LEN,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Naive reference: one example at a time, no padding, formulas spelled out.


def ref_encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    if context == "":
        cont = tok.encode(continuation, add_special_tokens=False)
        return ([tok.bos_token_id], cont) if cont[0] != tok.bos_token_id else (cont[:1], cont[1:])
    stripped = context.rstrip()
    whole = tok.encode(context + continuation)
    n_ctx = len(tok.encode(stripped))
    return whole[:n_ctx], whole[n_ctx:]


def ref_loglik(model, tok, context: str, continuation: str) -> float:
    ctx, cont = ref_encode_pair(tok, context, continuation)
    inputs = (ctx + cont)[:-1][-MAX_LEN:]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([inputs])).logits[0].double()
    total = 0.0
    for k, target in enumerate(cont):
        pos = len(inputs) - len(cont) + k
        row = logits[pos]
        total += float(row[target] - torch.logsumexp(row, dim=0))
    return total


def first_argmax(values: list[float]) -> int:
    return values.index(max(values))


def ref_mc_metrics(pair_lls: dict[tuple[str, str], float], items: list[dict]) -> dict[str, float]:
    acc = acc_norm = acc_bytes = 0
    for item in items:
        lls = [pair_lls[item["context"], c] for c in item["choices"]]
        acc += first_argmax(lls) == item["gold"]
        acc_norm += (
            first_argmax([ll / len(c) for ll, c in zip(lls, item["choices"])]) == item["gold"]
        )
        by_bytes = [ll / len(c.encode()) for ll, c in zip(lls, item["choices"])]
        acc_bytes += first_argmax(by_bytes) == item["gold"]
    n = len(items)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "acc_bytes": acc_bytes / n}


def ref_generate(model, tok, prompt: str, max_new: int) -> str:
    ids = tok.encode(prompt)[-(MAX_LEN - max_new) :]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(nxt)
            text = tok.decode(out, skip_special_tokens=True)
            if nxt == tok.eos_token_id or "\n" in text:
                break
    return tok.decode(out, skip_special_tokens=True).split("\n")[0]


def ref_token_logprobs(model, tok, text: str, window: int) -> list[float]:
    """Each token scored on its own, from the start of its window (lm-eval rolling windows)."""
    tokens = tok.encode(text, add_special_tokens=False)
    seq = [tok.bos_token_id] + tokens
    out = []
    with torch.no_grad():
        for t in range(len(tokens)):
            end = min((t // window + 1) * window, len(tokens))
            inputs = seq[max(0, end - window) : t + 1]
            row = model(input_ids=torch.tensor([inputs])).logits[0, -1].double()
            out.append(float(row[tokens[t]] - torch.logsumexp(row, dim=0)))
    return out


@pytest.fixture(scope="module")
def ref_pair_lls(model, tokenizer) -> dict[tuple[str, str], float]:
    pairs = {(it["context"], c) for it in MC_ITEMS for c in it["choices"]}
    return {p: ref_loglik(model, tokenizer, *p) for p in pairs}


@pytest.fixture(scope="module")
def ref_text_logprobs(model, tokenizer) -> list[float]:
    return ref_token_logprobs(model, tokenizer, TEXT, MAX_LEN)


@pytest.fixture(scope="module")
def ref_completions(model, tokenizer) -> list[str]:
    return [ref_generate(model, tokenizer, it["prompt"], 7) for it in GEN_ITEMS]


# --------------------------------------------------------------------------------------------
# The batched evaluator against the reference.


def test_encode_pair_matches_reference(tokenizer):
    for item in MC_ITEMS:
        for choice in item["choices"]:
            got = encode_pair(tokenizer, item["context"], choice)
            want = ref_encode_pair(tokenizer, item["context"], choice)
            assert (list(got[0]), list(got[1])) == want


def test_trailing_space_moves_to_continuation(tokenizer):
    ctx, cont = encode_pair(tokenizer, "the ", "end")
    assert tokenizer.decode(list(cont)) == " end"
    assert tokenizer.decode(list(ctx), skip_special_tokens=True) == "the"


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_loglikelihoods_match_reference(model, tokenizer, ref_pair_lls, batch_size):
    pairs = [(it["context"], c) for it in MC_ITEMS for c in it["choices"]]
    got = loglikelihoods(model, tokenizer, pairs, batch_size=batch_size, max_length=MAX_LEN)
    want = [ref_pair_lls[p] for p in pairs]
    assert got == pytest.approx(want, abs=1e-4)
    assert all(isinstance(x, float) for x in got)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_mc_metrics_match_reference(model, tokenizer, ref_pair_lls, tmp_path, batch_size):
    task = load_task(write_jsonl(tmp_path / "mc.jsonl", MC_ITEMS))
    score = evaluate(model, tokenizer, [task], batch_size=batch_size)["mc"]
    assert score.kind == "mc" and score.n == len(MC_ITEMS)
    assert score.metrics == ref_mc_metrics(ref_pair_lls, MC_ITEMS)
    assert score.primary == score.metrics["acc"]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_generation_matches_reference(model, tokenizer, ref_completions, tmp_path, batch_size):
    prompts = [it["prompt"] for it in GEN_ITEMS]
    got = greedy_generate(
        model, tokenizer, prompts, max_new_tokens=7, batch_size=batch_size, max_length=MAX_LEN
    )
    assert got == ref_completions

    task = load_task(write_jsonl(tmp_path / "gen.jsonl", GEN_ITEMS))
    score = evaluate(model, tokenizer, task, batch_size=batch_size, max_new_tokens=7)["gen"]
    want = [c.strip() == it["answer"].strip() for c, it in zip(ref_completions, GEN_ITEMS)]
    assert score.metrics == {"exact_match": sum(want) / len(want)}


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_perplexity_matches_reference(model, tokenizer, ref_text_logprobs, tmp_path, batch_size):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    want = ref_text_logprobs
    assert len(want) > 2 * MAX_LEN  # several windows, the last one partial
    got = rolling_token_logprobs(model, tokenizer, TEXT, window=MAX_LEN, batch_size=batch_size)
    assert got == pytest.approx(want, abs=1e-4)

    score = evaluate(model, tokenizer, [load_task(path)], batch_size=batch_size)["text"]
    nll = -sum(want) / len(want)
    assert score.n == len(want)
    assert score.metrics["nll"] == pytest.approx(nll, rel=1e-4)
    assert score.primary == score.metrics["ppl"] == pytest.approx(math.exp(nll), rel=1e-4)


# --------------------------------------------------------------------------------------------
# A stub that knows the answers: exact match must reach 1.0.


class OracleLM(torch.nn.Module):
    """Emits, for each row, the next token of the answer to its prompt, then a newline.

    It finds the prompt among the row's real tokens (by the attention mask) and insists that the
    position ids count from 0 at the first real token, so wrong padding makes it fail.
    """

    def __init__(self, tok, items: list[dict]) -> None:
        super().__init__()
        self.vocab = len(tok)
        newline = tok.encode("\n", add_special_tokens=False)
        self.script = {
            tuple(tok.encode(it["prompt"])): tok.encode(it["answer"], add_special_tokens=False)
            + newline
            for it in items
        }

    def forward(self, input_ids, attention_mask, position_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for row in range(input_ids.shape[0]):
            keep = attention_mask[row].bool()
            real = input_ids[row][keep].tolist()
            assert position_ids[row][keep].tolist() == list(range(len(real)))
            prompt = next(p for p in self.script if tuple(real[: len(p)]) == p)
            step = len(real) - len(prompt)
            logits[row, -1, self.script[prompt][step]] = 10.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_oracle_scores_exact_match_one(tokenizer, tmp_path, batch_size):
    items = [it for it in GEN_ITEMS if len(it["prompt"]) < 40] + [
        {"prompt": "Name three colors:", "answer": "red, green and blue"}
    ]
    task = load_task(write_jsonl(tmp_path / "gen.jsonl", items))
    oracle = OracleLM(tokenizer, items)
    score = evaluate(oracle, tokenizer, task, batch_size=batch_size)["gen"]
    assert score.primary == 1.0

    wrong = [dict(it, answer=it["answer"] + "!") for it in items]
    task = load_task(write_jsonl(tmp_path / "wrong.jsonl", wrong))
    assert evaluate(oracle, tokenizer, task, batch_size=batch_size)["wrong"].primary == 0.0


# --------------------------------------------------------------------------------------------
# Task files.


def test_load_task_kinds(tmp_path):
    mc = load_task(write_jsonl(tmp_path / "quiz.jsonl", MC_ITEMS))
    assert (mc.name, mc.kind, len(mc.items)) == ("quiz", "mc", len(MC_ITEMS))
    assert mc.items[0].choices == (" mat", " moon", " and then left")
    gen = load_task(write_jsonl(tmp_path / "qa.jsonl", GEN_ITEMS))
    assert (gen.kind, gen.items[0].answer) == ("gen", "2")
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    ppl = load_task(tmp_path / "text.txt")
    assert (ppl.kind, ppl.items) == ("ppl", (TEXT,))
    assert [t.name for t in load_tasks([tmp_path])] == ["qa", "quiz", "text"]
    with pytest.raises(AttributeError):
        mc.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("lines", "bad_line", "words"),
    [
        (['{"prompt": "a", "answer": "b"}', '{"prompt": "a", "answer": '], 2, "malformed JSON"),
        (['{"context": "a", "choices": ["b", "c"]}'], 1, "missing key"),
        (['{"context": "a", "choices": ["b", "c"], "gold": 2}'], 1, "out of range"),
        (['{"context": "a", "choices": ["b"], "gold": true}'], 1, "integer"),
        (
            ['{"prompt": "a", "answer": "b"}', "", '{"context": "a", "choices": ["b"], "gold": 0}'],
            3,
            "mixed",
        ),
        (["[1, 2]"], 1, "JSON object"),
        (['{"question": "a"}'], 1, "expected keys"),
        (['{"context": "a", "choices": ["b", ""], "gold": 0}'], 1, "non-empty"),
    ],
)
def test_malformed_task_names_file_and_line(tmp_path, lines, bad_line, words):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TaskError, match=words) as info:
        load_task(path)
    assert f"{path}:{bad_line}:" in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.line == bad_line


@pytest.mark.parametrize(
    ("name", "content"), [("empty.jsonl", "\n\n"), ("t.csv", "a,b"), ("e.txt", " ")]
)
def test_unusable_files_raise_task_error(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(TaskError, match=name):
        load_task(tmp_path / name)


# --------------------------------------------------------------------------------------------
# limit, results and helpers.


def test_limit_takes_first_items(model, tokenizer, ref_pair_lls, ref_text_logprobs, tmp_path):
    task = load_task(write_jsonl(tmp_path / "mc.jsonl", MC_ITEMS))
    score = evaluate(model, tokenizer, task, limit=3)["mc"]
    assert score.n == 3
    assert score.metrics == ref_mc_metrics(ref_pair_lls, MC_ITEMS[:3])
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    ppl = evaluate(model, tokenizer, load_task(path), limit=1)["text"]
    want = ref_text_logprobs[:MAX_LEN]
    assert ppl.n == MAX_LEN
    assert ppl.primary == pytest.approx(math.exp(-sum(want) / MAX_LEN), rel=1e-4)
    with pytest.raises(ValueError):
        evaluate(model, tokenizer, task, limit=0)


def test_scores_json_and_mean(model, tokenizer, tmp_path):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    write_jsonl(tmp_path / "mc.jsonl", MC_ITEMS)
    write_jsonl(tmp_path / "gen.jsonl", GEN_ITEMS)
    model.train()
    scores = evaluate(model, tokenizer, load_tasks([tmp_path]), max_new_tokens=3)
    assert model.training  # mode restored
    model.eval()
    assert list(scores) == ["gen", "mc", "text"]
    assert all(isinstance(s, TaskScore) and type(s.primary) is float for s in scores.values())
    assert mean_score(scores) == pytest.approx((scores["mc"].primary + scores["gen"].primary) / 2)
    blob = json.loads(json.dumps(scores_to_json({"tiny": scores})))
    assert blob["tiny"]["tasks"]["text"]["metrics"]["ppl"] == scores["text"].primary
    assert blob["tiny"]["mean_score"] == pytest.approx(mean_score(scores))
    with pytest.raises(ValueError):
        mean_score({"text": scores["text"]})


def test_duplicate_task_names_rejected(model, tokenizer, tmp_path):
    task = load_task(write_jsonl(tmp_path / "mc.jsonl", MC_ITEMS))
    assert isinstance(task, Task)
    with pytest.raises(ValueError, match="duplicate"):
        evaluate(model, tokenizer, [task, task])


# --------------------------------------------------------------------------------------------
# lm-eval-harness backend, on a local YAML task reading a local JSONL file.


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed")
def test_harness_local_task_agrees_with_evaluator(model, tokenizer, tmp_path, monkeypatch):
    from recipe_compiler.evaluate.harness import run_harness

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.chdir(REPO)  # the task YAML names its data file relative to the repository
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    results = run_harness(
        model_dir,
        ["tailor_tiny_mc"],
        include_path=HARNESS_DIR,
        limit=None,
        device="cpu",
        batch_size=4,
        include_defaults=False,
    )
    ours = evaluate(model, tokenizer, load_task(HARNESS_DIR / "tailor_tiny_mc.jsonl"))
    assert results["tailor_tiny_mc"]["acc"] == ours["tailor_tiny_mc"].metrics["acc"]
    assert results["tailor_tiny_mc"]["acc_norm"] == ours["tailor_tiny_mc"].metrics["acc_norm"]

    # Request by request: lm-eval's log-likelihoods equal ours (same token split, truncation).
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir}",
        tasks=["tailor_tiny_mc"],
        task_manager=TaskManager(include_path=str(HARNESS_DIR), include_defaults=False),
        device="cpu",
        batch_size=4,
        log_samples=True,
    )
    samples = out["samples"]["tailor_tiny_mc"]
    pairs = [tuple(arg) for sample in samples for arg in sample["arguments"]]
    theirs = [resp[0] for sample in samples for resp in sample["filtered_resps"]]
    assert len(pairs) == 24
    assert loglikelihoods(model, tokenizer, pairs) == pytest.approx(theirs, abs=1e-4)
