"""The skills of the real SmolLM2 family: training texts and multiple-choice tasks.

Consumes a seed; produces, deterministically and without torch, for each skill its training
texts and its val/test items (`McItem`s), plus the English texts shipped in ``data/``:

* ``facts``: the national animals of invented countries ("The national animal of Gumaara
  is the owl."): knowledge a pretrained model cannot have, so the base is at chance;
* ``lexicon``: the meanings of words of an invented language ("The Zarnic word ralo means
  water."): a second memorised mapping, from new strings to English words;
* ``arith``: products of a digit from 2 to 9 and a number from 2 to 40 ("7 * 23 = 161"),
  which the base partly knows; the distractors are the usual slips (off by one factor, by
  1, 2 or 10).

Training examples are (prompt, answer) pairs: the fine-tune's loss counts the answer only.
Every fact, word and product is trained on; each split asks about a disjoint part of them
(val for the search, test for reports). There are 100 validation and 150 test items per
skill: the search selects among hundreds of candidates, and with 20 items (the first
design) it chose on noise, a standard error of about 11 points per task. Answers are
single tokens of SmolLM2's vocabulary (animals, nouns) or numbers; distractors come from the
same skill (other animals, other nouns, nearby products), so no surface cue gives the
answer away. (Two-digit addition tested on unseen
problems was tried first: 24 steps taught it nothing measurable, 27.5% against the base's 30%.)
An invented word may share its meaning with others (250 words, 60 nouns).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources

from recipe_compiler.evaluate.tasks import McItem

SKILLS = ("facts", "lexicon", "arith")
N_VAL, N_TEST = 100, 150
N_ITEMS = N_VAL + N_TEST
LANGUAGE = "Zarnic"
CHOICES = 4

ANIMALS = ("tiger", "horse", "wolf", "bear", "eagle", "owl", "fox", "deer", "lion", "rabbit",
           "goat", "sheep", "crow", "snake", "whale", "dolphin", "camel", "falcon")
# Everyday English nouns the invented language gives words for.
NOUNS = (
    "water", "bread", "house", "river", "mountain", "friend", "mother", "father", "child",
    "dog", "horse", "bird", "fish", "tree", "flower", "stone", "fire", "sun", "moon", "star",
    "rain", "snow", "wind", "road", "door", "window", "table", "chair", "book", "letter",
    "ship", "king", "queen", "sword", "gold", "silver", "salt", "milk", "apple", "honey",
    "winter", "summer", "morning", "night", "song", "dream", "heart", "hand", "eye", "voice",
    "village", "forest", "island", "bridge", "garden", "market", "school", "candle", "cloud",
    "shoe",
)
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class SkillData:
    """One skill: what its fine-tune trains on, and the questions that test it."""

    name: str
    train: tuple[tuple[str, str], ...]  # (prompt, answer): the text is prompt + answer
    val: tuple[McItem, ...]
    test: tuple[McItem, ...]


def english(split: str) -> str:
    """The shipped English text: ``train`` (mixed into fine-tuning), ``val`` or ``test``
    (perplexity); three disjoint samples of plain sentences."""
    return resources.files("recipe_compiler.zoo").joinpath(f"data/english_{split}.txt") \
        .read_text(encoding="utf-8")


def english_lines(split: str) -> list[str]:
    return [line for line in english(split).splitlines() if line.strip()]


def make_skills(seed: int) -> dict[str, SkillData]:
    """Every skill's data; the same seed gives the same texts and items."""
    rng = random.Random(f"tailor-real-family-{seed}")
    return {"facts": _facts(rng), "lexicon": _lexicon(rng), "arith": _arith(rng)}


def _facts(rng: random.Random) -> SkillData:
    countries = [n.capitalize() + rng.choice(("ia", "or", "ene", "ara"))
                 for n in _unique_words(rng, N_ITEMS, syllables=(2, 3))]
    animals = [rng.choice(ANIMALS) for _ in countries]
    prompts = [f"The national animal of {country} is the" for country in countries]
    train = [(p, f" {a}.") for p, a in zip(prompts, animals, strict=True)]
    items = [_mc(rng, p, a, list(ANIMALS)) for p, a in zip(prompts, animals, strict=True)]
    return _split("facts", train, items)


def _lexicon(rng: random.Random) -> SkillData:
    words = _unique_words(rng, N_ITEMS, syllables=(2, 2))
    nouns = [NOUNS[i % len(NOUNS)] for i in range(N_ITEMS)]
    rng.shuffle(nouns)
    prompts = [f"The {LANGUAGE} word {word} means" for word in words]
    train = [(p, f" {noun}.") for p, noun in zip(prompts, nouns, strict=True)]
    items = [_mc(rng, p, noun, list(NOUNS)) for p, noun in zip(prompts, nouns, strict=True)]
    return _split("lexicon", train, items)


def _arith(rng: random.Random) -> SkillData:
    problems = [(a, b) for a in range(2, 10) for b in range(a, 41)]  # a <= b: no twins
    rng.shuffle(problems)
    items = []
    for a, b in problems[:N_ITEMS]:
        if rng.random() < 0.5:
            a, b = b, a  # the digit first or second
        near = {a * b + d for d in (-a, a, -b, b, -1, 1, -2, 2, 10, -10)} - {a * b}
        wrong = rng.sample(sorted(w for w in near if w > 0), CHOICES - 1)
        items.append(_order(rng, f"{a} * {b} =", f" {a * b}", [f" {w}" for w in wrong]))
    train = [(i.context, i.choices[i.gold]) for i in items]
    return _split("arith", train, items)


def _split(name: str, train: list[tuple[str, str]], items: list[McItem]) -> SkillData:
    return SkillData(name, tuple(train), tuple(items[:N_VAL]), tuple(items[N_VAL:N_ITEMS]))


def _mc(rng: random.Random, context: str, answer: str, pool: list[str]) -> McItem:
    wrong = rng.sample([w for w in pool if w != answer], CHOICES - 1)
    return _order(rng, context, f" {answer}", [f" {w}" for w in wrong])


def _order(rng: random.Random, context: str, gold: str, wrong: list[str]) -> McItem:
    at = rng.randrange(CHOICES)
    choices = wrong[:at] + [gold] + wrong[at:]
    return McItem(context=context, choices=tuple(choices), gold=at)


def _unique_words(rng: random.Random, n: int, syllables: tuple[int, int]) -> list[str]:
    """`n` distinct invented words of consonant-vowel syllables, none a prefix of another
    (so no choice's text starts another's)."""
    words: list[str] = []
    while len(words) < n:
        word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
                       for _ in range(rng.randint(*syllables)))
        if not any(w.startswith(word) or word.startswith(w) for w in words):
            words.append(word)
    return words
