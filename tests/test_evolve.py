"""The search: size targets, decoding, caches that change nothing, reproducibility, resume."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

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


def test_an_architecture_the_search_cannot_run_is_a_clear_error(arch_family, tmp_path):
    root = arch_family("gpt2")
    path = tmp_path / "g.tr"
    path.write_text(f'model base = "{root / "base"}"\nmodel math = "{root / "math"}"\n'
                    'slot 0..6 = ?\nsearch {\n  remove = 2\n  tasks = "x.jsonl"\n}\n')
    (tmp_path / "x.jsonl").write_text('{"prompt": "a", "answer": "b"}\n')
    with pytest.raises(EvolveError):
        make_evaluator(prepare(path, {}))
