"""The wheel carries everything the package reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_wheel_ships_grammar_and_architectures(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("tailor-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "recipe_compiler/grammar/tailor.lark" in names
    for arch in (ROOT / "recipe_compiler" / "models" / "arch").glob("*.json"):
        assert f"recipe_compiler/models/arch/{arch.name}" in names
    for module in (ROOT / "recipe_compiler").rglob("*.py"):
        assert module.relative_to(ROOT).as_posix() in names, module
