"""What the search optimises and how it finishes: retention, floors, perplexity, finalists
re-scored on more items, local search, merged warm starts."""

from __future__ import annotations

import math
import random

import pytest

from recipe_compiler.language.parser import parse
from recipe_compiler.language.recipe import Drop, Merge
from recipe_compiler.search import make_evaluator, prepare, warm_starts
from recipe_compiler.search.genome import (
    MERGED,
    WarmStart,
    decode,
    genome_from_drops,
    merged,
    random_genome,
)
from recipe_compiler.search.objective import FAILED_FITNESS, Objective
from recipe_compiler.search.refine import (
    all_rungs,
    dense_recipe,
    finish,
    holdout_scores,
    references,
)
from recipe_compiler.search.run import Search
from recipe_compiler.search.space import read_settings
from tests.test_evolve import SEARCH, write_recipe


def test_mean_retention_floor_and_perplexity():
    plain = Objective(("a", "b"), (1.0, 1.0))
    assert plain({"a": 0.5, "b": 0.3}) == pytest.approx(0.4)
    assert plain({"a": math.nan, "b": 0.3}) == FAILED_FITNESS
    dense = {"base": {"a": 0.5, "b": 0.2, "t": 10.0}, "ft": {"a": 0.4, "b": 0.8, "t": 12.0}}
    ret = Objective(("a", "b"), (1.0, 1.0), ("t",), "retention").with_references(dense, "base")
    assert ret.best == {"a": 0.5, "b": 0.8}
    assert ret({"a": 0.5, "b": 0.4, "t": 11.0}) == pytest.approx((1.0 + 0.5) / 2)
    floor = Objective(("a", "b"), (1.0, 1.0), floor=0.8).with_references(dense, "base")
    # a: 0.3 is 0.1 below 0.8 * 0.5 = 0.4, a shortfall of 0.2 of the base's score; b is fine
    assert floor({"a": 0.3, "b": 0.5}) == pytest.approx(0.4 - 2.0 * 0.2 / 2)
    ppl = Objective(("a",), (1.0,), ("t",), ppl_weight=0.5).with_references(dense, "base")
    assert ppl({"a": 0.5, "t": 20.0}) == pytest.approx(0.5 - 0.5 * math.log(2))
    assert ppl({"a": 0.5, "t": 5.0}) == pytest.approx(0.5)  # better than the base: no bonus
    assert floor({"a": 0.0, "b": 0.0}) > FAILED_FITNESS  # a bad model still beats a failed one
    # a tolerance of 2.5x: 20 (2x the base's 10) is forgiven, 50 pays for 50 / 25 alone
    bound = Objective(("a",), (1.0,), ("t",), ppl_weight=0.5, ppl_tolerance=2.5
                      ).with_references(dense, "base")
    assert bound.ppl_tolerance == 2.5
    assert bound({"a": 0.5, "t": 20.0}) == pytest.approx(0.5)
    assert bound({"a": 0.5, "t": 50.0}) == pytest.approx(0.5 - 0.5 * math.log(2))


def test_new_settings_are_checked():
    r = parse('model a = "x"\nslot 0 = ?\nsearch {\n  fitness = best\n'
              '  min_task_retention = 180%\n  warm_merge = 3\n  final_limit = 0\n}', "s.tr")
    _, diags = read_settings(r)
    text = "\n".join(d.message for d in diags)
    assert "'fitness' must be mean or retention" in text
    assert "'min_task_retention' must be a number" in text
    assert "'warm_merge' must be true or false" in text
    assert "'final_limit' must be a whole number >= 1" in text
    r = parse('model a = "x"\nslot 0 = ?\nsearch {\n  ppl_tolerance = 0.5\n}', "s.tr")
    assert "'ppl_tolerance' must be a number >= 1" in "\n".join(
        d.message for d in read_settings(r)[1])
    r = parse('model a = "x"\nslot 0 = ?\nsearch {\n  ppl_tolerance = 2\n}', "s.tr")
    assert [d.message for d in read_settings(r)[1]] == [
        "ppl_tolerance needs ppl_weight: it says how much perplexity the perplexity term "
        "forgives"]
    r = parse('model a = "x"\nslot 0 = ?\nsearch {\n  ppl_weight = 1\n  ppl_tolerance = 2.5\n}',
              "s.tr")
    settings, diags = read_settings(r)
    assert not diags and (settings.ppl_weight, settings.ppl_tolerance) == (1.0, 2.5)
    ok = parse('model a = "x"\nslot 0 = ?\nsearch {\n  min_task_retention = 80%\n'
               '  final_limit = 200\n  limit = 50\n}', "s.tr")
    settings, diags = read_settings(ok)
    assert not diags and settings.min_task_retention == 0.8
    assert all_rungs(settings) == (50, 200)


@pytest.fixture()
def space(tmp_path, quick_zoo):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "final_limit = 40\nfinalists = 4\nlocal_search = 12\n"
                        "fitness = retention\nmin_task_retention = 80%\nppl_weight = 0.2")
    return prepare(path, {})


def test_text_tasks_give_perplexity_as_eval_computes_it(quick_zoo, tmp_path):
    """A text task's perplexity is `tailorc eval`'s: one document, each token seen after
    the text before it, line breaks and first words included; rung k scores the first
    rungs[k] lines of it. The quick zoo's context is 32 tokens (characters): a text that
    fits in 31 gets eval's value at every rung; a longer one, at the first rung, eval's with
    a context of 31 (a window's last token is in the row, so it holds one token less)."""
    import shutil

    from transformers import AutoModelForCausalLM

    from recipe_compiler.evaluate import evaluate, load_task

    model = AutoModelForCausalLM.from_pretrained(quick_zoo / "base").eval()
    assert model.config.max_position_embeddings == 32
    val = quick_zoo / "tasks" / "val"
    short = "".join(f"{w}\n" for w in ("ab", "c", "de", "f", "gh", "i", "jk", "l", "mn", "o"))
    for name, text in (("long", (val / "text.txt").read_text()), ("short", short)):
        tasks = tmp_path / name
        shutil.copytree(val, tasks)
        (tasks / "text.txt").write_text(text, encoding="utf-8")
        path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                            SEARCH.replace("limit = 24", "limit = 6").replace(
                                "min_limit = 12", "min_limit = 3")
                            + f'\ntasks = "{tasks}"\nfinal_limit = 9\nppl_weight = 0.2')
        ev = make_evaluator(prepare(path, {}))
        assert [t.name for t in ev.texts] == ["text"] and ev.rungs == (3, 6, 9)
        base = dense_recipe(ev.recipe and prepare(path, {}).space, "base")
        lines = text.splitlines(keepends=True)
        assert len(lines) > 9 and all(ln.strip() for ln in lines)
        for rung, n in enumerate(ev.rungs if name == "short" else ev.rungs[:1]):
            first = tmp_path / f"{name}-{n}" / "text.txt"
            first.parent.mkdir()
            first.write_text("".join(lines[:n]), encoding="utf-8")
            want = evaluate(model, ev.tokenizer, [load_task(first)],
                            max_length=32 if name == "short" else 31)["text"].primary
            assert ev.scores(base, rung)["text"] == pytest.approx(want, rel=1e-5), (name, n)

    # a tokenizer without offsets (a slow one): the whole cut text at the first rung
    class Slow:
        def __init__(self, tok):
            self.tok = tok

        def __call__(self, text, return_offsets_mapping=False, **kw):
            if return_offsets_mapping:
                raise NotImplementedError("return_offset_mapping is not available")
            return self.tok(text, **kw)

        def __getattr__(self, name):
            return getattr(self.tok, name)

    windows, edges = ev._text_windows(ev.texts[0], Slow(ev.tokenizer))
    assert edges == [0, len(windows), len(windows), len(windows)]
    split = ev._text_windows(ev.texts[0], ev.tokenizer)[0]  # the same tokens predicted
    assert [t for _, c in windows for t in c] == [t for _, c in split for t in c]


def test_finish_rescores_finalists_and_climbs(space):
    ev = make_evaluator(space)

    def score(recipes, rung):
        return [ev.scores(r, rung) for r in recipes]

    dense = references(space.space, score, len(ev.rungs) - 2)
    ev.objective = ev.objective.with_references(dense, "base")
    assert set(dense) == {"base", "math", "code", "recall", "strings"}
    search = Search(space.space, score, ev.fitness, warm=[{9, 10, 11}])
    pop, hof = search.run()
    before = search.evaluations
    best, final_scores = finish(search, pop, hof, score)
    assert final_scores == ev.scores(decode(space.space, list(best)), len(ev.rungs) - 1)
    assert search.evaluations >= before + 12  # local search spent its budget
    top = max(pop + list(hof.items), key=lambda i: i.fitness.values[0])
    assert best.fitness.values[0] >= top.fitness.values[0]  # the climb never goes down
    again = Search(space.space, score, ev.fitness, warm=[{9, 10, 11}])
    pop2, hof2 = again.run()
    assert list(finish(again, pop2, hof2, score)[0]) == list(best)  # same seed, same winner


def test_holdout_judges_the_finalists_on_the_items_the_search_never_read(tmp_path, quick_zoo):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH.replace("limit = 24", "limit = 6").replace(
                            "min_limit = 12", "min_limit = 3")
                        + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "final_limit = 10\nfinalists = 4\nlocal_search = 12\nholdout = true\n"
                        "min_task_retention = 80%\nppl_weight = 0.2")
    space = prepare(path, {})
    sp, settings = space.space, space.space.settings
    assert settings.holdout and all_rungs(settings) == (3, 6, 10)  # 10 items a task
    ev = make_evaluator(space)
    sizes = {t.name: len(t.items) for t in ev.tasks}

    def score(recipes, rung):
        return [ev.scores(r, rung) for r in recipes]

    ev.objective = ev.objective.with_references(references(sp, score, len(ev.rungs) - 2),
                                                "base")
    search = Search(sp, score, ev.fitness, warm=[{9, 10, 11}], task_sizes=sizes)
    pop, hof = search.run()
    best, got = finish(search, pop, hof, score)
    r = decode(sp, list(best))
    whole, seen = ev.scores(r, len(ev.rungs) - 1), ev.scores(r, len(ev.rungs) - 2)
    n, m = all_rungs(settings)[-1], all_rungs(settings)[-2]
    assert any(min(n, size) > m for size in sizes.values())  # some task has held-out items
    for task, size in sizes.items():
        a, b = min(m, size), min(n, size)
        want = (b * whole[task] - a * seen[task]) / (b - a) if b > a else whole[task]
        assert got[task] == pytest.approx(want), task
    assert got["text"] == whole["text"]  # perplexity: the whole text
    assert holdout_scores({"t": 0.5}, {"t": 0.75}, {"t": 100}, 40, 20) == {"t": 0.25}
    _, diags = read_settings(parse('model a = "x"\nslot 0 = ?\nsearch {\n  holdout = true\n'
                                   '  limit = 50\n  final_limit = 50\n}', "s.tr"))
    assert "holdout needs final_limit larger than limit" in diags[0].message


def test_merged_warm_start_is_the_merge_of_every_candidate_then_pruned(space):
    for source, weight in ((MERGED, 0.5), (merged(1.0), 1.0)):
        g = genome_from_drops(space.space, {9, 10, 11}, random.Random(0), source)
        ops = decode(space.space, g).ops()
        assert [i for i, op in enumerate(ops) if isinstance(op, Drop)] == [9, 10, 11]
        kept = [op for op in ops if not isinstance(op, Drop)]
        assert all(isinstance(op, Merge) and op.models == ("math", "code", "recall", "strings")
                   and op.weights == (weight,) * 4 and op.method == "task_arithmetic"
                   for op in kept)
    g = genome_from_drops(space.space, {9, 10, 11}, random.Random(0), MERGED)
    search = Search(space.space, lambda rs, rung: [], lambda s: 0.0, warm=[{9, 10, 11}])
    random.seed(0)
    first = search.initial_population()[0]
    assert list(first) == list(g)
    assert random_genome(space.space, random.Random(1)) != list(g)


def test_local_search_without_final_items(tmp_path, quick_zoo):
    """No final_limit: the climb's winner keeps the search's own scores as its final ones."""
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\nlocal_search = 6')
    p = prepare(path, {})
    ev = make_evaluator(p)

    def score(recipes, rung):
        return [ev.scores(r, rung) for r in recipes]

    search = Search(p.space, score, ev.fitness, warm=[{9, 10, 11}])
    pop, hof = search.run()
    best, final_scores = finish(search, pop, hof, score)
    assert final_scores == best.scores


def test_cma_es_tunes_the_winners_merge_weights_only(tmp_path, quick_zoo):
    """`tune_weights`: the structure stays, weights move within their range, the run is
    reproducible, and the result is never worse than where it started."""
    from recipe_compiler.search.refine import _tune_weights

    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "tune_weights = 10\nweight_range = [0.0, 1.0]")
    p = prepare(path, {})
    assert p.space.settings.tune_weights == 10
    ev = make_evaluator(p)

    def score(recipes, rung):
        return [ev.scores(r, rung) for r in recipes]

    search = Search(p.space, score, ev.fitness, warm=[{9, 10, 11}])
    start = search._new(genome_from_drops(p.space, {9, 10, 11}, random.Random(0), MERGED))
    search.evaluate([start])
    before = search.evaluations
    results = [_tune_weights(search, start, 10) for _ in range(2)]
    assert search.evaluations >= before + 20  # 10 candidates each, some on two rungs
    assert list(results[0]) == list(results[1])  # seeded
    best = results[0]
    assert best.fitness.values[0] >= start.fitness.values[0]
    for g, s in zip(best, start):
        assert (g.drop, g.sources, g.method, g.scale) == (s.drop, s.sources, s.method, s.scale)
        assert all(0.0 <= w <= 1.0 for w in g.weights)
    if best is not start:
        assert [g.weights for g in best] != [g.weights for g in start]


def test_warm_starts_lead_with_each_models_own_perplexity_pruner(tmp_path, quick_zoo, capsys):
    """Generation 0 starts from what `tailorc prune --method ppl` on each model, calibrated
    on the search's text task, drops from that model; then what the perplexity pruner, block
    influence and angular distance drop from the built merge at 0.5 and 1.0 each (as
    `tailorc prune` on it would), applied to that merge; then block influence, angular and
    drop-last on the base, applied to every model."""
    from recipe_compiler.cli import main

    val = quick_zoo / "tasks" / "val"
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?", SEARCH + f'\ntasks = "{val}"')
    p = prepare(path, {})
    starts = warm_starts(make_evaluator(p), p.space)
    models = ("base", "math", "code", "recall", "strings")
    on_merge = [(pruner, weight) for pruner in ("ppl", "block-influence", "angular")
                for weight in (0.5, 1.0)]
    assert [w.name for w in starts] == [
        *(f"ppl on {m}" for m in models),
        *(f"{pruner} on the merge at {weight:g} each" for pruner, weight in on_merge),
        "block-influence", "angular"]  # drop-last: angular's drops here, so left out
    assert starts[-1].drops == {9, 10, 11} and starts[-1].sources == ()
    for w, m in zip(starts, models):
        out = tmp_path / f"{m}.tr"
        assert main(["prune", str(quick_zoo / m), "--method", "ppl", "--calib",
                     str(val / "text.txt"), "--samples", "10", "-o", str(out)]) == 0
        ops = parse(out.read_text()).ops()
        assert w.sources == (m,) and w.drops == {i for i, op in enumerate(ops)
                                                 if isinstance(op, Drop)}
    for weight in (0.5, 1.0):  # the merge's own drops: as `tailorc prune` on the built merge
        merge = tmp_path / f"merge-{weight}"
        (tmp_path / "m.tr").write_text("\n".join(
            f'model {m} = "{quick_zoo / m}"' for m in models) + "\nslot 0..12 = merge("
            + ", ".join(models[1:]) + f", weights=[{', '.join([str(weight)] * 4)}], "
            "method=task_arithmetic)\n")
        assert main(["build", str(tmp_path / "m.tr"), "-o", str(merge)]) == 0
        for w, (pruner, at) in zip(starts[5:11], on_merge):
            if at != weight:
                continue
            out = tmp_path / f"{pruner}-{weight}.tr"
            assert main(["prune", str(merge), "--method", pruner, "--calib",
                         str(val / "text.txt"), "--samples", "10" if pruner == "ppl" else "64",
                         "-o", str(out)]) == 0
            ops = parse(out.read_text()).ops()
            assert w.sources == (merged(weight),) and w.drops == {
                i for i, op in enumerate(ops) if isinstance(op, Drop)}, w.name
    assert all(w.sources == () and len(w.drops) == 3 for w in starts[11:])

    # each start seeds its own sources, in order; a plain set seeds every model; a seed
    # that repeats one (same drops on the same model) is left out
    search = Search(p.space, lambda rs, rung: [], lambda s: 0.0,
                    warm=[WarmStart("x", frozenset({9, 10, 11}), ("code",)),
                          WarmStart("x again", frozenset({9, 10, 11}), ("code",)), {0, 1, 2}])
    random.seed(0)
    pop = search.initial_population()
    assert len(pop) == 6 and list(pop[0]) == genome_from_drops(
        p.space, {9, 10, 11}, random.Random(0), "code")
    assert list(pop[1]) == genome_from_drops(p.space, {0, 1, 2}, random.Random(0), MERGED)
    assert list(pop[2]) == genome_from_drops(p.space, {0, 1, 2}, random.Random(0), "base")


def test_ppl_tolerance_reaches_the_search_objective(tmp_path, quick_zoo):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "ppl_weight = 1\nppl_tolerance = 2.5")
    objective = make_evaluator(prepare(path, {})).objective
    assert (objective.texts, objective.ppl_weight, objective.ppl_tolerance) == (
        ("text",), 1.0, 2.5)
