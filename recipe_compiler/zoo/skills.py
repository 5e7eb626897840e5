"""Synthetic skills: seeded generators for training pools and held-out evaluation items.

Consumes a seed; produces (a) per-skill training pools of ``(prompt, answer)`` pairs plus
English-like sentences, and (b) held-out test and validation items as JSON-ready dicts, either
multiple choice ``{"context", "choices", "gold"}`` or generation ``{"prompt", "answer"}``.
Held-out items are drawn first, from their own random streams, and every later draw is checked
against everything drawn before it, so test, validation and training never share a prompt
(or, for text, a sentence).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Pair = tuple[str, str]


def _math(rng: random.Random) -> Pair:
    # 2-3 digit operands: hard enough that the base is far from perfect after the short budget,
    # easy enough that a fine-tune measurably improves on it.
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if rng.random() < 0.5:
        return f"{a}+{b}=", str(a + b)
    a, b = max(a, b), min(a, b)  # keep results non-negative: no minus sign to predict
    return f"{a}-{b}=", str(a - b)


def _math_wrong(rng: random.Random, prompt: str, answer: str) -> str:
    # Perturb one digit so a distractor has the same length and differs in exactly one place.
    digits = list(answer)
    i = rng.randrange(len(digits))
    old = int(digits[i])
    choices = [d for d in range(10) if d != old and not (i == 0 and d == 0 and len(digits) > 1)]
    digits[i] = str(rng.choice(choices))
    return "".join(digits)


_OPEN, _CLOSE = "([{<", ")]}>"


def _code(rng: random.Random) -> Pair:
    # A code-like prefix with some pairs already closed; the answer closes what is still open,
    # innermost first, which needs the nesting to be tracked.
    stack: list[str] = []
    out: list[str] = []
    length = rng.randint(3, 7)
    while len(out) < length or not stack:
        r = rng.random()
        if (r < 0.5 and len(stack) < 3) or not stack:
            k = rng.randrange(4)
            stack.append(_CLOSE[k])
            out.append(_OPEN[k])
        elif r < 0.85:
            out.append(rng.choice("abcxyz"))
        else:
            out.append(stack.pop())
    return "".join(out) + "|", "".join(reversed(stack))


def _code_wrong(rng: random.Random, prompt: str, answer: str) -> str:
    chars = list(answer)
    if len(chars) > 1 and rng.random() < 0.5:
        i = rng.randrange(len(chars) - 1)
        if chars[i] != chars[i + 1]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            return "".join(chars)
    i = rng.randrange(len(chars))
    chars[i] = rng.choice([c for c in _CLOSE if c != chars[i]])
    return "".join(chars)


def _recall(rng: random.Random) -> Pair:
    # Key->value lookup from the context: an induction-style skill unrelated to arithmetic.
    n = rng.randint(2, 4)
    keys = rng.sample("abcdefghijklmnopqrstuvwxyz", n)
    vals = rng.sample("0123456789", n)  # distinct, so the other values make fair distractors
    q = rng.randrange(n)
    ctx = ",".join(k + v for k, v in zip(keys, vals))
    return f"{ctx};{keys[q]}=", vals[q]


def _recall_wrong(rng: random.Random, prompt: str, answer: str) -> str:
    # Distractors are values that also appear in the context, so guessing "a seen digit" fails.
    vals = [kv[1] for kv in prompt.split(";")[0].split(",")]
    return rng.choice([v for v in vals if v != answer])


def _strings(rng: random.Random) -> Pair:
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3))
    return f"r:{word}=", word[::-1]


def _strings_wrong(rng: random.Random, prompt: str, answer: str) -> str:
    chars = list(answer)
    i, j = rng.sample(range(len(chars)), 2)
    chars[i], chars[j] = chars[j], chars[i]
    wrong = "".join(chars)
    # Swapping equal letters is a no-op; fall back to the un-reversed word.
    return wrong if wrong != answer else prompt[2:-1]


@dataclass(frozen=True)
class Skill:
    """One skill: how to draw a pair, how to draw a wrong answer, and how it is evaluated."""

    name: str
    draw: Callable[[random.Random], Pair]
    wrong: Callable[[random.Random, str, str], str]
    task_kind: str  # "mc" (log-likelihood of choices) or "gen" (greedy exact match)
    n_choices: int = 4


SKILLS: dict[str, Skill] = {
    "math": Skill("math", _math, _math_wrong, "mc"),
    "code": Skill("code", _code, _code_wrong, "gen"),
    "recall": Skill("recall", _recall, _recall_wrong, "gen"),
    "strings": Skill("strings", _strings, _strings_wrong, "gen"),
}

# --- English-like text: a small template grammar, so perplexity has something to measure. ---
_NOUNS = ("cat dog bird man woman child farmer teacher king girl boy horse fox baker sailor "
          "friend").split()
_THINGS = ("ball apple book cake hat box letter cup stone bread key coat river tree house "
           "boat lamp").split()
_ADJS = "small big old young red green happy quiet warm cold bright dark kind tall".split()
_TVERBS = "sees likes finds takes holds wants makes opens carries paints".split()
_IVERBS = "runs sleeps sits waits walks sings rests laughs".split()
_PLACES = ("in the park", "on the hill", "near the river", "at home", "by the sea",
           "under the tree", "in the town", "at the market")


def _noun_phrase(rng: random.Random, nouns: list[str]) -> str:
    det = rng.choice(("the", "a")) if rng.random() < 0.8 else rng.choice(("this", "that"))
    adj = rng.choice(_ADJS) + " " if rng.random() < 0.5 else ""
    return f"{det} {adj}{rng.choice(nouns)}"


def sentence(rng: random.Random) -> str:
    """One English-like sentence, e.g. ``"the old farmer finds a red key near the river."``."""
    subj = _noun_phrase(rng, _NOUNS) if rng.random() < 0.8 else rng.choice(("he", "she"))
    if rng.random() < 0.6:
        pred = f"{rng.choice(_TVERBS)} {_noun_phrase(rng, _THINGS)}"
    else:
        pred = rng.choice(_IVERBS)
    if rng.random() < 0.5:
        pred += " " + rng.choice(_PLACES)
    if rng.random() < 0.2:
        pred += f" and then {rng.choice(_IVERBS)}"
    return f"{subj} {pred}."


def _stream(seed: int, name: str, split: str) -> random.Random:
    # String seeds hash via sha512 inside ``random``, so they are stable across processes;
    # a separate stream per (skill, split) keeps splits from depending on each other's sizes.
    return random.Random(f"tailor-zoo/{seed}/{name}/{split}")


def draw_unique(draw: Callable[[random.Random], Pair], rng: random.Random, n: int,
                exclude: Iterable[str] = ()) -> list[Pair]:
    """Draw ``n`` pairs with distinct prompts, none of them in ``exclude``."""
    seen = set(exclude)
    out: list[Pair] = []
    misses = 0
    while len(out) < n:
        prompt, answer = draw(rng)
        if prompt in seen:
            misses += 1
            if misses > 100 * n + 1000:  # a space too small for n: fail loudly, never loop
                raise RuntimeError(f"cannot draw {n} unique items")
            continue
        seen.add(prompt)
        out.append((prompt, answer))
    return out


def _sentence_pair(rng: random.Random) -> Pair:
    return sentence(rng), ""


def heldout(seed: int, n_test: int, n_val: int) -> dict[str, dict[str, list[Pair]]]:
    """Test and validation pairs per skill (and ``"text"``), disjoint from each other."""
    out: dict[str, dict[str, list[Pair]]] = {}
    for name, skill in SKILLS.items():
        test = draw_unique(skill.draw, _stream(seed, name, "test"), n_test)
        val = draw_unique(skill.draw, _stream(seed, name, "val"), n_val, (p for p, _ in test))
        out[name] = {"test": test, "val": val}
    text_test = draw_unique(_sentence_pair, _stream(seed, "text", "test"), n_test)
    text_val = draw_unique(_sentence_pair, _stream(seed, "text", "val"), n_val,
                           (p for p, _ in text_test))
    out["text"] = {"test": text_test, "val": text_val}
    return out


def training_pools(seed: int, n: int, held: dict[str, dict[str, list[Pair]]]
                   ) -> dict[str, list[Pair]]:
    """``n`` training pairs per skill and sentences for ``"text"``, excluding all held-out ones."""
    pools: dict[str, list[Pair]] = {}
    for name in (*SKILLS, "text"):
        draw = SKILLS[name].draw if name in SKILLS else _sentence_pair
        exclude = [p for split in held[name].values() for p, _ in split]
        pools[name] = draw_unique(draw, _stream(seed, name, "train"), n, exclude)
    return pools


def to_item(skill: Skill, pair: Pair, rng: random.Random) -> dict[str, object]:
    """A JSON-ready evaluation item in the skill's task format."""
    prompt, answer = pair
    if skill.task_kind == "gen":
        return {"prompt": prompt, "answer": answer}
    wrong: list[str] = []
    for _ in range(1000):
        if len(wrong) == skill.n_choices - 1:
            break
        w = skill.wrong(rng, prompt, answer)
        if w != answer and w not in wrong:
            wrong.append(w)
    choices = [answer, *wrong]
    rng.shuffle(choices)
    return {"context": prompt, "choices": choices, "gold": choices.index(answer)}
