"""The output directory: complete or absent, deterministic, sharded like transformers."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipe_compiler import execute as execute_mod
from recipe_compiler.cli import main
from recipe_compiler.compiler.check import load_and_check
from recipe_compiler.compiler.plan import lower
from recipe_compiler.execute.output import write_checkpoint
from recipe_compiler.language.parser import parse

RECIPE = """
name = "t"
model base = "fam/base"
model math = "fam/math"
slot 0..3 = take(base)
slot 3    = merge(base, math, weights=[0.5, 0.5])
slot 4    = drop
slot 5..8 = take(math)
"""


@pytest.fixture()
def recipe_file(family_root, tmp_path):
    (tmp_path / "fam").symlink_to(family_root / "fam")
    path = tmp_path / "r.tr"
    path.write_text(RECIPE)
    return path


def build(path: Path, out: Path, **kw) -> None:
    recipe = parse(path.read_text(), str(path))
    models, diags = load_and_check(recipe, require_closed=True)
    assert not diags
    shard_size = kw.pop("shard_size", 5 * 10**9)
    write_checkpoint(recipe, lower(recipe, models, shard_size=shard_size), out, **kw)


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_same_recipe_same_bytes(recipe_file, tmp_path):
    build(recipe_file, tmp_path / "a")
    first = files(tmp_path / "a")
    build(recipe_file, tmp_path / "a", force=True)
    assert files(tmp_path / "a") == first
    build(recipe_file, tmp_path / "b")
    assert files(tmp_path / "b")["model.safetensors"] == first["model.safetensors"]
    assert set(first) == {"README.md", "config.json", "generation_config.json",
                          "model.safetensors", "recipe.tr"}


def test_sharded_output_equals_single_file(recipe_file, tmp_path):
    from transformers import AutoModelForCausalLM

    build(recipe_file, tmp_path / "one")
    build(recipe_file, tmp_path / "many", shard_size=50_000)
    shards = sorted((tmp_path / "many").glob("model-*-of-*.safetensors"))
    assert len(shards) > 2
    merged = {}
    for s in shards:
        merged.update(load_file(s))
    single = load_file(tmp_path / "one" / "model.safetensors")
    assert merged.keys() == single.keys()
    assert all(torch.equal(merged[k], single[k]) for k in single)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "many")
    assert model.config.num_hidden_layers == 7


def test_recipe_written_beside_the_model_rebuilds_it(recipe_file, tmp_path):
    build(recipe_file, tmp_path / "a")
    rebuilt = tmp_path / "a" / "recipe.tr"
    build(rebuilt, tmp_path / "again")
    assert files(tmp_path / "again")["model.safetensors"] == \
        files(tmp_path / "a")["model.safetensors"]


def test_failure_mid_build_leaves_nothing(recipe_file, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = execute_mod.compute

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(execute_mod, "compute", flaky)
    with pytest.raises(OSError):
        build(recipe_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if "tailor" in p.name] == []


def test_disk_full_is_a_clear_error(recipe_file, tmp_path, monkeypatch, capsys):
    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(execute_mod.os, "copy_file_range", full)
    monkeypatch.setattr(execute_mod.os, "pwrite", full)
    code = main(["build", str(recipe_file), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "no space left on device" in err and "nothing was written" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if "tailor" in p.name] == []


def test_killed_build_leaves_no_output_and_is_cleaned_next_time(recipe_file, tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from recipe_compiler.execute import output
        from recipe_compiler.compiler.check import load_and_check
        from recipe_compiler.language.parser import parse_file
        from recipe_compiler.compiler.plan import lower
        r = parse_file({str(recipe_file)!r})
        models, _ = load_and_check(r, require_closed=True)
        def die(p):
            if p.tensors == 20:
                os.kill(os.getpid(), signal.SIGKILL)
        output.write_checkpoint(r, lower(r, models), output.Path({str(out)!r}),
                                on_progress=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir() if ".tailor-tmp-" in p.name]
    assert len(leftovers) == 1  # what SIGKILL leaves; the next build removes it
    build(recipe_file, out)
    assert out.exists()
    assert not leftovers[0].exists()


def test_existing_output_and_output_inside_input_are_refused(recipe_file, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["build", str(recipe_file), "-o", str(tmp_path / "out")]) == 1
    assert "already exists (use --force" in capsys.readouterr().err
    inside = tmp_path / "fam" / "base" / "pruned"
    assert main(["build", str(recipe_file), "-o", str(inside), "--force"]) == 1
    assert "inside input model 'base'" in capsys.readouterr().err
    assert not inside.exists()
    assert main(["build", str(recipe_file), "-o", str(tmp_path / "fam" / "base")]) == 1


def test_cli_exit_codes(recipe_file, tmp_path, capsys, monkeypatch):
    assert main(["check", str(recipe_file)]) == 0
    assert "parameters" in capsys.readouterr().out
    assert main(["plan", str(recipe_file)]) == 0
    assert main(["check", str(tmp_path / "missing.tr")]) == 1
    assert "cannot read recipe" in capsys.readouterr().err
    bad = tmp_path / "bad.tr"
    bad.write_text(RECIPE.replace("take(math)", "take(maths)"))
    assert main(["build", str(bad), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "bad.tr:8:18: error: unknown model 'maths'" in err and "1 error;" in err

    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr("recipe_compiler.compiler.frontdoor.load_and_check", boom)
    assert main(["check", str(recipe_file)]) == 2
    assert "internal error" in capsys.readouterr().err


def test_fmt_cli(tmp_path, capsys):
    path = tmp_path / "r.tr"
    path.write_text('model  a="x"\nslot 0..2=take(a)\n')
    assert main(["fmt", "--check", str(path)]) == 1
    assert main(["fmt", str(path)]) == 0
    assert capsys.readouterr().out == 'model a = "x"\n\nslot 0..2 = take(a)\n'
    assert main(["fmt", "-i", str(path)]) == 0
    assert main(["fmt", "--check", str(path)]) == 0


def test_help_documents_the_language(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for word in ("take(", "merge(", "drop", "task_arithmetic", "slerp", "choose(", "search {"):
        assert word in text


def test_check_is_fast_and_imports_no_torch(recipe_file):
    code = ("import sys; from recipe_compiler.cli import main; main(['check', "
            f"{str(recipe_file)!r}]); assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr


def test_pickle_never_loaded(family_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    shutil.copytree(family_root / "pickled", tmp_path / "p")
    path = tmp_path / "r.tr"
    path.write_text('model p = "p"\nslot 0 = take(p)\n')
    assert main(["check", str(path)]) == 1
