"""The fast paths of a build give the slow paths' bytes and warnings, bit for bit.

Covers execute/fused.py (elementwise tasks slice by slice) against the whole-tensor path,
execute/nptasks.py (the same in numpy, without torch) against fused.py, the reader
thread, and TIES trimming by `kthvalue` against a stable full sort. See docs/speed.md.
"""

from __future__ import annotations

import math

import pytest
import torch

from recipe_compiler.compiler.plan import Combine, Convert, Output, Read, Task, sliced
from recipe_compiler.execute import _compute_whole, _Warnings, compute, fused, nptasks
from recipe_compiler.execute.finite import maybe_nonfinite
from recipe_compiler.execute.reader import Inputs
from recipe_compiler.methods import _ops

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
SHAPE = (3, fused.SLICE // 2 + 7)  # several slices, the last one short


class FakeInputs:
    """Reads served from memory."""

    def __init__(self, tensors: dict[Read, torch.Tensor]):
        self.tensors = tensors

    def read(self, r: Read) -> torch.Tensor:
        return self.tensors[r]

    read_array = read  # for the numpy engine, serve numpy arrays


def tensor(seed: int, dtype: str, special: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g) * 0.02
    if special:  # signed zeros, huge values (float16 overflow), NaN and inf far apart
        x[0, :5] = torch.tensor([0.0, -0.0, 6.0e4, -6.5e4, 3.0e38])
        x[1, 100] = float("nan")
        x[2, -1] = float("-inf")
    return x.to(DTYPES[dtype])


def read(model: str, dtype: str) -> Read:
    size = {"F32": 4}.get(dtype, 2) * math.prod(SHAPE)
    return Read(model, "w", f"/{model}.safetensors", 0, size, dtype, SHAPE)


def task(expr, dtype: str) -> Task:
    size = {"F32": 4}.get(dtype, 2) * math.prod(SHAPE)
    return Task(Output("out", dtype, SHAPE, 0, 0, size), expr)


def both_paths(t: Task, tensors: dict[Read, torch.Tensor]):
    runs = []
    for fast in (True, False):
        messages: list[str] = []
        warnings = _Warnings(messages.append)
        held: dict[Read, torch.Tensor] = {}
        if fast:
            assert sliced(t)
            out = compute(t, FakeInputs(tensors), held, torch.device("cpu"), warnings)
        else:
            held = dict(tensors)
            out = _compute_whole(t, held, list(tensors), torch.device("cpu"), warnings)
        runs.append((out.view(-1).view(torch.uint8) if out.numel() else out, messages))
    return runs


def numpy_path(t: Task, tensors: dict[Read, torch.Tensor]):
    """The torch-free engine's bytes and warnings for `t`, from the same stored bytes."""
    messages: list[str] = []
    arrays = {r: x.view(-1).view(torch.uint8).numpy().view(nptasks.STORED[r.dtype])
              .reshape(x.shape) for r, x in tensors.items()}
    assert nptasks.capable(t)
    out = compute(t, FakeInputs(arrays), {}, None, _Warnings(messages.append))
    assert out.dtype == nptasks.STORED[t.out.dtype] and out.shape == t.out.shape
    return torch.from_numpy(out.reshape(-1).view("u1").copy()), messages


MERGES = [
    ("linear", (("normalize", True),), False),
    ("linear", (("normalize", False),), False),
    ("task_arithmetic", (("normalize", False),), True),
    ("task_arithmetic", (("normalize", True),), True),
]


@pytest.mark.parametrize("method,params,base", MERGES)
@pytest.mark.parametrize("in_dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("out_dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("weights", [(0.7, 0.45), (0.75, 0.25)])  # the second sums to 1:
def test_numpy_merge_equals_torch_path(method, params, base, in_dtype, out_dtype, special,
                                       weights):  # no division by the total (x / 1 is x)
    reads = [read(m, in_dtype) for m in ("a", "b", "c")]
    tensors = {r: tensor(k, in_dtype, special and k == 1) for k, r in enumerate(reads)}
    b = reads[2] if base else None
    expr = Combine(method, tuple(reads[:2]), weights, b, params, scale=0.9)
    (fast, fast_msgs), _ = both_paths(task(expr, out_dtype), tensors)
    got, msgs = numpy_path(task(expr, out_dtype), tensors)
    assert torch.equal(got, fast)  # NaN bytes included
    assert msgs == fast_msgs


@pytest.mark.parametrize("in_dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("out_dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("scale", [None, 1e3, 3e36])
def test_numpy_conversion_equals_torch_path(in_dtype, out_dtype, scale):
    r = read("a", in_dtype)
    tensors = {r: tensor(3, in_dtype, False) * (100 if in_dtype != "F16" else 1)}
    t = task(Convert(r, scale), out_dtype)
    (fast, fast_msgs), _ = both_paths(t, tensors)
    got, msgs = numpy_path(t, tensors)
    assert torch.equal(got, fast)
    assert msgs == fast_msgs  # overflow to inf at the larger scales: one warning


def test_numpy_bfloat16_rounding_is_torchs_on_every_kind_of_value():
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-2**31, 2**31, (1_000_000,), generator=g, dtype=torch.int64)
    edges = [0x7F7F7FFF, 0x7F7F8000, 0x7F800000, 0x7F800001, 0xFF800001, 0x00008000,
             0x00018000, 0x80007FFF, 0x3F808000, 0x3F818000, 0xFFFFFFFF, 0x7FC00000]
    bits = torch.cat([bits, torch.tensor(edges, dtype=torch.int64)])
    x = bits.to(torch.int32).view(torch.float32)  # NaN, inf, subnormal, ties to even
    r = Read("a", "w", "/a.safetensors", 0, 4 * x.numel(), "F32", (x.numel(),))
    t = Task(Output("out", "BF16", (x.numel(),), 0, 0, 2 * x.numel()), Convert(r))
    got, _ = numpy_path(t, {r: x})
    assert torch.equal(got, x.to(torch.bfloat16).view(-1).view(torch.uint8))


def test_numpy_engine_takes_only_what_it_computes_exactly():
    a, b = read("a", "BF16"), read("b", "BF16")
    assert nptasks.capable(task(Combine("linear", (a, b), (1, 1), None, (("normalize", True),)),
                                "BF16"))
    ties = Combine("ties", (a, b), (1, 1), read("c", "BF16"),
                   (("density", 0.5), ("normalize", True)))
    assert not nptasks.capable(task(ties, "BF16"))  # not elementwise
    assert not nptasks.capable(task(Convert(a), "F64"))


@pytest.mark.parametrize("method,params,base", [
    ("linear", (("normalize", True),), False),
    ("linear", (("normalize", False),), False),
    ("task_arithmetic", (("normalize", False),), True),
    ("task_arithmetic", (("normalize", True),), True),
])
@pytest.mark.parametrize("in_dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("out_dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("special", [False, True])
def test_fused_merge_equals_whole_tensor_path(method, params, base, in_dtype, out_dtype,
                                              special):
    reads = [read(m, in_dtype) for m in ("a", "b", "c")]
    tensors = {r: tensor(k, in_dtype, special and k == 1) for k, r in enumerate(reads)}
    b = reads[2] if base else None
    expr = Combine(method, tuple(reads[:2]), (0.7, 0.45), b, params, scale=0.9)
    (fast, fast_msgs), (slow, slow_msgs) = both_paths(task(expr, out_dtype), tensors)
    assert torch.equal(fast, slow)
    assert fast_msgs == slow_msgs
    assert bool(special) == bool(fast_msgs)


@pytest.mark.parametrize("in_dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("out_dtype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("scale", [None, 1e3])
def test_fused_conversion_equals_whole_tensor_path(in_dtype, out_dtype, scale):
    r = read("a", in_dtype)
    tensors = {r: tensor(3, in_dtype, False) * (100 if in_dtype != "F16" else 1)}
    (fast, fast_msgs), (slow, slow_msgs) = both_paths(task(Convert(r, scale), out_dtype),
                                                      tensors)
    assert torch.equal(fast, slow)
    assert fast_msgs == slow_msgs  # float16 outputs overflow at scale 1e3: one warning


def test_quick_nonfinite_test_never_misses():
    x = torch.zeros(100_000)
    assert not maybe_nonfinite(x)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x[77_777] = bad
        assert maybe_nonfinite(x) and maybe_nonfinite(x.to(torch.bfloat16))
    x[0] = float("inf")
    x[1] = -float("inf")
    assert maybe_nonfinite(x)
    assert maybe_nonfinite(torch.full((10,), 3e38))  # overflowing sum: counted, not missed


def argsort_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """mergekit's definition (sparsify.magnitude) with a stable sort: among entries tied at
    the threshold, the lowest-indexed are kept."""
    k = int(density * delta.numel())
    flat = delta.reshape(-1)
    mask = torch.zeros_like(flat)
    if k > 0:
        mask[torch.argsort(flat.abs(), descending=True, stable=True)[:k]] = 1
    return (flat * mask).view_as(delta)


@pytest.mark.parametrize("n", [1, 10, 1000, 65_543, 300_000])
@pytest.mark.parametrize("density", [1e-6, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("kind", ["float32", "bf16 deltas", "few values", "nan", "zeros",
                                  "mostly zeros"])
def test_ties_trim_by_threshold_equals_full_sort(n, density, kind):
    g = torch.Generator().manual_seed(n)
    if kind == "zeros":  # a model's delta to itself, signed zeros included
        d = torch.zeros(n)
        d[::3] = -0.0
    elif kind == "mostly zeros":  # the k-th largest is 0: the nonzero entries are kept
        d = torch.randn(n, generator=g) * (torch.rand(n, generator=g) < density / 2)
        d[1::2] = d[1::2] * -1
    elif kind == "few values":  # ties everywhere: the lowest-indexed are kept
        d = torch.randint(-3, 4, (n,), generator=g).float()
    elif kind == "bf16 deltas":
        d = (torch.randn(n, generator=g) * 0.02).bfloat16().float() - \
            (torch.randn(n, generator=g) * 0.02).bfloat16().float()
    else:
        d = torch.randn(n, generator=g)
        if kind == "nan":
            d[n // 2] = float("nan")
    got, want = _ops.trim_magnitude(d, density), argsort_trim(d, density)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # -0.0 included


def test_reader_thread_reads_the_same_bytes_and_reports_short_files(tmp_path):
    data = torch.arange(1000, dtype=torch.float32)
    path = tmp_path / "x.bin"
    path.write_bytes(b"\0" * 8 + data.numpy().tobytes())
    good = Read("m", "t", str(path), 8, 8 + 4000, "F32", (1000,))
    short = Read("m", "u", str(path), 8, 8 + 8000, "F32", (2000,))
    inputs = Inputs()
    try:
        inputs.prefetch([good, short])
        assert torch.equal(inputs.read(good), data)
        with pytest.raises(Exception, match="ended early while reading tensor 'u'"):
            inputs.read(short)
    finally:
        inputs.close()


NUMPY_RECIPE = """
model base = "fam/base"
model math = "fam/math"
model code = "fam/code"
{dtype}
slot 0 = take(base)
slot 1 = merge(math, code, weights=[0.6, 0.4], method=linear)
slot 2 = merge(math, code, weights=[0.5, 0.3], method=task_arithmetic, layer=2)
slot 3 = take(code, scale=0.5)
slot 4 = merge(math, code, method=linear, normalize=false, scale=0.9)
"""


def plan_of(path):
    """The plan `tailorc build` runs for the recipe file at `path` (checked: no errors)."""
    from recipe_compiler.compiler.frontdoor import load_checked
    from recipe_compiler.compiler.plan import lower

    loaded = load_checked(path, require_closed=True)
    return lower(loaded.recipe, loaded.models)


@pytest.mark.parametrize("dtype", ["", "dtype = bfloat16", "dtype = float16"])
def test_cpu_merge_build_skips_torch_and_writes_torchs_bytes(family_root, tmp_path, dtype):
    import os
    import subprocess
    import sys

    from recipe_compiler.execute import execute, numpy_engine

    path = family_root / f"numpy-{len(dtype)}.tr"
    path.write_text(NUMPY_RECIPE.format(dtype=dtype))
    out = tmp_path / "np"
    code = ("import sys; from recipe_compiler.cli import main; rc = main(['build', "
            f"{str(path)!r}, '-o', {str(out)!r}]); assert rc == 0, rc; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    plan = plan_of(path)
    assert numpy_engine(plan, "cpu") and not numpy_engine(plan, "cpu", "torch")
    (tmp_path / "torch").mkdir()
    execute(plan, tmp_path / "torch", engine="torch")
    for shard in plan.shards:
        assert (out / shard.file_name).read_bytes() == \
            (tmp_path / "torch" / shard.file_name).read_bytes()


WHOLE_RECIPE = """
model base = "../fam/base"
model math = "../fam/math"
model code = "../fam/code"
slot 0 = take(base)
slot 1..8 = merge(math, code, weights=[0.6, 0.4], method=ties, density=0.4)
"""


def test_whole_tensor_tasks_run_two_at_a_time_with_the_bytes_and_warnings_of_one(
        family_root, tmp_path, monkeypatch):
    """TIES tasks are computed two at a time on the CPU (their sort uses one core): the
    shards and the NaN warnings, in their order, are those of one task at a time."""
    import shutil
    import threading
    import time

    from safetensors.torch import load_file, save_file

    import recipe_compiler.execute as ex

    fam = tmp_path / "fam"
    shutil.copytree(family_root / "fam", fam)
    for model, layer in (("math", 2), ("code", 5)):  # NaNs in two tasks' inputs
        path = fam / model / "model.safetensors"
        tensors = load_file(path)
        tensors[f"model.layers.{layer}.mlp.up_proj.weight"][0, :3] = float("nan")
        save_file(tensors, path, metadata={"format": "pt"})
    (tmp_path / "r").mkdir()
    recipe_path = tmp_path / "r" / "ties.tr"
    recipe_path.write_text(WHOLE_RECIPE)
    plan = plan_of(recipe_path)

    real, lock, active, most = ex._compute_whole, threading.Lock(), [0], [0]

    def counted(*args):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.002)  # long enough for the next task to start beside this one
        try:
            return real(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(ex, "_compute_whole", counted)
    runs = {}
    for at_once in (1, 2):
        monkeypatch.setattr(ex, "WHOLE_AT_ONCE", at_once)
        most[0], messages = 0, []
        out = tmp_path / f"out{at_once}"
        out.mkdir()
        assert ex.execute(plan, out, on_warning=messages.append) == 2
        runs[at_once] = ([(out / s.file_name).read_bytes() for s in plan.shards], messages,
                         most[0])
    assert runs[1][2] == 1 and runs[2][2] == 2
    assert runs[1][0] == runs[2][0]
    assert runs[1][1] == runs[2][1]
    assert "math/model.safetensors: tensor 'model.layers.2.mlp.up_proj.weight'" in \
        runs[2][1][0]


def test_ties_trim_keeps_the_lowest_indexed_of_the_tied_entries():
    d = torch.tensor([1.0, -3.0, 2.0, -2.0, 2.0, 0.5, -2.0, 3.0])
    # k = 4: both 3s, then two of the four entries of magnitude 2, the first two
    want = torch.tensor([0.0, -3.0, 2.0, -2.0, 0.0, 0.0, -0.0, 3.0])
    got = _ops.trim_magnitude(d, 0.5)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("kind", ["float32", "few values", "nan", "same model"])
@pytest.mark.parametrize("normalize", [True, False])
def test_ties_slice_by_slice_equals_the_whole_tensor_formula(kind, normalize):
    """`_ops.ties` (trimming thresholds found on whole tensors, the rest slice by slice) and
    `_ops.sign_elected` give the bytes of stacking whole trimmed deltas and electing signs
    over the stack; ties at a threshold fall across slice boundaries."""
    g = torch.Generator().manual_seed(7)
    n = 3 * _ops.SLICE + 1234
    base = torch.randint(-4, 5, (n,), generator=g).float() * 0.5
    base[::5] = -0.0
    if kind == "few values":  # ties everywhere, the kept ones running into later slices
        xs = [base + torch.randint(-3, 4, (n,), generator=g).float() for _ in range(3)]
    elif kind == "same model":
        xs = [base.clone(), base + torch.randn(n, generator=g), base.clone()]
    else:
        xs = [base + torch.randn(n, generator=g) for _ in range(3)]
    if kind == "nan":
        xs[1][n // 2] = float("nan")
    densities, weights = (0.3, 0.5, 0.9), (0.5, 0.3, 0.7)
    trimmed = torch.stack([_ops.trim_magnitude(x - base, d) for x, d in zip(xs, densities)])
    want = base + _ops.consensus(trimmed, weights, normalize)
    got = _ops.ties(xs, base, densities, weights, normalize)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    got = _ops.sign_elected(base, list(trimmed), weights, normalize)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_shards_are_written_back_while_the_build_goes_on(family_root, tmp_path, monkeypatch):
    """Every `WRITEBACK` bytes written, copied or computed, a shard's write-back to disk is
    started, so that the closing fsync finds little left to write."""
    from recipe_compiler.execute import execute, writer

    started: list[int] = []
    monkeypatch.setattr(writer, "WRITEBACK", 4096)
    monkeypatch.setattr(writer, "start_writeback", started.append)
    path = family_root / "writeback.tr"
    path.write_text(NUMPY_RECIPE.format(dtype=""))
    plan = plan_of(path)
    (tmp_path / "o").mkdir()
    execute(plan, tmp_path / "o")
    assert len(started) >= plan.write_bytes // (2 * 4096)
    with open(tmp_path / "f", "wb") as f:  # the real call: a hint that never fails a build
        f.write(b"x" * 10)
        monkeypatch.undo()
        writer.start_writeback(f.fileno())
