"""`greedy_start`: the search prunes its best dense start one layer at a time by its own
fitness before generation 0, and that end point leads generation 0."""

from __future__ import annotations

import json
import random
import re

from recipe_compiler.cli import main
from recipe_compiler.language.recipe import Drop, Merge, Take
from recipe_compiler.search import prepare
from recipe_compiler.search.genome import decode, genome_from_drops, merged
from recipe_compiler.search.greedy import greedy_start, starts, warm_start
from recipe_compiler.search.run import Search
from tests.test_evolve import SEARCH, write_recipe

# what a removal costs the fake fitness; slot 5 is cheap only once slot 4 is gone, so a
# greedy that did not re-score after each removal would take 9 instead
COST = {0: 9, 1: 8, 2: 7, 3: 6, 4: 1, 5: 5, 6: 9, 7: 2, 8: 9, 9: 4.5, 10: 9, 11: 9}


def _drops_and_cost(ops) -> tuple[set[int], float]:
    """The slots dropped and what the fake fitness charges for them."""
    dropped = {i for i, op in enumerate(ops) if isinstance(op, Drop)}
    return dropped, sum(0.5 if i == 5 and 4 in dropped else COST[i] for i in dropped)


def fake_scores(recipe) -> dict[str, float]:
    ops = recipe.ops()
    _, cost = _drops_and_cost(ops)
    kept = [op for op in ops if not isinstance(op, Drop)]
    # the merge at 1.0 each is the best dense start; the base the worst
    bonus = {"merge1": 3.0, "merge": 2.0, "base": 0.0}
    kind = ("merge1" if isinstance(kept[0], Merge) and kept[0].weights[0] == 1.0 else
            "merge" if isinstance(kept[0], Merge) else
            "base" if isinstance(kept[0], Take) and kept[0].model == "base" else "model")
    return {"t": bonus.get(kind, 1.0) - cost}


def test_greedy_drops_the_cheapest_slot_each_step_from_the_best_dense_start(tmp_path,
                                                                             quick_zoo):
    p = prepare(write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                             SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                             "greedy_start = true"), {})
    calls = []

    def score(recipes, rung):
        calls.append((len(recipes), rung))
        return [fake_scores(r) for r in recipes]

    search = Search(p.space, score, lambda s: s["t"], warm=[{0, 1, 2}])
    assert starts(p.space) == [merged(0.5), merged(1.0), "base", "math", "code", "recall",
                               "strings"]
    warm, record = greedy_start(search)
    label, path = record["start"], record["path"]
    assert label == "the merge at 1 each" and warm.sources == (merged(1.0),)
    assert record["source"] == merged(1.0)
    # 4 first (cost 1), then 5 (0.5 once 4 is gone), then 7 (2): 25% of 12 slots
    assert [s["slot"] for s in path] == [4, 5, 7] and warm.drops == {4, 5, 7}
    assert [s["fitness"] for s in path] == [2.0, 1.5, -0.5]
    assert record["evaluations"] == 7 + 12 + 11 + 10
    # every evaluation at the search's last rung, and counted: 7 dense starts, 12 + 11 + 10
    assert calls == [(7, 1), (12, 1), (11, 1), (10, 1)]
    assert search.evaluations == 7 + 12 + 11 + 10


def test_greedy_start_leads_generation_0_and_is_recorded(tmp_path, quick_zoo):
    p = prepare(write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                             SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                             "greedy_start = true\nwarm_start = 0"), {})
    search = Search(p.space, lambda rs, rung: [fake_scores(r) for r in rs], lambda s: s["t"])
    random.seed(0)
    pop, hof = search.run()
    # with warm_start = 0 too, the greedy's end point is generation 0's first individual
    first = search.history[0]["greedy"]
    assert first["start"] == "the merge at 1 each" and first["drops"] == [4, 5, 7]
    assert first["evaluations"] == 40 and [s["slot"] for s in first["path"]] == [4, 5, 7]
    assert search.history[0]["evaluations"] > 40
    assert hof.items[0].fitness.values[0] >= -0.5  # nothing found is worse than the greedy's
    best = decode(p.space, list(hof.items[0]))
    assert sum(isinstance(op, Drop) for op in best.ops()) == 3


def test_evolve_with_greedy_start_on_the_quick_zoo(tmp_path, quick_zoo, capsys):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "greedy_start = true\nlocal_search = 6\nfinal_limit = 48")
    assert main(["evolve", str(path), "-o", str(tmp_path / "run")]) == 0
    first = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[0])
    greedy = first["greedy"]
    assert len(greedy["drops"]) == 3 and len(greedy["path"]) == 3
    # the greedy and the finish are not silent: a line per removal, per local-search round
    lines = [line.strip() for line in capsys.readouterr().err.splitlines()]
    said = [line.rsplit(" [", 1)[0] for line in lines
            if line.startswith(("greedy start:", "local search:", "finish:"))]
    assert said[0] == "greedy start: scoring 7 dense starts"
    assert said[1].startswith(f"greedy start: {greedy['start']} (fitness ")
    assert said[1].endswith("removing 3 slot(s) one at a time")
    assert [line.split(" (")[0] for line in said[2:5]] == [
        f"greedy start: removed slot {s['slot']}" for s in greedy["path"]]
    assert said[2].startswith(f"greedy start: removed slot {greedy['path'][0]['slot']} "
                              f"(1 of 3, fitness {greedy['path'][0]['fitness']:.4f}, 12 "
                              "evaluations)")
    assert said[5].startswith("finish: ") and said[5].endswith(
        " finalist(s) scored on 48 items per task")
    assert said[6].startswith("local search: 6 of 6 evaluations, best fitness ")
    assert said[7] == "finish: the winner confirmed on 48 items per task"
    # the generation rows come after the greedy's lines, the finish's after the last row
    rows = [i for i, line in enumerate(lines) if re.match(r"\d+ +-?\d", line)]
    at = [next(i for i, line in enumerate(lines) if line.startswith(x)) for x in said]
    assert len(rows) == 3 and max(at[:5]) < rows[0] and rows[-1] < min(at[5:])
    # 12 + 11 + 10 removals tried, after the dense starts (merges at 0.5 and 1.0, 5 models)
    assert greedy["evaluations"] == 7 + 33
    p = prepare(path, {})
    source = {"the merge at 0.5 each": merged(0.5), "the merge at 1 each": merged(1.0)}.get(
        greedy["start"], greedy["start"])
    assert genome_from_drops(p.space, set(greedy["drops"]), random.Random(0), source)


def test_greedy_start_must_be_true_or_false(tmp_path, quick_zoo, capsys):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "greedy_start = 2")
    assert main(["evolve", str(path), "-o", str(tmp_path / "run")]) != 0
    assert "search setting 'greedy_start' must be true or false" in capsys.readouterr().err


def test_another_seed_takes_the_greedy_path_from_an_earlier_run(tmp_path, quick_zoo, capsys):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "greedy_start = true")
    assert main(["evolve", str(path), "-o", str(tmp_path / "a")]) == 0
    # another seed, in another recipe file
    other = tmp_path / "seed-4.tr"
    other.write_text(path.read_text().replace("seed = 3", "seed = 4"))
    capsys.readouterr()
    assert main(["evolve", str(other), "-o", str(tmp_path / "b"),
                 "--greedy-from", str(tmp_path / "a")]) == 0
    assert f"greedy start: the path of {tmp_path / 'a'} (" in capsys.readouterr().err

    def first(run):
        return json.loads((tmp_path / run / "history.jsonl").read_text().splitlines()[0])

    a, b = first("a"), first("b")
    assert b["greedy"]["reused_from"] == str(tmp_path / "a")
    assert {k: v for k, v in b["greedy"].items() if k != "reused_from"} == a["greedy"]
    # its evaluations count in the new run's as in the first
    assert b["evaluations"] - b["greedy"]["evaluations"] > 0
    assert b["greedy"]["evaluations"] == 40
    capsys.readouterr()
    # another space (here: another population) is refused, one line, no traceback
    assert main(["evolve", str(path), "-o", str(tmp_path / "c"), "--population", "8",
                 "--greedy-from", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert "differs in its seed alone" in err and "Traceback" not in err
    assert main(["evolve", str(path), "-o", str(tmp_path / "d"),
                 "--greedy-from", str(tmp_path / "nowhere")]) != 0
    assert "no such file" in capsys.readouterr().err


# --- greedy_sweep: source changes at the greedy's end point ----------------------------

# a kept slot's source changes what the fake fitness gives: slot 11 from the base +0.3,
# slot 9 from the base +0.25 (but -0.5 beside slot 11's change), slot 10 from `math` +0.2;
# any other change -0.1
GAIN = {(11, "base"): 0.3, (9, "base"): 0.25, (10, "math"): 0.2}


def _source(op) -> str:
    if isinstance(op, Merge):
        return "merge1" if op.weights[0] == 1.0 else "merge"
    return op.model


def sweep_scores(recipe) -> dict[str, float]:
    ops = recipe.ops()
    dropped, cost = _drops_and_cost(ops)
    sources = {i: _source(op) for i, op in enumerate(ops) if i not in dropped}
    kind = max(set(sources.values()), key=list(sources.values()).count)
    t = {"merge1": 3.0, "merge": 2.0, "base": 0.0}.get(kind, 1.0) - cost
    changed = {(i, s) for i, s in sources.items() if s != kind}
    t += sum(GAIN.get(c, -0.1) for c in changed)
    if {(11, "base"), (9, "base")} <= changed:
        t -= 0.5
    return {"t": t}


def test_greedy_sweep_keeps_the_source_changes_that_raise_the_fitness_together(tmp_path,
                                                                               quick_zoo):
    p = prepare(write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                             SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                             "greedy_start = true\ngreedy_sweep = true"), {})
    calls = []

    def score(recipes, rung):
        calls.append(len(recipes))
        return [sweep_scores(r) for r in recipes]

    said = []
    search = Search(p.space, score, lambda s: s["t"], on_status=said.append)
    warm, record = greedy_start(search)
    assert record["drops"] == [4, 5, 7] and record["path"][-1]["fitness"] == -0.5
    # 9 kept slots, each from the 6 other dense starts
    sweep = record["sweep"]
    assert len(sweep["tried"]) == 9 * 6 and calls[4] == 54
    # the three gains, best first: 11 alone (no evaluation: it was tried alone), 11 + 9
    # (worse, refused), 11 + 10 (kept)
    assert calls[5:] == [1, 1]
    assert record["swaps"] == [[10, "math"], [11, "base"]] and sweep["fitness"] == 0.0
    assert record["evaluations"] == 7 + 12 + 11 + 10 + 54 + 2 == search.evaluations
    assert warm.swaps == ((10, "math"), (11, "base"))
    # a later seed's --greedy-from reads the record back from JSON: the same warm start
    assert warm_start(json.loads(json.dumps(record))) == warm
    genome = genome_from_drops(p.space, set(warm.drops), random.Random(0), warm.sources[0],
                               warm.swaps)
    assert sweep_scores(decode(p.space, genome)) == {"t": 0.0}
    ops = decode(p.space, genome).ops()
    assert ops[10] == Take("math") and ops[11] == Take("base") and isinstance(ops[0], Merge)
    assert said[-1] == "greedy sweep: 2 source change(s) kept, fitness -0.5000 -> 0.0000"
    assert "greedy sweep: slot 11 from base (fitness -0.2000)" in said


def test_greedy_sweep_end_point_leads_generation_0(tmp_path, quick_zoo):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "greedy_start = true\ngreedy_sweep = true\nwarm_start = 0")
    p = prepare(path, {})
    search = Search(p.space, lambda rs, rung: [sweep_scores(r) for r in rs], lambda s: s["t"])
    random.seed(0)
    pop, hof = search.run()
    assert search.history[0]["greedy"]["swaps"] == [[10, "math"], [11, "base"]]
    assert hof.items[0].fitness.values[0] >= 0.0  # nothing found is worse than the sweep's
    first = decode(p.space, list(search.initial_population()[0])).ops()
    assert first[10] == Take("math") and first[11] == Take("base")


def test_greedy_sweep_needs_greedy_start(tmp_path, quick_zoo, capsys):
    path = write_recipe(tmp_path, quick_zoo, "slot 0..12 = ?",
                        SEARCH + f'\ntasks = "{quick_zoo / "tasks" / "val"}"\n'
                        "greedy_sweep = true")
    assert main(["evolve", str(path), "-o", str(tmp_path / "run")]) != 0
    assert "greedy_sweep needs greedy_start = true" in capsys.readouterr().err
