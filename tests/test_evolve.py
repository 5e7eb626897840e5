"""The search: size targets, decoding, caches that change nothing, reproducibility, resume."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from recipe_compiler.compiler.check import check
from recipe_compiler.compiler.plan import lower
from recipe_compiler.language.parser import parse
from recipe_compiler.language.source import RecipeError
from recipe_compiler.search import EvolveError, make_evaluator, prepare
from recipe_compiler.search.genome import decode, kept_count, mutate, random_genome
from recipe_compiler.search.run import Search
from recipe_compiler.search.space import read_settings

SKILLS = ("math", "code", "recall", "strings")


def write_recipe(tmp: Path, zoo: Path, slots: str, search: str) -> Path:
    models = "\n".join(f'model {m} = "{zoo / m}"' for m in ("base", *SKILLS))
    path = tmp / "space.tr"
    path.write_text(f"{models}\n{slots}\nsearch {{\n{search}\n}}\n")
    return path


SEARCH = """remove = 25%
population = 6
generations = 2
seed = 3
limit = 24
min_limit = 12
batch_size = 8"""


@pytest.fixture()
def space_file(tmp_path, quick_zoo):
    return write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"')


def test_settings_errors_point_at_the_line():
    r = parse('model a = "x"\nslot 0 = ?\nsearch {\n  populaton = 3\n  remove = "lots"\n}', "s.tr")
    _, diags = read_settings(r)
    text = "\n".join(d.message for d in diags)
    assert "unknown search setting 'populaton' (did you mean 'population'?)" in text
    assert "'remove' must be a whole number" in text
    assert [d.span.line for d in diags] == [4, 5]


def test_size_targets(quick_zoo, tmp_path):
    for search, kept in (("remove = 25%", 9), ("keep = 7", 7), ("remove = 2", 10)):
        path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                            search + f'\ntasks = "{quick_zoo}/tasks/val"')
        assert prepare(path, {}).space.target_kept == kept
    path = write_recipe(tmp_path, quick_zoo, "slot 0..10 = take(base)\nslot 10..12 = ?",
                        'remove = 50%\ntasks = "x"')
    with pytest.raises(RecipeError, match="can keep only 10..12"):
        prepare(path, {})


def test_every_individual_meets_the_target_and_compiles(quick_zoo, tmp_path):
    slots = ("slot 0..2 = take(base)\nslot 2..10 = ?\n"
             "slot 10 = choose(drop, take(math), merge(math, code, weights=[0.5, 0.5]))\n"
             "slot 11 = choose(take(base), take(code))")
    path = write_recipe(tmp_path, quick_zoo, slots, SEARCH + '\ntasks = "x"')
    p = prepare(path, {})
    rng = random.Random(0)
    for _ in range(200):
        g = random_genome(p.space, rng)
        g = mutate(p.space, g, rng, 0.5)
        assert kept_count(p.space, g) == p.space.target_kept == 9
        recipe = decode(p.space, g)
        assert not recipe.open_slots()
        assert check(recipe, p.models, require_closed=True) == []
        plan = lower(recipe, p.models)
        assert sum(1 for s in plan.slots if s.out_layer is not None) == 9


def test_cached_and_uncached_fitness_are_identical(space_file):
    p = prepare(space_file, {})
    cached = make_evaluator(p)
    plain = make_evaluator(p, caches=False)
    rng = random.Random(1)
    parent = random_genome(p.space, rng)
    family = [parent] + [mutate(p.space, parent, rng, 0.2) for _ in range(5)]
    family += [random_genome(p.space, rng) for _ in range(3)]
    for rung in (0, 1):
        for g in family + family[:2]:
            r = decode(p.space, g)
            assert cached.scores(r, rung) == plain.scores(r, rung)
    assert cached.stats.act_hits > 0 and cached.stats.score_hits > 0
    assert plain.stats.act_hits == 0


def test_layer_templates_hold_no_tensors_between_calls(space_file):
    """A layer runs with the store's tensors bound into its meta-device template for the
    call only: afterwards every template parameter is on the meta device again, so no
    candidate's layer stays alive outside the store's budget."""
    p = prepare(space_file, {})
    ev = make_evaluator(p)
    rng = random.Random(3)
    ev.scores_many([decode(p.space, random_genome(p.space, rng)) for _ in range(3)], 0)
    assert ev.stack.layers_run > 0
    for template in ev.stack.templates:
        assert all(t.device.type == "meta" for t in template.parameters())


def _family(space, seed: int, n: int = 12) -> list:
    """Genomes as a generation holds them: mutants of two parents (shared layers at the
    same slots, behind different prefixes) and a few strangers."""
    rng = random.Random(seed)
    parents = [random_genome(space, rng) for _ in range(2)]
    family = parents + [mutate(space, parents[i % 2], rng, 0.2) for i in range(n - 4)]
    return family + [random_genome(space, rng) for _ in range(2)]


def test_a_generation_scored_as_a_tree_scores_what_one_by_one_does(space_file):
    """`scores_many` runs each distinct layer prefix once and stacks the prefixes that go
    on through the same layer into one call: the scores are those of `scores`, with fewer
    layer calls."""
    p = prepare(space_file, {})
    tree, alone = make_evaluator(p), make_evaluator(p)
    for rung in (0, 1):
        recipes = [decode(p.space, g) for g in _family(p.space, 7)]
        recipes.append(recipes[0])  # a repeat is scored once
        got = tree.scores_many(recipes, rung)
        want = [alone.scores(r, rung) for r in recipes]
        for a, b in zip(got, want):
            assert a == pytest.approx(b, abs=1e-6)
    assert tree.stack.layer_calls < tree.stack.layers_run  # some calls ran stacked rows
    assert alone.stack.layer_calls == alone.stack.layers_run
    assert tree.stats == alone.stats  # the same evaluations, score hits, layers skipped
    assert tree.scores_many(recipes, 1) == got  # now every one is a score-cache hit


def test_stacked_calls_stay_within_their_token_budget(space_file, monkeypatch):
    """On a CPU the stacked rows of one layer are split into calls of at most
    `STACKED_TOKENS` tokens (one copy of the batch at least): same scores, more calls."""
    from recipe_compiler.search import stack as stack_module

    p = prepare(space_file, {})
    recipes = [decode(p.space, g) for g in _family(p.space, 7)]
    wide = make_evaluator(p).scores_many(recipes, 0)
    sizes = []
    monkeypatch.setattr(stack_module, "STACKED_TOKENS", 1)
    narrow = make_evaluator(p)
    apply = narrow.stack.apply

    def spy(op, src, h, *args, copies=1, **kwargs):
        sizes.append(copies)
        return apply(op, src, h, *args, copies=copies, **kwargs)

    monkeypatch.setattr(narrow.stack, "apply", spy)
    got = narrow.scores_many(recipes, 0)
    assert set(sizes) == {1}  # a budget below one copy: each copy alone
    for a, b in zip(got, wide):
        assert a == pytest.approx(b, abs=1e-6)


def test_a_failing_layer_in_the_tree_fails_only_its_candidates(space_file, caplog):
    """A merged layer whose weights hold NaN spoils the rows stacked with it only for the
    candidates that use it: they get NaN scores (reported as when scored alone), the others
    their own scores."""
    from recipe_compiler.language.recipe import Merge

    p = prepare(space_file, {})
    ev, plain = make_evaluator(p), make_evaluator(p, caches=False)
    recipes = [decode(p.space, g) for g in _family(p.space, 11, 16)]
    bad = next(op for r in recipes for op in r.ops() if isinstance(op, Merge))
    real = ev.store.layer

    def poisoned(op, src, *, keep=True):
        params = real(op, src, keep=keep)
        return {k: v * float("nan") for k, v in params.items()} if op == bad else params

    ev.store.layer = poisoned
    got = ev.scores_many(recipes, 0)
    for recipe, scores in zip(recipes, got):
        if bad in recipe.ops():
            assert all(v != v for v in scores.values()), recipe  # NaN
        else:
            assert scores == pytest.approx(plain.scores(recipe, 0), abs=1e-6)
    assert any(bad in r.ops() for r in recipes) and "could not be scored" in caplog.text


def test_shared_contexts_score_what_separate_rows_score(space_file):
    """A multiple-choice item is one row (its context once, each choice a branch) and short
    items are packed side by side: fewer, fuller rows, the same log-likelihoods."""
    p = prepare(space_file, {"ppl_weight": 0.5})
    shared = make_evaluator(p)
    plain = make_evaluator(p, share_contexts=False)
    assert shared.share_contexts and not plain.share_contexts
    cells = [sum(g.ids.numel() for g in ev.inputs) for ev in (shared, plain)]
    assert cells[0] < 0.85 * cells[1], cells
    assert any(g.mask.dim() == 4 for g in shared.inputs)
    assert all(g.mask.dim() == 2 for g in plain.inputs)
    # a rung's items of every task share forward passes: fewer passes than batches
    assert len(shared.inputs) < len(shared.batches)
    assert len(plain.inputs) == len(plain.batches)
    assert {len({b.task for b in map(shared.batches.__getitem__, g.batches)})
            for g in shared.inputs} != {1}
    rng = random.Random(3)
    for _ in range(3):
        r = decode(p.space, random_genome(p.space, rng))
        one, two = _option_logliks(shared, r), _option_logliks(plain, r)
        assert one.keys() == two.keys()
        for key in one:
            torch.testing.assert_close(one[key], two[key], rtol=0, atol=2e-5)
        one, two = shared.scores(r, 1), plain.scores(r, 1)
        assert {t: v for t, v in one.items() if t != "text"} == {
            t: v for t, v in two.items() if t != "text"}
        assert one["text"] == pytest.approx(two["text"], rel=1e-6)


def _option_logliks(ev, recipe) -> dict:
    """(task, item, option) -> the log-probabilities of the option's tokens, every rung."""
    out = {}
    for g, run in enumerate(ev.inputs):
        for b, logprobs in zip(run.batches, ev.inputs_logprobs(recipe, g)):
            batch = ev.batches[b]
            picked = logprobs.gather(-1, batch.tokens[:, None])[:, 0]
            for item, targets in zip(batch.items, batch.targets):
                for j, (lo, hi) in enumerate(targets):
                    out[(batch.task, item, j)] = picked[lo:hi]
    return out


def test_prob_metric_is_the_right_choices_share_of_probability(space_file):
    """`metric = prob`: each multiple-choice item scores the softmax of its choices'
    log-likelihoods (as eval computes them) at the right one; generation items keep exact
    match; and the checker refuses other metrics."""
    from transformers import AutoTokenizer

    from recipe_compiler.evaluate.loglik import loglikelihoods
    from recipe_compiler.execute.assemble import assemble

    p = prepare(space_file, {"metric": "prob"})
    assert p.space.settings.metric == "prob"
    ev, acc = make_evaluator(p), make_evaluator(prepare(space_file, {}))
    tok = AutoTokenizer.from_pretrained(p.models["base"].path)
    recipe = decode(p.space, random_genome(p.space, random.Random(5)))
    got, plain = ev.scores(recipe, 1), acc.scores(recipe, 1)
    model = assemble(recipe, p.models)
    limit = ev.rungs[1]
    for task in ev.tasks:
        if task.kind != "mc":
            assert got[task.name] == plain[task.name]
            continue
        items = task.items[:limit]
        lls = loglikelihoods(model, tok, [(i.context, c) for i in items for c in i.choices])
        want, at = [], 0
        for item in items:
            row = torch.tensor(lls[at:at + len(item.choices)], dtype=torch.float64)
            at += len(item.choices)
            want.append(torch.softmax(row, 0)[item.gold].item())
        assert got[task.name] == pytest.approx(sum(want) / len(want), abs=1e-4), task.name
        assert 0 < got[task.name] < 1 and got[task.name] != plain[task.name]
    _, diags = read_settings(parse('model a = "x"\nslot 0 = ?\nsearch { metric = f1 }', "s.tr"))
    assert [d.message for d in diags] == ["search setting 'metric' must be acc or prob"]


def test_fast_fitness_matches_the_evaluator(space_file):
    from transformers import AutoTokenizer

    from recipe_compiler.evaluate import evaluate
    from recipe_compiler.execute.assemble import assemble

    p = prepare(space_file, {})
    ev = make_evaluator(p)
    tok = AutoTokenizer.from_pretrained(p.models["base"].path)
    rng = random.Random(2)
    for _ in range(3):
        recipe = decode(p.space, random_genome(p.space, rng))
        fast = ev.scores(recipe, 1)
        model = assemble(recipe, p.models)
        slow = evaluate(model, tok, ev.tasks, limit=24)
        assert fast == {name: s.primary for name, s in slow.items()}


def run_search(p, state: Path | None = None, resume: bool = False, stop_at: int | None = None):
    ev = make_evaluator(p)

    def score(recipes, rung):
        return [ev.scores(r, rung) for r in recipes]

    def maybe_stop(g):
        if stop_at is not None and g.generation == stop_at:
            raise KeyboardInterrupt

    search = Search(p.space, score, ev.fitness, warm=[{9, 10, 11}],
                    state_path=str(state) if state else None, on_generation=maybe_stop)
    pop, hof = search.run(resume=resume)
    return search, pop, hof


def summary(search, pop):
    history = [{k: v for k, v in h.items() if k not in ("seconds", "evals_per_s")}
               for h in search.history]
    return [(list(i), i.fitness.values) for i in pop], history


def test_seeded_runs_are_reproducible(space_file):
    p = prepare(space_file, {})
    a = summary(*run_search(p)[:2])
    b = summary(*run_search(p)[:2])
    assert a == b
    assert len(a[1]) == 3  # generations 0..2


def test_resume_reaches_the_uninterrupted_result(space_file, tmp_path):
    p = prepare(space_file, {"generations": 3})
    whole = summary(*run_search(p)[:2])
    state = tmp_path / "state.json"
    with pytest.raises(KeyboardInterrupt):
        run_search(p, state, stop_at=1)
    resumed = summary(*run_search(p, state, resume=True)[:2])
    assert resumed == whole


def test_resume_refuses_another_recipe(space_file, tmp_path):
    p = prepare(space_file, {"generations": 1})
    state = tmp_path / "state.json"
    run_search(p, state)
    other = prepare(space_file, {"generations": 1, "seed": 99})
    with pytest.raises(ValueError, match="different recipe or settings"):
        run_search(other, state, resume=True)


def test_score_and_size_gives_a_pareto_front(space_file):
    p = prepare(space_file, {"objectives": ("score", "size"), "population": 8})
    assert p.space.min_kept < p.space.target_kept
    search, pop, hof = run_search(p)
    sizes = {int(i.fitness.values[1]) for i in hof.items}
    assert hof.items and all(p.space.params(p.space.min_kept) <= s <=
                             p.space.params(p.space.target_kept) for s in sizes)


def test_missing_tasks_is_a_clear_error(quick_zoo, tmp_path):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?", 'remove = 25%\ntasks = "nope"')
    with pytest.raises(EvolveError, match="nope"):
        make_evaluator(prepare(path, {}))


def test_worker_processes_give_the_local_result(space_file):
    from recipe_compiler.search import LocalMap

    overrides = {"generations": 1, "population": 4}
    p = prepare(space_file, overrides)
    local = summary(*run_search(p)[:2])
    ev = make_evaluator(p)
    workers = LocalMap(ev, 2, (str(space_file), overrides, "cpu", 1, True))
    try:
        search = Search(p.space, workers, ev.fitness, warm=[{9, 10, 11}])
        pop, _ = search.run()
    finally:
        workers.close()
    assert summary(search, pop) == local


ARCHES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2", "gpt_neox")


@pytest.mark.parametrize("arch", ARCHES)
def test_every_architecture_is_searched_as_it_is_built(arch, arch_family, tmp_path):
    """Fitness in memory equals `tailorc eval` of the built checkpoint, for every
    architecture `build` supports: takes, drops, merges and a scaled take."""
    import json

    from recipe_compiler.evaluate import evaluate
    from recipe_compiler.execute.assemble import assemble
    from recipe_compiler.zoo.tokenizer import build_tokenizer

    root = arch_family(arch)
    tok = build_tokenizer()
    for name in ("base", "math", "code"):
        tok.save_pretrained(root / name)
    items = [{"context": f"{a} + {b} =", "choices": [f" {a + b}", f" {a * b}", " 7"],
              "gold": 0} for a, b in ((1, 2), (3, 4), (5, 6), (2, 9))]
    gen = [{"prompt": f"say {w}:", "answer": f" {w}"} for w in ("ab", "cd", "xy")]
    gen.append({"prompt": "say yz: ", "answer": "yz"})  # trailing space: must be decoded
    (tmp_path / "tasks").mkdir()
    for name, rows in (("mc", items), ("gen", gen)):
        (tmp_path / "tasks" / f"{name}.jsonl").write_text(
            "".join(json.dumps(it) + "\n" for it in rows))
    path = tmp_path / "g.tr"
    path.write_text(f'model base = "{root / "base"}"\nmodel math = "{root / "math"}"\n'
                    f'model code = "{root / "code"}"\n'
                    'slot 0..6 = ?\nsearch {\n  remove = 2\n  tasks = "tasks"\n'
                    '  limit = 8\n  scale_range = [0.5, 1.5]\n}\n')
    p = prepare(path, {})
    ev = make_evaluator(p)
    rng = random.Random(5)
    recipes = []
    for _ in range(4):
        recipe = decode(p.space, random_genome(p.space, rng))
        model = assemble(recipe, p.models)
        slow = evaluate(model, tok, ev.tasks, limit=8)
        assert ev.scores(recipe, 0) == {n: s.primary for n, s in slow.items()}, recipe
        recipes.append(recipe)
    assert ev.stats.decoded >= 4  # the item teacher forcing cannot judge, in every candidate
    tree = make_evaluator(p)  # a generation as a tree: the masks and positions of each
    recipes += [decode(p.space, g) for g in _family(p.space, 5, 8)]  # architecture repeat
    for recipe, scores in zip(recipes, tree.scores_many(recipes, 0)):  # for stacked rows
        assert scores == pytest.approx(ev.scores(recipe, 0), abs=1e-6), recipe
    assert tree.stack.layer_calls < tree.stack.layers_run


def test_search_settings_for_memory_and_dtype(space_file):
    p = prepare(space_file, {"max_memory": 64 << 20, "dtype": "bfloat16"})
    ev = make_evaluator(p)
    assert ev.store.cache.budget == 64 << 20 and ev.dtype == "bfloat16"
    r = parse('model a = "x"\nslot 0 = ?\nsearch {\n  max_memory = "lots"\n'
              '  dtype = float8\n}', "s.tr")
    _, diags = read_settings(r)
    text = "\n".join(d.message for d in diags)
    assert "'max_memory': not a size: 'lots'" in text
    assert "'dtype' must be one of float32, bfloat16 or float16" in text


def test_a_small_memory_budget_changes_nothing(space_file):
    """Evicting layers and activations all the time gives the same numbers."""
    p = prepare(space_file, {})
    roomy = make_evaluator(p)
    tight = make_evaluator(prepare(space_file, {"max_memory": 32 << 10}))
    rng = random.Random(4)
    for _ in range(4):
        r = decode(p.space, random_genome(p.space, rng))
        assert tight.scores(r, 1) == roomy.scores(r, 1)
    assert tight.store.cache.used <= 32 << 10 or len(tight.store.cache) == 1
    assert tight.store.stats.layers_read > roomy.store.stats.layers_read


def test_the_search_refuses_what_it_cannot_evaluate_at_its_line(tmp_path, quick_zoo):
    path = write_recipe(tmp_path, quick_zoo, "embed = take(math)\nslot 0..12 = ?",
                        f'remove = 25%\ntasks = "{quick_zoo / "tasks" / "val"}"')
    with pytest.raises(RecipeError) as info:
        prepare(path, {})
    assert "the search keeps the base model's embed" in str(info.value)


def test_units_are_packed_into_the_width_that_leaves_the_fewest_cells():
    from recipe_compiler.search.fitness import _pack, _pack_tightest

    lengths = [13, 12, 10, 9, 11, 13, 8, 12]
    width, rows = _pack_tightest(lengths)
    assert sorted(u for row in rows for u in row) == list(range(len(lengths)))
    assert all(sum(lengths[u] for u in row) <= width for row in rows)
    assert 13 <= width <= 26
    # rows of the longest unit's width leave one unit per row: 8 rows x 13 cells
    assert len(_pack(lengths, 13)) * 13 == 104
    assert len(rows) * width < 104
    assert len(rows) * width == min(len(_pack(lengths, w)) * w for w in range(13, 27))
    assert _pack_tightest([5, 5, 5]) == (5, [[0], [1], [2]])  # no padding: the narrowest


def test_a_continuations_last_token_is_not_run():
    """It predicts nothing scored and nothing in its branch reads it (as lm-eval feeds
    context + continuation less its last token): a row holds the context and each
    continuation but its last token, and the options still score every token."""
    from recipe_compiler.search.fitness import _Unit

    unit = _Unit.branched([((1, 2, 3), (4, 5)), ((1, 2, 3), (6,))])
    assert unit.tokens == (1, 2, 3, 4)
    assert unit.branches == (0, 0, 0, 1) and unit.places == (0, 1, 2, 3)
    assert unit.options == (((2, 4), (3, 5)), ((2, 6),))
    window = _Unit.branched([((9,), (7, 8, 5))])  # one continuation: a plain sequence
    assert window.tokens == (9, 7, 8) and window.branches == (0, 0, 0)
    assert window.options == (((0, 7), (1, 8), (2, 5)),)
