"""Write a complete checkpoint directory, atomically.

Consumes: a `Plan`, its recipe, and the output path.
Produces: OUT/ with the shards, model.safetensors.index.json (when sharded), config.json,
the base's generation config and tokenizer files, README.md (model card) and recipe.tr —
or nothing at all.

Everything is written into a hidden temporary sibling `.OUT.tailor-tmp-PID` and renamed
into place only when complete, so an interrupted build never leaves something that looks
like a model. Temporaries left by killed builds are removed by the next build.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from pathlib import Path

from recipe_compiler.compiler.plan import BuildError, Plan
from recipe_compiler.execute import ProgressFn, WarnFn, execute
from recipe_compiler.execute.card import hub_id, model_card
from recipe_compiler.language.printer import format_recipe
from recipe_compiler.language.recipe import Recipe, model_path
from recipe_compiler.models.hub import hub_id as named_id
from recipe_compiler.models.hub import hub_reference

TMP_TAG = ".tailor-tmp-"
OLD_TAG = ".tailor-old-"


class OutputError(Exception):
    """The output path cannot be used (exists, is an input, not writable)."""


def check_output(recipe: Recipe, out: Path, *, force: bool) -> None:
    target = out.resolve()
    for m in recipe.models:
        src = model_path(recipe, m.path).resolve()
        if target == src or src in target.parents:
            raise OutputError(f"{out}: is inside input model '{m.name}' ({src}); "
                              "choose an output outside every input")
        if target in src.parents and force:
            raise OutputError(f"{out}: contains input model '{m.name}'; refusing to replace it")
    recipe_file = Path(recipe.path).resolve()
    if target in recipe_file.parents:
        raise OutputError(f"{out}: holds the recipe {recipe.path}; choose another output")
    if out.exists() and not force:
        raise OutputError(f"{out}: already exists (use --force to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if out.is_dir() and not is_tailor_output(out):
        raise OutputError(f"{out}: holds files tailor did not write; refusing to replace it "
                          "(remove it yourself, or choose another output)")


def is_tailor_output(path: Path) -> bool:
    """An empty directory, or one an earlier `tailorc build` wrote (its card says so):
    the only directories `--force` may replace, so it never deletes a user's files."""
    names = {p.name for p in path.iterdir()}
    if not names:
        return True
    card = path / "README.md"
    try:
        return "recipe.tr" in names and "Built with tailor" in card.read_text(errors="replace")
    except OSError:
        return False


def clean_stale(out: Path) -> list[Path]:
    """Remove temporaries of earlier builds to `out` whose process is gone.

    A build killed between its two renames (`--force`: OUT -> .OUT.tailor-old-PID, then
    the new build -> OUT) leaves no OUT; the old directory was a complete OUT, so it is
    put back rather than removed."""
    removed = []
    parent = out.parent if out.parent.exists() else None
    if parent is None:
        return removed
    for tag in (OLD_TAG, TMP_TAG):
        for p in sorted(parent.glob(f".{out.name}{tag}*")):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            if tag == OLD_TAG and not os.path.lexists(out):
                try:
                    os.rename(p, out)
                    continue
                except OSError:
                    pass
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def relocate(recipe: Recipe, out: Path) -> Recipe:
    """The recipe with model paths relative to `out`, so OUT/recipe.tr rebuilds as is."""
    models = tuple(
        m if hub_reference(recipe, m.path) else  # a Hub id means the same from anywhere
        dataclasses.replace(m, path=os.path.relpath(os.path.abspath(model_path(recipe, m.path)),
                                                    os.path.abspath(out)))
        for m in recipe.models
    )
    return dataclasses.replace(recipe, models=models, path=str(out / "recipe.tr"))


def write_checkpoint(recipe: Recipe, plan: Plan, out: Path, *, force: bool = False,
                     device: str = "cpu", on_progress: ProgressFn | None = None,
                     on_warning: WarnFn | None = None, check_copies: bool = True,
                     engine: str = "auto") -> None:
    clean_stale(out)  # first: it may put back an OUT that a killed --force build moved
    check_output(recipe, out, force=force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out.parent}: cannot create ({exc.strerror})") from None
    tmp = out.parent / f".{out.name}{TMP_TAG}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _mkdir(tmp)
        execute(plan, tmp, device=device, on_progress=on_progress, on_warning=on_warning,
                check_copies=check_copies, engine=engine)
        _write_metadata(recipe, plan, tmp, out)
        _fsync_dir(tmp)  # the files' directory entries, before the rename publishes them
        _swap_into_place(tmp, out, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _mkdir(path: Path) -> None:
    try:
        path.mkdir()
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot write ({exc.strerror})") from None


def _write_metadata(recipe: Recipe, plan: Plan, tmp: Path, out: Path) -> None:
    moved = relocate(recipe, out)
    text = format_recipe(moved)
    ids = {m.name: named_id(recipe, m.path) or hub_id(model_path(recipe, m.path))
           for m in recipe.models}
    files = {"config.json": plan.config_json, "recipe.tr": text,
             "README.md": model_card(moved, plan, text, ids)}
    if plan.index_json is not None:
        files["model.safetensors.index.json"] = plan.index_json
    for name, content in files.items():
        _write(tmp / name, content.encode())
    for src, name in plan.copy_files:
        try:
            shutil.copyfile(src, tmp / name)
        except OSError as exc:
            raise BuildError(f"{src}: cannot copy ({exc.strerror})") from None


def _write(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise BuildError(f"{path}: cannot write ({exc.strerror})") from None


def _swap_into_place(tmp: Path, out: Path, *, force: bool) -> None:
    """Publish the finished build with rename(2). Without --force, rename onto a directory
    that another build has filled meanwhile fails (ENOTEMPTY), so of two builds racing to
    OUT exactly one wins and the other reports it; nothing is ever merged."""
    old = None
    if force and os.path.lexists(out):
        old = out.parent / f".{out.name}{OLD_TAG}{os.getpid()}"
        try:
            os.rename(out, old)
        except OSError as exc:
            raise OutputError(f"{out}: cannot move the existing output aside "
                              f"({exc.strerror})") from None
    try:
        os.rename(tmp, out)
    except OSError as exc:
        restored = old is None or _try_rename(old, out)
        reason = ("another build wrote it meanwhile" if exc.errno in
                  (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR) else exc.strerror)
        kept = "" if restored else f"; the previous output is kept in {old}"
        raise OutputError(f"{out}: cannot move the finished build into place "
                          f"({reason}){kept}") from None
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _try_rename(src: Path, dst: Path) -> bool:
    try:
        os.rename(src, dst)
    except OSError:
        return False
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot sync ({exc.strerror})") from None
