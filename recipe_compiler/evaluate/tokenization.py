"""When scoring a generation item by teacher forcing equals greedy exact match.

Consumes a Hugging Face tokenizer and one generation item (prompt, answer). Produces a
`ForcedAnswer`: the ids teacher forcing conditions on and scores, the tokens that may end the
answer, and the reasons (if any) why teacher forcing can disagree with greedy decoding; and,
given the argmaxes teacher forcing computed, what greedy decoding would have concluded
(`greedy_verdict`). No model is run.

The two procedures being compared:

* greedy (`evaluate.generate` + `scoring`): encode ``prompt`` (the tokenizer's own special
  tokens), append the argmax token until a stop token (EOS, or a token whose text holds a
  newline) or ``max_new_tokens`` tokens; the text is the decoded tokens (special tokens
  skipped) up to the first newline; it matches iff ``text.strip() == answer.strip()``;
* teacher forcing (the search): encode the pair as lm-eval does (``encode_pair``: trailing
  whitespace of the prompt moves to the answer, the whole string is encoded and cut at the
  prompt's length), giving context ids C and answer ids A; it passes iff each token of A is
  the argmax after the tokens before it, and then the argmax is a terminator.

Why the two can differ, and what `ForcedAnswer.exact` checks (all must hold):

1. ``context``: greedy conditions on ``encode(prompt)``; teacher forcing on C. They differ
   when the prompt ends in whitespace (moved to A) or a token spans the prompt/answer
   boundary (BPE merges ``"="`` + ``"5"`` or ``" "`` + ``"Paris"``). Then the model is asked
   about a different prefix, and the verdicts can differ both ways: always decode greedily.
2. ``stop``: a token of A is itself a stop token (EOS, or its text holds a newline): greedy
   would stop inside the answer.
3. ``text``: the decoded A, cut at a newline and stripped, is not the stripped answer (an
   unknown character became ``<unk>``, a decoder rewrote spaces): a teacher-forced pass
   would not be a greedy match.
4. ``budget``: ``len(A) >= max_new_tokens``: greedy stops on the budget, never reaching the
   terminator that teacher forcing demands (or never finishing A).
5. ``tokenisation``: the decoded answer can be spelt by another sequence of vocabulary
   tokens (``"47"`` as ``"4" "7"`` when ``"47"`` is also a token; any word as single bytes in
   a byte-level BPE). A model that produced the other spelling greedily would match while
   teacher forcing, which scores one spelling, fails. Models trained on one canonical
   tokenisation rarely do this, but nothing about the tokenizer rules it out, so such an
   item is not exact. Counted by dynamic programming over the decoded text of every
   non-special token (tokens that decode to partial UTF-8 are not counted, so an answer
   with non-ASCII characters is never called unique).

Given 1-5, teacher forcing passes iff greedy matches, for every model whose greedy output
(a) adds or drops no whitespace around the answer and (b) contains no special token other
than EOS (special tokens decode to nothing, so they could be inserted anywhere unseen), and
provided the teacher-forced check accepts *any* token of `ForcedAnswer.terminators` after A
(a greedy answer may end with EOS or ``"\\n\\n"`` as well as ``"\\n"``). (a) and (b) are
choices a model makes, not properties of the answer's tokens: no tokenizer check can exclude
them. `greedy_verdict` closes that gap exactly, for any item passing 1-4: at the first
position where the argmax leaves the teacher-forced path, it decides from the decoded text
so far whether greedy decoding could still match (``None``: decode greedily to know).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recipe_compiler.evaluate.loglik import encode_pairs, encode_texts
from recipe_compiler.evaluate.scoring import GEN_EXTRA_TOKENS

__all__ = ["ForcedAnswer", "analyse_answer", "greedy_verdict", "stop_tokens",
           "teacher_forcing_exact"]

_REPLACEMENT = "\ufffd"  # what a token holding part of a UTF-8 character decodes to

# Per tokenizer: (stop ids, terminator ids, text of each non-special token -> its ids).
_VOCAB: weakref.WeakKeyDictionary[Any, tuple] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ForcedAnswer:
    """A generation item as teacher forcing sees it.

    `context`: the ids teacher forcing conditions on; `answer`: the ids it scores;
    `terminators`: ids that may follow the answer (EOS, and tokens whose text starts with a
    newline); `problems`: why teacher forcing is not exactly greedy exact match here, one
    of ``context``, ``stop``, ``text``, ``budget``, ``tokenisation`` with details; empty
    when it is (see the module docstring for what that guarantees)."""

    context: tuple[int, ...]
    answer: tuple[int, ...]
    terminators: frozenset[int]
    problems: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return not self.problems

    @property
    def aligned(self) -> bool:
        """Checks 1-4 hold: `greedy_verdict` is then exact for any model."""
        return all(p.startswith("tokenisation") for p in self.problems)


def teacher_forcing_exact(tokenizer: Any, prompt: str, answer: str, *,
                          max_new_tokens: int | None = None) -> bool:
    """True when teacher forcing of `answer` after `prompt` is guaranteed to give greedy
    exact match's verdict (checks 1-5 of the module docstring, under its two stated
    conditions on the model's output); False when the search should decode greedily."""
    return analyse_answer(tokenizer, prompt, answer, max_new_tokens=max_new_tokens).exact


def analyse_answer(tokenizer: Any, prompt: str, answer: str, *,
                   max_new_tokens: int | None = None) -> ForcedAnswer:
    """The teacher-forcing view of one item and every reason it may differ from greedy.

    `max_new_tokens` is greedy's token budget; by default the scorer's own for this answer
    alone (its token count plus 4), which is never more than a task's budget."""
    stops, terminators, _ = _vocab(tokenizer)
    (context, ids), = encode_pairs(tokenizer, [(prompt, answer)])
    if max_new_tokens is None:
        stripped = answer.strip()
        max_new_tokens = len(tokenizer.encode(stripped, add_special_tokens=False)) \
            + GEN_EXTRA_TOKENS
    problems = []
    greedy_prompt = encode_texts(tokenizer, [prompt])[0]
    if greedy_prompt != context:
        problems.append("context: the prompt encodes to other ids alone than before the "
                        "answer (trailing whitespace, or a token across the boundary)")
    inner = [t for t in ids if t in stops]
    if inner:
        problems.append(f"stop: answer token {inner[0]} ends greedy decoding")
    text = _decode(tokenizer, ids)
    if text.split("\n", 1)[0].strip() != answer.strip():
        problems.append(f"text: the answer's tokens decode to {text!r}")
    if len(ids) >= max_new_tokens:
        problems.append(f"budget: {len(ids)} answer tokens, greedy makes at most "
                        f"{max_new_tokens}")
    spellings = _spellings(tokenizer, text)
    if spellings != 1:
        problems.append("tokenisation: the answer's text has another spelling in tokens"
                        if spellings > 1 else
                        "tokenisation: the answer's text is not made of whole tokens")
    return ForcedAnswer(tuple(context), tuple(ids), terminators, tuple(problems))


def greedy_verdict(tokenizer: Any, item: ForcedAnswer, argmax: Sequence[int], *,
                   answer: str, max_new_tokens: int) -> bool | None:
    """Greedy exact match's verdict from teacher forcing's argmaxes, or None if it needs
    decoding.

    `argmax[i]` is the model's argmax after ``context + answer[:i]``, for i in
    ``0..len(answer)`` (one more than the answer's length: the terminator position). Exact
    for any model when `item.aligned`; greedy follows the teacher-forced path up to the
    first position k where the argmax g leaves it, so its output starts with
    ``answer[:k] + [g]``: if g stops decoding the text is known; otherwise the match is
    still possible only if the text so far can be extended to the stripped answer."""
    if not item.aligned:
        return None
    stops, _, _ = _vocab(tokenizer)
    want = answer.strip()
    path = list(item.answer)
    for k, g in enumerate(argmax[: len(path) + 1]):
        if k >= max_new_tokens:  # the budget ends decoding after the answer's first k tokens
            return _line(tokenizer, path[:k]).strip() == want
        if k < len(path) and g == path[k]:
            continue
        so_far = _decode(tokenizer, path[:k] + [g])
        if g in stops:
            return so_far.split("\n", 1)[0].strip() == want
        if _REPLACEMENT in so_far or "\n" in so_far:
            return None
        head = so_far.lstrip()
        if want.startswith(head) or (head.startswith(want) and not head[len(want):].strip()):
            return None  # greedy could still match: only decoding tells
        return False
    raise ValueError(f"need {len(path) + 1} argmaxes, got {len(argmax)}")


def stop_tokens(tokenizer: Any) -> frozenset[int]:
    """Ids that end greedy decoding: EOS, and every token whose text holds a newline."""
    return _vocab(tokenizer)[0]


def _line(tokenizer: Any, ids: Sequence[int]) -> str:
    return _decode(tokenizer, ids).split("\n", 1)[0]


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def _vocab(tokenizer: Any) -> tuple[frozenset[int], frozenset[int], dict[str, list[int]]]:
    """Stop ids, terminator ids and the text of every non-special token, once per tokenizer.

    A token's text is read as ``decode([anchor, t])`` minus ``decode([anchor])``: decoders
    such as SentencePiece's drop a leading space from the first token of a string, which
    would hide the space a token carries."""
    try:
        cached = _VOCAB.get(tokenizer)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    specials = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in specials]
    anchor = _anchor(tokenizer, specials)
    prefix = tokenizer.decode([anchor], skip_special_tokens=True)
    decoded = tokenizer.batch_decode([[anchor, i] for i in ids], skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)
    texts: dict[str, list[int]] = {}
    stops, terminators = set(), set()
    eos = tokenizer.eos_token_id
    if eos is not None:
        stops.add(eos)
        terminators.add(eos)
    for i, text in zip(ids, decoded, strict=True):
        text = text[len(prefix):] if text.startswith(prefix) else _REPLACEMENT
        if "\n" in text:
            stops.add(i)
            if text.startswith("\n"):
                terminators.add(i)
        if text and _REPLACEMENT not in text:
            texts.setdefault(text, []).append(i)
    result = (frozenset(stops), frozenset(terminators), texts)
    try:
        _VOCAB[tokenizer] = result
    except TypeError:
        pass
    return result


def _anchor(tokenizer: Any, specials: set[int]) -> int:
    ids = [i for i in tokenizer.encode("a", add_special_tokens=False) if i not in specials]
    if not ids:
        raise ValueError("the tokenizer cannot encode the letter 'a'")
    return ids[-1]


def _spellings(tokenizer: Any, text: str) -> int:
    """How many token sequences (non-special tokens) decode to `text`, counted up to 2."""
    _, _, pieces = _vocab(tokenizer)
    longest = max(map(len, pieces), default=0)
    ways = [1] + [0] * len(text)  # ways[i]: spellings of text[:i]
    for end in range(1, len(text) + 1):
        total = 0
        for start in range(max(0, end - longest), end):
            if ways[start]:
                total += ways[start] * len(pieces.get(text[start:end], ()))
        ways[end] = min(total, 2)
    return ways[-1]
