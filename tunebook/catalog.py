"""`make list` and `make new`: the recipe book as a table, and copy-and-tweak."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tunebook.errors import Problem, TunebookError
from tunebook.lock import RECIPES_ROOT, update
from tunebook.memory import estimate, fmt_gib
from tunebook.recipe import load_recipe
from tunebook.validation import validate_recipe


def rows(root: Path = RECIPES_ROOT) -> list[dict]:
    out = []
    for recipe in book(root)[0]:
        path, meta = recipe.path, recipe.meta
        cfg = recipe.engine_config
        est = estimate(cfg)
        out.append({
            "recipe": path.as_posix(), "family": meta.family, "method": meta.method, "engine": meta.engine,
            "version": meta.version, "base_model": str(cfg.get("base_model")),
            "trainable": _count(est.trainable) if est else "?",
            "memory": (fmt_gib(est.total) + (" (GPU bf16)" if cfg.get("bf16") in (True, "auto") else " (CPU fp32)"))
            if est else "?",
        })
    return out


def _count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def render_table(items: list[dict]) -> str:
    cols = ["recipe", "family", "method", "engine", "version", "base_model", "trainable", "memory"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in items)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    out = [line, "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in items]
    families = len({r["family"] for r in items})
    out.append(f"\n{len(items)} recipes, {families} families. memory = estimated peak for the recipe's own precision.")
    return "\n".join(out)


def _book_relative(src: Path, dest: Path, root: Path) -> list[tuple[Path, Path]]:
    """`recipes/x/y.yaml` forms of both paths, as recipe headers spell them."""
    try:
        base = Path(root).resolve().parent
        return [(src.resolve().relative_to(base), dest.resolve().relative_to(base))]
    except ValueError:
        return []


def _free_destination(dest: Path, root: Path) -> str:
    """The recipe name `dest` gives (`<dir>-<stem>`), once sure nothing is there or named so."""
    if dest.exists():
        raise TunebookError([Problem(str(dest), "", "already exists; choose another TO or delete it first")])
    if dest.suffix != ".yaml":
        raise TunebookError([Problem(str(dest), "", "recipes are .yaml files")])
    name = f"{dest.parent.name}-{dest.stem}"
    taken = {r.meta.name: r.path for r in book(root)[0]}
    if name in taken:
        raise TunebookError([Problem(str(dest), "recipe.name", f"'{name}' is already used by {taken[name]}")])
    return name


def book(root: Path = RECIPES_ROOT):
    """Every recipe under `root`, and one Problem per .yaml there that is not one (a plain
    Axolotl config, a broken `recipe:` block): commands that walk the book report those in a
    line each and go on."""
    from tunebook.lock import recipes

    return recipes(root)


def import_recipe(src: Path, dest: Path, root: Path = RECIPES_ROOT):
    """An Axolotl config (no `recipe:` block) becomes a recipe at `dest`: validated, locked."""
    from tunebook.importer import import_config

    src, dest = Path(src), Path(dest)
    _free_destination(dest, root)
    imported = import_config(src, dest, root)
    try:
        validate_recipe(load_recipe(dest))
    except TunebookError as exc:
        dest.unlink()
        raise TunebookError(exc.problems, hint=f"{src} as written does not validate against the installed Axolotl; "
                                              "nothing was created. Fix a copy of it and import that") from None
    update(root, message=f"first version, imported from the Axolotl config {src.as_posix()}")
    return imported


def new_recipe(src: Path, dest: Path, root: Path = RECIPES_ROOT) -> Path:
    """Copy `src` to `dest` as a new recipe: new name, version 1, provenance comment, locked."""
    src, dest = Path(src), Path(dest)
    recipe = load_recipe(src)
    name = _free_destination(dest, root)
    meta = recipe.meta
    text = src.read_text(encoding="utf-8")
    text, n_name = re.subn(r"(?m)^(  name:\s*).*$", rf"\g<1>{name}", text, count=1)
    text, n_ver = re.subn(r"(?m)^(  version:\s*).*$", r"\g<1>1", text, count=1)
    if not (n_name and n_ver):
        raise TunebookError([Problem(str(src), "recipe", "could not find recipe.name / recipe.version lines to rewrite")])
    for old, new in ((src, dest), *_book_relative(src, dest, root)):
        text = text.replace(old.as_posix(), new.as_posix())  # the run commands in the header
    text = text.replace(f"runs/{meta.name}/", f"runs/{name}/")
    provenance = (f"# Copied from {src.as_posix()} ({meta.name} v{meta.version}, {recipe.content_hash()}) "
                  f"on {time.strftime('%Y-%m-%d')} by `make new`.\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(provenance + text, encoding="utf-8")
    try:
        validate_recipe(load_recipe(dest))
    except TunebookError:
        dest.unlink()
        raise
    update(root, message=f"first version, copied from {meta.name} v{meta.version}")
    return dest
