"""Genomes: one gene per open slot, decoded to a closed recipe.

Consumes: a `SearchSpace` and a seeded `random.Random`.
Produces: random and heuristic individuals, repair to the size target, crossover and mutation
that respect the slot structure, and `decode(genome) -> Recipe` for the compiler.

A gene for a `?` slot follows GPTailor's encoding: a drop flag, the set of candidate models
whose layers it uses (none: the base's layer; one: that model's layer; several: a merge of
them with the base as the task-arithmetic reference), one weight per candidate, a merge
method, and an output scale. A gene for a `choose(...)` slot is the index of its option.
Dropping keeps the rest of the gene, so a slot that is kept again gets its old layer back.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from recipe_compiler import methods
from recipe_compiler.language.recipe import ClosedOp, Drop, Merge, Recipe, SlotDecl, Take
from recipe_compiler.search.space import SearchSpace, SlotSpace


@dataclass(frozen=True, slots=True)
class Gene:
    drop: bool = False
    sources: tuple[str, ...] = ()  # candidate models used; () = the base's own layer
    weights: tuple[float, ...] = ()  # one per candidate in the space, in its order
    method: str = methods.SEARCH_DEFAULT
    scale: float = 1.0
    choice: int = 0  # for choose(...) slots: index of the option


Genome = list  # list[Gene], one per SlotSpace in space.slots (DEAP individuals subclass it)


def gene_op(space: SearchSpace, slot: SlotSpace, gene: Gene) -> ClosedOp:
    if slot.options is not None:
        return slot.options[gene.choice]
    if gene.drop:
        return Drop()
    scale = None if gene.scale == 1.0 else gene.scale
    if not gene.sources:
        return Take(space.base, scale=scale)
    if len(gene.sources) == 1:
        return Take(gene.sources[0], scale=scale)
    idx = [space.candidates.index(m) for m in gene.sources]
    return Merge(gene.sources, method=gene.method, weights=tuple(gene.weights[i] for i in idx),
                 scale=scale)


def is_kept(slot: SlotSpace, gene: Gene) -> bool:
    if slot.options is not None:
        return not isinstance(slot.options[gene.choice], Drop)
    return not gene.drop


def decode(space: SearchSpace, genome: Genome) -> Recipe:
    """The closed recipe an individual stands for: fixed slots as written, genes filled in."""
    by_index = {s.index: gene_op(space, s, g) for s, g in zip(space.slots, genome)}
    decls = []
    for decl in space.recipe.slots:
        if decl.start in by_index:
            decls += [SlotDecl(i, i + 1, by_index[i]) for i in range(decl.start, decl.stop)]
        else:
            decls.append(decl)
    decls.sort(key=lambda d: d.start)
    return dataclasses.replace(space.recipe, slots=tuple(decls), search=None, comments=())


# --- making individuals --------------------------------------------------------------


def _weight(space: SearchSpace, rng: random.Random) -> float:
    lo, hi = space.settings.weight_range
    return round(rng.uniform(lo, hi), 3)


def _scale(space: SearchSpace, rng: random.Random) -> float:
    rng_ = space.settings.scale_range
    return 1.0 if rng_ is None else round(rng.uniform(*rng_), 3)


def random_gene(space: SearchSpace, slot: SlotSpace, rng: random.Random) -> Gene:
    if slot.options is not None:
        return Gene(choice=rng.randrange(len(slot.options)))
    n = len(space.candidates)
    # Mostly whole layers: a random merge of many models is rarely good, so merges start
    # small and the search grows them where they pay.
    roll = rng.random()
    if roll < 0.35 or n == 0:
        sources: tuple[str, ...] = ()
    elif roll < 0.85 or n == 1:
        sources = (rng.choice(space.candidates),)
    else:
        k = rng.randint(2, min(3, n))
        chosen = set(rng.sample(space.candidates, k))
        sources = tuple(m for m in space.candidates if m in chosen)
    return Gene(
        drop=rng.random() < 0.25,
        sources=sources,
        weights=tuple(_weight(space, rng) for _ in space.candidates),
        method=rng.choice(space.settings.methods),
        scale=_scale(space, rng),
    )


def random_genome(space: SearchSpace, rng: random.Random) -> Genome:
    want = rng.randint(space.min_kept, space.target_kept)
    return repair(space, [random_gene(space, s, rng) for s in space.slots], rng, want)


MERGED = "*"  # genome_from_drops' source for "every candidate merged" (at 0.5 each)


def merge_seeds(space: SearchSpace) -> bool:
    """Whether generation 0 may hold merges of every candidate: several candidates, open
    slots to merge in, and `warm_merge` on."""
    return (len(space.candidates) > 1 and space.settings.warm_merge
            and any(sl.options is None for sl in space.slots))


def merge_start_weights(space: SearchSpace) -> list[float]:
    """The weights generation 0's merges of every candidate use: 0.5 and 1.0 each, within
    `weight_range` (one when they clip to the same)."""
    lo, hi = space.settings.weight_range
    return list(dict.fromkeys(max(lo, min(hi, w)) for w in (0.5, 1.0)))


def merged(weight: float) -> str:
    """genome_from_drops' source for every candidate merged at `weight` each."""
    return MERGED if weight == 0.5 else f"{MERGED}{weight:g}"


def merge_weight(source: str | None) -> float | None:
    """The weight of a `merged(...)` source; None for a model's name."""
    if source is None or not source.startswith(MERGED):
        return None
    return float(source[len(MERGED):] or 0.5)


@dataclass(frozen=True)
class WarmStart:
    """A pruning heuristic's answer: `drops` applied to `sources` (model names, or MERGED),
    each an individual of generation 0; no sources means every model (the merge, the base,
    each candidate)."""

    name: str
    drops: frozenset[int]
    sources: tuple[str, ...] = ()
    # slots whose kept layer comes from another source than `sources`' (slot index, source
    # as `with_drops` names it): the greedy sweep's source changes
    swaps: tuple[tuple[int, str], ...] = ()


def genome_from_drops(space: SearchSpace, drops: set[int], rng: random.Random,
                      source: str | None = None,
                      swaps: tuple[tuple[int, str], ...] = ()) -> Genome:
    """One model (the base by default) with exactly these slots dropped, as far as the open
    slots allow: the seed for a pruning heuristic's answer applied to that model. With
    `source=MERGED`, every kept open slot merges all candidates at weight 0.5 each (within
    `weight_range`), the usual task-arithmetic merge: what a mergekit user's merge, then
    pruned, would be; `source=merged(w)`, at weight w each. `swaps` take some kept slots
    from other sources (`with_swaps`)."""
    return repair(space, with_swaps(space, with_drops(space, drops, source), swaps), rng)


def with_swaps(space: SearchSpace, genome: Genome,
               swaps: tuple[tuple[int, str], ...] | dict[int, str]) -> Genome:
    """`genome` with each open slot named in `swaps` (slot index -> source, as `with_drops`
    names sources) taking its layer from that source instead; drops stay as they are."""
    swaps = dict(swaps)
    out = list(genome)
    for k, slot in enumerate(space.slots):
        if slot.index in swaps and slot.options is None:
            gene = with_drops(space, set(), swaps[slot.index])[k]
            out[k] = dataclasses.replace(gene, drop=genome[k].drop)
    return out


def with_drops(space: SearchSpace, drops: set[int] | frozenset[int],
               source: str | None = None) -> Genome:
    """`genome_from_drops` before the repair: these slots dropped (those the slot allows),
    every other kept, whatever the size target (the greedy pruner's steps)."""
    weight = merge_weight(source)
    if weight is not None:
        sources = space.candidates
        lo, hi = space.settings.weight_range
        weights = tuple(max(lo, min(hi, weight)) for _ in space.candidates)
    else:
        sources = (source,) if source is not None and source != space.base else ()
        weights = tuple(0.5 for _ in space.candidates)
    genes = []
    for slot in space.slots:
        if slot.options is None:
            genes.append(Gene(drop=slot.index in drops, sources=sources, weights=weights,
                              method=space.settings.methods[0]))
        else:
            want_drop = slot.index in drops
            fits = [i for i, o in enumerate(slot.options) if isinstance(o, Drop) == want_drop]
            pick = next((i for i in fits if sources and isinstance(slot.options[i], Take)
                         and slot.options[i].model == sources[0]), fits[0] if fits else 0)
            genes.append(Gene(choice=pick))
    return genes


def kept_count(space: SearchSpace, genome: Genome) -> int:
    return space.fixed_kept + sum(is_kept(s, g) for s, g in zip(space.slots, genome))


def _set_kept(slot: SlotSpace, gene: Gene, keep: bool, rng: random.Random) -> Gene:
    if slot.options is None:
        return dataclasses.replace(gene, drop=not keep)
    choices = [i for i, o in enumerate(slot.options) if isinstance(o, Drop) != keep]
    return dataclasses.replace(gene, choice=rng.choice(choices))


def repair(space: SearchSpace, genome: Genome, rng: random.Random,
           want: int | None = None) -> Genome:
    """Drop or restore random slots until the kept layers meet the size target: exactly
    `target_kept`, or within [min_kept, target_kept] when size is an objective."""
    genome = list(genome)
    kept = kept_count(space, genome)
    if want is None:
        want = min(max(kept, space.min_kept), space.target_kept)
    while kept != want:
        keep = kept < want
        movable = [k for k, (s, g) in enumerate(zip(space.slots, genome))
                   if is_kept(s, g) != keep and (s.can_keep if keep else s.can_drop)]
        k = rng.choice(movable)
        genome[k] = _set_kept(space.slots[k], genome[k], keep, rng)
        kept += 1 if keep else -1
    return genome


# --- variation ---------------------------------------------------------------------


def crossover(space: SearchSpace, a: Genome, b: Genome, rng: random.Random
              ) -> tuple[Genome, Genome]:
    """Two-point crossover over slots (neighbouring slots travel together), then repair."""
    n = len(a)
    if n < 2:
        return list(a), list(b)
    i, j = sorted(rng.sample(range(n + 1), 2))
    c1 = list(a[:i]) + list(b[i:j]) + list(a[j:])
    c2 = list(b[:i]) + list(a[i:j]) + list(b[j:])
    return repair(space, c1, rng), repair(space, c2, rng)


def mutate(space: SearchSpace, genome: Genome, rng: random.Random, rate: float) -> Genome:
    """Each gene mutates with probability `rate`: its op (drop/keep, then repaired), its
    sources, a weight, the method or the scale."""
    genome = list(genome)
    for k, (slot, gene) in enumerate(zip(space.slots, genome)):
        if rng.random() < rate:
            genome[k] = mutate_gene(space, slot, gene, rng)
    return repair(space, genome, rng)


def mutate_gene(space: SearchSpace, slot: SlotSpace, gene: Gene, rng: random.Random) -> Gene:
    if slot.options is not None:
        return dataclasses.replace(gene, choice=rng.randrange(len(slot.options)))
    what = rng.choice(("drop", "sources", "weight", "method", "scale"))
    if what == "drop":
        return dataclasses.replace(gene, drop=not gene.drop)
    if what == "sources" and space.candidates:
        m = rng.choice(space.candidates)
        chosen = set(gene.sources) ^ {m}
        return dataclasses.replace(gene, sources=tuple(c for c in space.candidates
                                                       if c in chosen))
    if what == "weight" and gene.weights:
        lo, hi = space.settings.weight_range
        i = rng.randrange(len(gene.weights))
        w = min(hi, max(lo, gene.weights[i] + rng.gauss(0, 0.15 * (hi - lo or 1))))
        return dataclasses.replace(gene, weights=gene.weights[:i] + (round(w, 3),)
                                   + gene.weights[i + 1:])
    if what == "method" and len(space.settings.methods) > 1:
        return dataclasses.replace(gene, method=rng.choice(space.settings.methods))
    if what == "scale" and space.settings.scale_range is not None:
        lo, hi = space.settings.scale_range
        return dataclasses.replace(gene, scale=round(min(hi, max(lo, gene.scale
                                                                  + rng.gauss(0, 0.1))), 3))
    return random_gene(space, slot, rng) if rng.random() < 0.5 else gene
