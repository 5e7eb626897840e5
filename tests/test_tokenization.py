"""When teacher forcing of a generation item equals greedy exact match (zoo tokenizer).

`evaluate.tokenization` decides it from the tokenizer alone; here a scripted "model" (its
argmax is a table from token prefixes to the next token) is decoded greedily by the real
`greedy_generate` and compared with teacher forcing and with `greedy_verdict`, for answers
whose verdicts agree and disagree. The same checks on SmolLM2's BPE tokenizer are in
tests/test_real.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from recipe_compiler.evaluate.generate import greedy_generate
from recipe_compiler.evaluate.tokenization import (
    analyse_answer,
    greedy_verdict,
    stop_tokens,
    teacher_forcing_exact,
)
from recipe_compiler.zoo.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


class Scripted(torch.nn.Module):
    """Greedy argmax by table: after a sequence ending in `prompt + emitted`, emit the next
    token of `emitted`'s script; anything else gets `default`."""

    def __init__(self, vocab: int, prompt: list[int], script: list[int], default: int):
        super().__init__()
        self.vocab, self.prompt, self.script, self.default = vocab, prompt, script, default
        self.config = SimpleNamespace(max_position_embeddings=512)

    def next_token(self, seq: list[int]) -> int:
        n = len(self.prompt)
        if seq[:n] == self.prompt and seq[n:] == self.script[: len(seq) - n]:
            k = len(seq) - n
            if k < len(self.script):
                return self.script[k]
        return self.default

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)  # (B, T, V)
        for b, row in enumerate(input_ids.tolist()):
            real = [t for t, m in zip(row, attention_mask[b].tolist(), strict=True) if m]
            start = len(row) - len(real) if attention_mask[b, 0] == 0 else 0
            for t in range(len(real)):
                logits[b, start + t, self.next_token(real[: t + 1])] = 1.0
        return SimpleNamespace(logits=logits)


def outcomes(tok, prompt: str, answer: str, output: str | list[int], tail: str = "\n"):
    """(teacher forcing passes, greedy matches, greedy_verdict) for a model whose greedy
    continuation of `prompt` is `output + tail` (`output` as text, or as the token ids)."""
    item = analyse_answer(tok, prompt, answer)
    prompt_ids = tok(prompt)["input_ids"]
    if isinstance(output, str):
        output, tail = output + tail, ""
    script = (tok(output, add_special_tokens=False)["input_ids"] if isinstance(output, str)
              else list(output) + tok(tail, add_special_tokens=False)["input_ids"])
    model = Scripted(len(tok), prompt_ids, script, default=tok.eos_token_id).eval()
    max_new = len(tok.encode(answer.strip(), add_special_tokens=False)) + 4
    text, = greedy_generate(model, tok, [prompt], max_new_tokens=max_new)
    greedy = text.strip() == answer.strip()
    path = list(item.context + item.answer)
    argmax = [model.next_token(path[: len(item.context) + i]) for i in range(len(item.answer) + 1)]
    forced = argmax[:-1] == list(item.answer) and argmax[-1] in item.terminators
    verdict = greedy_verdict(tok, item, argmax, answer=answer, max_new_tokens=max_new)
    return forced, greedy, verdict


def test_char_level_answers_are_exact(tok):
    for prompt, answer in [("12+30=", "42"), ("q: 2+3=", " 5"), ("x=", "ab cd"), ("a", "b")]:
        item = analyse_answer(tok, prompt, answer)
        assert item.exact and item.aligned, (prompt, answer, item.problems)
        assert teacher_forcing_exact(tok, prompt, answer)
        assert tok.decode(item.answer) == answer
        assert item.context == tuple(tok(prompt)["input_ids"])  # <bos> + the prompt


def test_unsafe_items_say_why(tok):
    trailing = analyse_answer(tok, "12+30= ", "42")  # the space moves to the answer
    assert [p.split(":")[0] for p in trailing.problems] == ["context"]
    assert not trailing.aligned
    unknown = analyse_answer(tok, "x=", "é")  # <unk>: decodes to nothing
    assert [p.split(":")[0] for p in unknown.problems] == ["text"]
    tight = analyse_answer(tok, "x=", "abc", max_new_tokens=3)  # no room for the stop
    assert [p.split(":")[0] for p in tight.problems] == ["budget"]


def test_stop_tokens_and_terminators(tok):
    newline, eos = tok.convert_tokens_to_ids(["\n", tok.eos_token])
    assert stop_tokens(tok) == {newline, eos}
    assert analyse_answer(tok, "x=", "1").terminators == {newline, eos}


@pytest.mark.parametrize(("output", "tail", "expected"), [
    ("42", "\n", (True, True, True)),     # the answer, then the newline
    ("42", "", (True, True, True)),       # the answer, then EOS: also a terminator
    ("43", "\n", (False, False, False)),  # wrong digit: greedy cannot recover
    ("4", "\n", (False, False, False)),   # stops early
    ("421", "\n", (False, False, False)),  # runs on
])
def test_exact_item_agrees_with_greedy(tok, output, tail, expected):
    assert outcomes(tok, "12+30=", "42", output, tail) == expected


@pytest.mark.parametrize(("output", "expected"), [
    (" 42", (False, True, None)),   # leading space: greedy strips it, teacher forcing fails
    ("42 ", (False, True, None)),   # trailing space before the newline
])
def test_whitespace_the_model_adds_is_left_to_greedy(tok, output, expected):
    # The stated limit of `exact`: the model, not the tokenizer, adds whitespace; the
    # verdict sees the divergence and asks for decoding instead of answering wrongly.
    assert outcomes(tok, "12+30=", "42", output) == expected


def test_misaligned_prompt_is_never_decided(tok):
    # With the trailing space moved, teacher forcing conditions on other ids than greedy.
    forced, greedy, verdict = outcomes(tok, "12+30= ", "42", "42")
    assert greedy and verdict is None
