"""Failure is boring: bad checkpoints, kills, full disks, races and failing candidates.

Every case goes through the CLI (`main([...])` returns the exit status) or a subprocess
running it, and checks the same things: exit 1 with one message naming the file, no
traceback, and no output: OUT is absent or holds a complete, correct model, and no
temporary is left once the next build has run. Kill tests run `KILLS_FAST` trials in the
default suite and `KILLS_SLOW` under `pytest -m slow`. See docs/reliability.md.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from recipe_compiler import execute as execute_mod
from recipe_compiler.cli import main
from recipe_compiler.execute import output as output_mod

ROOT = Path(__file__).parent.parent
KILLS_FAST, KILLS_SLOW = 3, 40
TAKE = 'model base = "{m}"\nmodel math = "{fam}/math"\nslot 0..3 = take(base)\n' \
       "slot 3 = drop\nslot 4..8 = take(math)\n"
MERGE = TAKE.replace("slot 3 = drop", "slot 3 = merge(base, math, weights=[0.5, 0.5])")


@pytest.fixture()
def fam(family_root, tmp_path) -> Path:
    """A private copy of the llama family (so tests may corrupt it)."""
    shutil.copytree(family_root / "fam", tmp_path / "fam")
    return tmp_path / "fam"


def recipe(tmp_path: Path, fam: Path, model: Path | None = None, text: str = TAKE) -> Path:
    path = tmp_path / "r.tr"
    path.write_text(text.format(m=model or fam / "base", fam=fam))
    return path


def cli(capsys, *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".tailor-" in p.name)


def tree(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def assert_refused(capsys, tmp_path: Path, r: Path, *needles: str) -> str:
    out = tmp_path / "out"
    code, err = cli(capsys, "build", r, "-o", out)
    assert code == 1, err
    for n in needles:
        assert n in err, err
    assert not out.exists() and leftovers(tmp_path) == []
    return err


# --- bad checkpoints -------------------------------------------------------------------


def _header(path: Path) -> tuple[int, dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n]), data[8 + n :]


def _write_header(path: Path, header: dict, body: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def _lie(path: Path, how: str) -> None:
    n, header, body = _header(path)
    name = next(k for k in header if k.endswith("layers.1.mlp.up_proj.weight"))
    entry = header[name]
    if how == "size":
        entry["shape"] = [entry["shape"][0] * 2, entry["shape"][1]]
    elif how == "offsets":
        entry["data_offsets"] = [len(body) - 4, len(body) - 4 + entry["data_offsets"][1]
                                 - entry["data_offsets"][0]]
    elif how == "overlap":
        other = next(v for k, v in header.items() if k != name and k != "__metadata__"
                     and v["data_offsets"][1] - v["data_offsets"][0]
                     == entry["data_offsets"][1] - entry["data_offsets"][0])
        entry["data_offsets"] = list(other["data_offsets"])
    elif how == "dtype":
        entry["dtype"] = "F33"
    elif how == "header_length":
        path.write_bytes(struct.pack("<Q", 10**12) + path.read_bytes()[8:])
        return
    elif how == "garbage":
        path.write_bytes(struct.pack("<Q", n) + b"\xff" * n + body)
        return
    elif how == "nested":
        raw = b"[" * 100_000 + b"]" * 100_000
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
        return
    _write_header(path, header, body)


@pytest.mark.parametrize("cut", [4, 100, 0.5, -1])
def test_truncated_safetensors_is_refused(fam, tmp_path, capsys, cut):
    f = fam / "base" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    assert_refused(capsys, tmp_path, recipe(tmp_path, fam), str(f), "error:")


@pytest.mark.parametrize("how", ["size", "offsets", "overlap", "dtype", "header_length",
                                 "garbage", "nested"])
def test_header_that_lies_is_refused(fam, tmp_path, capsys, how):
    f = fam / "base" / "model.safetensors"
    _lie(f, how)
    assert_refused(capsys, tmp_path, recipe(tmp_path, fam), str(f), "safetensors")


def _sharded(fam: Path, tmp_path: Path) -> Path:
    """fam/base re-saved as three shards with an index."""
    state = load_file(fam / "base" / "model.safetensors")
    names = sorted(state)
    d = tmp_path / "sharded"
    shutil.copytree(fam / "base", d)
    (d / "model.safetensors").unlink()
    weight_map = {}
    for k in range(3):
        fname = f"model-{k + 1:05d}-of-00003.safetensors"
        part = {n: state[n] for n in names[k::3]}
        save_file(part, d / fname)
        weight_map.update({n: fname for n in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return d


def test_missing_or_wrong_shard_is_refused(fam, tmp_path, capsys):
    d = _sharded(fam, tmp_path)
    r = recipe(tmp_path, fam, d)
    assert cli(capsys, "check", r)[0] == 0  # the sharded copy itself is fine
    index = json.loads((d / "model.safetensors.index.json").read_text())
    (d / "model-00002-of-00003.safetensors").rename(d / "elsewhere")
    assert_refused(capsys, tmp_path, r, "model-00002-of-00003.safetensors: missing",
                   "index.json")
    (d / "elsewhere").rename(d / "model-00002-of-00003.safetensors")
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "model-00003-of-00003.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_refused(capsys, tmp_path, r, f"does not contain tensor '{first}'")
    index["weight_map"][first] = "../../etc/passwd"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_refused(capsys, tmp_path, r, "outside")


@pytest.mark.parametrize("layers", [7, 9, "8"])
def test_config_and_weights_disagreeing_on_layers_is_refused(fam, tmp_path, capsys, layers):
    cfg = fam / "base" / "config.json"
    config = json.loads(cfg.read_text())
    config["num_hidden_layers"] = layers
    cfg.write_text(json.dumps(config))
    assert_refused(capsys, tmp_path, recipe(tmp_path, fam), "num_hidden_layers")


class _Trap:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "ckpt.pth"])
def test_pickle_checkpoint_is_refused_never_loaded(fam, tmp_path, capsys, monkeypatch, name):
    marker = tmp_path / "unpickled"
    d = fam / "base"
    (d / "model.safetensors").unlink()
    (d / name).write_bytes(pickle.dumps(_Trap(str(marker))))
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}  # remote code: never imported
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "evil.py").write_text(f"import os\nos.mkdir({str(marker)!r})\n")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    err = assert_refused(capsys, tmp_path, recipe(tmp_path, fam), str(d / name),
                         "pickle checkpoints are refused", "convert")
    assert "safe_serialization" in err
    assert not marker.exists()


def test_no_code_path_unpickles_or_trusts_remote_code():
    """A cheap guard against regressions anywhere in the package."""
    for path in (ROOT / "recipe_compiler").rglob("*.py"):
        text = path.read_text()
        assert "trust_remote_code=True" not in text, path
        assert "torch.load(" not in text and "pickle.load" not in text, path


def _poison(path: Path, tensor_suffix: str, value: float) -> str:
    state = load_file(path)
    name = next(k for k in state if k.endswith(tensor_suffix))
    state[name] = state[name].clone()
    state[name].view(-1)[:3] = value
    save_file(state, path, metadata={"format": "pt"})
    return name


@pytest.mark.parametrize("text", [TAKE, MERGE], ids=["copied", "merged"])
def test_nan_in_inputs_is_a_warning_naming_the_tensor(fam, tmp_path, capsys, text):
    f = fam / "base" / "model.safetensors"
    name = _poison(f, "layers.3.mlp.down_proj.weight" if text is MERGE
                   else "layers.1.mlp.down_proj.weight", float("nan"))
    out = tmp_path / "out"
    code, err = cli(capsys, "build", recipe(tmp_path, fam, text=text), "-o", out)
    assert code == 0
    warned = [line for line in err.splitlines() if "NaN/inf" in line]
    assert len(warned) == 1, warned
    assert warned[0].startswith("tailorc: warning: ")
    assert f"{f}: tensor '{name}' of model 'base' has 3 NaN/inf value(s)" in warned[0]
    assert (out / "model.safetensors").exists()


def test_overflow_in_a_computed_tensor_is_a_warning(fam, tmp_path):
    from recipe_compiler.compiler.check import load_and_check
    from recipe_compiler.compiler.plan import lower
    from recipe_compiler.language.parser import parse_file

    text = TAKE.replace("slot 3 = drop", "slot 3 = take(base, scale=1e30)") + "dtype = float16\n"
    r = parse_file(recipe(tmp_path, fam, text=text))
    models, diags = load_and_check(r, require_closed=True)
    assert not diags
    seen: list[str] = []
    output_mod.write_checkpoint(r, lower(r, models), tmp_path / "out", on_warning=seen.append)
    assert seen and all("overflow in F16" in w for w in seen)
    assert "model.layers.3.self_attn.o_proj.weight" in " ".join(seen)


def test_finite_inputs_give_no_warning_and_check_can_be_skipped(fam, tmp_path, monkeypatch):
    from recipe_compiler.compiler.check import load_and_check
    from recipe_compiler.compiler.plan import lower
    from recipe_compiler.language.parser import parse_file

    _poison(fam / "math" / "model.safetensors", "layers.5.mlp.up_proj.weight", float("inf"))
    r = parse_file(recipe(tmp_path, fam, text=MERGE))
    models, _ = load_and_check(r, require_closed=True)
    seen: list[str] = []
    output_mod.write_checkpoint(r, lower(r, models), tmp_path / "a", on_warning=seen.append)
    assert len(seen) == 1 and "layers.5.mlp.up_proj.weight" in seen[0]
    seen.clear()
    output_mod.write_checkpoint(r, lower(r, models), tmp_path / "b", on_warning=seen.append,
                                check_copies=False)
    assert seen == []
    assert tree(tmp_path / "a") .keys() == tree(tmp_path / "b").keys()


# --- the output path ---------------------------------------------------------------------


def test_output_inside_or_equal_to_an_input_is_refused(fam, tmp_path, capsys):
    r = recipe(tmp_path, fam)
    before = tree(fam / "base")
    (tmp_path / "link").symlink_to(fam / "base")
    for out in (fam / "base", fam / "base" / "sub", tmp_path / "link" / "sub",
                fam / "math" / ".." / "base", tmp_path / "link"):
        for force in ([], ["--force"]):
            code, err = cli(capsys, "build", r, "-o", out, *force)
            assert code == 1 and "input model" in err or "already exists" in err, err
    code, err = cli(capsys, "build", r, "-o", fam, "--force")  # contains the inputs
    assert code == 1 and "contains input model" in err
    assert tree(fam / "base") == before and not (fam / "base" / "sub").exists()


# --- disk full, permissions ----------------------------------------------------------------


def _raiser(err: int):
    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    return fail


@pytest.mark.parametrize("where", ["pwrite", "copy_file_range", "ftruncate", "fsync",
                                   "copyfile", "mkdir", "rename", "open"])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_write_errors_are_clear_and_leave_nothing(fam, tmp_path, capsys, monkeypatch, where,
                                                  err):
    r = recipe(tmp_path, fam, text=MERGE)
    if where == "copyfile":
        monkeypatch.setattr(output_mod.shutil, "copyfile", _raiser(err))
    elif where == "mkdir":
        monkeypatch.setattr(Path, "mkdir", _raiser(err))
    elif where == "open":  # the metadata files
        monkeypatch.setattr("builtins.open", _raiser(err))
        monkeypatch.setattr(execute_mod.os, "open", os.open)
    else:
        monkeypatch.setattr(os, where, _raiser(err))
    out = tmp_path / "out"
    code, err_text = cli(capsys, "build", r, "-o", out)
    monkeypatch.undo()
    assert code == 1, err_text
    assert os.strerror(err).lower() in err_text.lower()
    assert not out.exists() and leftovers(tmp_path) == []


def _mount(d: Path, options: str) -> bool:
    d.mkdir(exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)],
                          capture_output=True)
    return proc.returncode == 0


@pytest.mark.parametrize("options,message", [("size=96k", "no space left on device"),
                                             ("ro,size=1m", "read-only file system")])
def test_real_full_or_read_only_disk(fam, tmp_path, capsys, options, message):
    """A real tmpfs (needs root to mount; skipped otherwise)."""
    mnt = tmp_path / "mnt"
    if not _mount(mnt, options):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, err = cli(capsys, "build", recipe(tmp_path, fam, text=MERGE), "-o", mnt / "out")
        assert code == 1 and message in err.lower(), err
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --- SIGKILL during a build ----------------------------------------------------------------

KILL_SCRIPT = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from recipe_compiler.execute import output
from recipe_compiler.cli import main
where, n = sys.argv[1], int(sys.argv[2])
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "tensor":
    real_execute = output.execute
    def execute(plan, tmp, **kw):
        def on_progress(p):
            if p.tensors == n:
                die()
        return real_execute(plan, tmp, **{**kw, "on_progress": on_progress})
    output.execute = execute
else:  # after the n-th call of a step: "_write_metadata", "_fsync_dir", "rename"
    mod = output.os if where == "rename" else output
    real = getattr(mod, where)
    calls = [0]
    def step(*a, **k):
        if calls[0] == n:
            die()
        calls[0] += 1
        return real(*a, **k)
    setattr(mod, where, step)
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture()
def kill_setup(fam, tmp_path):
    """The recipe, a reference build of it, and an older output to build over (--force)."""
    r = recipe(tmp_path, fam, text=MERGE)
    assert main(["build", str(r), "-o", str(tmp_path / "reference")]) == 0
    older = recipe(tmp_path, fam, text=TAKE).rename(tmp_path / "older.tr")
    assert main(["build", str(older), "-o", str(tmp_path / "older")]) == 0
    r = recipe(tmp_path, fam, text=MERGE)
    return r, tree(tmp_path / "reference"), tree(tmp_path / "older")


def kill_trials(tmp_path: Path, kill_setup, trials: int, seed: int) -> dict[str, int]:
    r, reference, older = kill_setup
    n_tensors = len(load_file(tmp_path / "reference" / "model.safetensors"))
    rng = random.Random(seed)
    outcomes = {"absent": 0, "complete": 0, "older": 0}
    for trial in range(trials):
        out = tmp_path / f"out{trial}"
        force = rng.random() < 0.5
        if force:
            shutil.copytree(tmp_path / "older", out)
        where, n = rng.choice([("tensor", rng.randint(1, n_tensors)),
                               ("_write_metadata", 0), ("_fsync_dir", rng.randint(0, 1)),
                               ("rename", rng.randint(0, 1))])
        args = ["build", str(r), "-o", str(out)] + (["--force"] if force else [])
        proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, where, str(n), *args],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode in (-9, 0), proc.stderr
        # Killed at any point, OUT is absent or a complete model: the old one or the new one.
        state = "absent" if not out.exists() else ("complete" if tree(out) == reference
                                                  else "older")
        if state == "older":
            assert force and tree(out) == older
        if state == "absent" and force:
            # killed between the two renames: the next build puts the old output back
            output_mod.clean_stale(out)
            assert tree(out) == older
        outcomes[state] += 1
        # The next build cleans up whatever the killed one left and succeeds.
        assert main(["build", str(r), "-o", str(out), "--force"]) == 0
        assert tree(out) == reference
        assert leftovers(tmp_path) == []
        shutil.rmtree(out)
    return outcomes


def test_sigkill_during_build_fast(tmp_path, kill_setup):
    outcomes = kill_trials(tmp_path, kill_setup, KILLS_FAST, seed=0)
    assert sum(outcomes.values()) == KILLS_FAST


@pytest.mark.slow
def test_sigkill_during_build_slow(tmp_path, kill_setup):
    outcomes = kill_trials(tmp_path, kill_setup, KILLS_SLOW, seed=int(time.time()))
    assert sum(outcomes.values()) == KILLS_SLOW and outcomes["absent"] > 0


@pytest.mark.slow
def test_external_sigkill_after_random_delay(tmp_path):
    """A model big enough (~90 MB) for kills to land anywhere in a real build."""
    from recipe_compiler.zoo.families import make_family

    make_family(tmp_path / "big", "llama", ("base", "math"), layers=8, hidden=512,
                vocab=2048, seed=0)
    r = tmp_path / "r.tr"
    r.write_text(MERGE.format(m=tmp_path / "big/base", fam=tmp_path / "big"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "recipe_compiler.cli", "build", str(r), "-o"]
    start = time.perf_counter()
    subprocess.run(cmd + [str(tmp_path / "reference")], check=True, env=env,
                   capture_output=True)
    took = time.perf_counter() - start
    reference = tree(tmp_path / "reference")
    rng = random.Random(int(time.time()))
    for trial in range(12):
        out = tmp_path / f"out{trial}"
        proc = subprocess.Popen(cmd + [str(out)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, took))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists() or tree(out) == reference
        assert main(["build", str(r), "-o", str(out), "--force"]) == 0
        assert tree(out) == reference and leftovers(tmp_path) == []
        shutil.rmtree(out)


# --- two builds racing to one output -------------------------------------------------------

RACE_SCRIPT = """
import os, sys, time
import torch
torch.set_num_threads(1)
from recipe_compiler.execute import output
from recipe_compiler.cli import main
barrier = sys.argv[1]
real_execute = output.execute
def execute(plan, tmp, **kw):
    # both builds have passed the "OUT exists?" check before either writes anything
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    deadline = time.time() + 30
    while len(os.listdir(barrier)) < 2 and time.time() < deadline:
        time.sleep(0.01)
    return real_execute(plan, tmp, **kw)
output.execute = execute
sys.exit(main(sys.argv[2:]))
"""


def race(tmp_path: Path, r: Path, trial: int) -> None:
    barrier = tmp_path / f"barrier{trial}"
    barrier.mkdir()
    out = tmp_path / f"race{trial}"
    procs = [subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, str(barrier), "build",
                               str(r), "-o", str(out)], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = sorted((p.wait(), p.stderr.read()) for p in procs)
    assert [code for code, _ in results] == [0, 1], results
    loser = results[1][1]
    assert "another build wrote it meanwhile" in loser and "Traceback" not in loser, loser
    assert tree(out) == tree(tmp_path / "reference")
    assert leftovers(tmp_path) == []


def test_two_builds_to_one_output(tmp_path, kill_setup):
    race(tmp_path, kill_setup[0], 0)


@pytest.mark.slow
def test_two_builds_to_one_output_many(tmp_path, kill_setup):
    for trial in range(8):
        race(tmp_path, kill_setup[0], trial)


# --- the search: killed and resumed, candidates that fail -----------------------------------

EVOLVE_KILL = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from recipe_compiler.cli import main
from recipe_compiler.search import run
kill_at = int(sys.argv[1])
real_record = run.Search._record
def record(self, gen, *a, **k):
    real_record(self, gen, *a, **k)  # saves the state first
    if gen == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
run.Search._record = record
sys.exit(main(sys.argv[2:]))
"""


def _space(tmp_path: Path, zoo: Path) -> Path:
    models = "\n".join(f'model {m} = "{zoo / m}"' for m in ("base", "math", "code"))
    path = tmp_path / "space.tr"
    path.write_text(f'{models}\nslot 0..12 = ?\nsearch {{\n  remove = 25%\n  batch_size = 8\n'
                    f'  tasks = "{zoo / "tasks" / "val"}"\n}}\n')
    return path


def _evolve(tmp_path: Path, space: Path, run_dir: str, kill_at: int | None = None,
            resume: bool = False) -> int:
    """Runs in this process unless it is to be killed (saves a torch import per run)."""
    args = ["evolve", str(space), "-o", str(tmp_path / run_dir), "--population", "4",
            "--generations", "3", "--limit", "16", "--min-limit", "8", "--seed", "5"]
    args += ["--resume"] if resume else []
    if kill_at is None:
        return main(args)
    proc = subprocess.run([sys.executable, "-c", EVOLVE_KILL, str(kill_at), *args],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == -9, proc.stderr
    return proc.returncode


def _final(run_dir: Path) -> tuple[str, list[dict]]:
    best = "\n".join(line for line in (run_dir / "best.tr").read_text().splitlines()
                     if not line.startswith("# best recipe, found by"))
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return best, [(h["generation"], h["best"], h["mean"], h["evaluations"], h["best_scores"])
                  for h in history]


def evolve_kill_trials(tmp_path: Path, zoo: Path, kill_points: list[int]) -> None:
    space = _space(tmp_path, zoo)
    assert _evolve(tmp_path, space, "whole") == 0
    expected = _final(tmp_path / "whole")
    for k, gen in enumerate(kill_points):
        _evolve(tmp_path, space, f"run{k}", kill_at=gen)
        assert _evolve(tmp_path, space, f"run{k}", resume=True) == 0
        assert _final(tmp_path / f"run{k}") == expected


def test_evolve_killed_and_resumed_reaches_the_same_result(tmp_path, quick_zoo):
    evolve_kill_trials(tmp_path, quick_zoo, [random.Random(0).randint(0, 2)])


@pytest.mark.slow
def test_evolve_killed_at_every_generation(tmp_path, quick_zoo):
    evolve_kill_trials(tmp_path, quick_zoo, [0, 1, 2, 3])


def test_failing_candidates_get_the_worst_fitness_and_the_run_goes_on(tmp_path, quick_zoo,
                                                                     caplog):
    from recipe_compiler.language.recipe import Drop
    from recipe_compiler.search import make_evaluator, prepare
    from recipe_compiler.search.fitness import FAILED_FITNESS
    from recipe_compiler.search.run import Search

    p = prepare(_space(tmp_path, quick_zoo), {"population": 6, "generations": 2,
                                              "limit": 16, "min_limit": 8})
    ev = make_evaluator(p)
    real = ev.inputs_logprobs

    def flaky(recipe, g):  # slot 0 dropped: NaN; slot 1 dropped: an exception
        ops = recipe.ops()
        if isinstance(ops[0], Drop):
            return [x * float("nan") for x in real(recipe, g)]
        if isinstance(ops[1], Drop):
            raise RuntimeError("out of memory (simulated)")
        return real(recipe, g)

    ev.inputs_logprobs = flaky
    given: list[float] = []  # every fitness the search was told

    def fitness(scores):
        given.append(ev.fitness(scores))
        return given[-1]

    search = Search(p.space, lambda rs, rung: [ev.scores(r, rung) for r in rs], fitness,
                    warm=[{0, 1, 2}, {1, 2, 3}])
    pop, hof = search.run()
    assert len(search.history) == 3
    reasons = {reason for _, reason in ev.failures}
    assert any("non-finite log-probabilities" in r for r in reasons), reasons
    assert any("out of memory (simulated)" in r for r in reasons), reasons
    assert "candidate could not be scored" in caplog.text
    assert FAILED_FITNESS in given, "no candidate was given the worst fitness"
    assert hof.items[0].fitness.values[0] > FAILED_FITNESS  # and the run found better ones
