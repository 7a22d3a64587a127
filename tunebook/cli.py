"""The `tunebook` command. Every Make target is a thin call of one subcommand here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunebook.errors import TunebookError


def _cmd_setup_model(a) -> int:
    from tunebook import embedded_model

    if embedded_model.is_converted(a.out) and not a.force:
        print(f"embedded model: {a.out} already converted")
        return 0
    print(f"converting {embedded_model.find_gguf().name} -> {a.out} (about a minute) ...")
    embedded_model.convert(Path(a.out), force=a.force)
    print(f"embedded model: {a.out} ready")
    return 0


def _cmd_train(a) -> int:
    from tunebook.train import train

    train(a.recipe, a.args, engine=a.engine, runs_root=Path(a.runs))
    return 0


def _cmd_validate(a) -> int:
    from tunebook.lock import RECIPES_ROOT, discover
    from tunebook.recipe import load_recipe
    from tunebook.validation import validate

    paths = [Path(p) for p in a.recipes] or discover(RECIPES_ROOT)
    failed = 0
    for path in paths:
        try:
            validate(load_recipe(path))
            print(f"ok      {path}")
        except TunebookError as exc:
            failed += 1
            print(f"FAILED  {path}")
            for p in exc.problems:
                print(f"    {p}")
    print(f"\n{len(paths) - failed} of {len(paths)} recipes valid")
    return 2 if failed else 0


def _cmd_show(a) -> int:
    from tunebook.recipe import dump_yaml
    from tunebook.train import resolve

    _recipe, config, changes, machine = resolve(a.recipe, a.args, engine=a.engine)
    print(dump_yaml(config))
    print(f"# adapted for {machine.kind}:")
    for c in changes:
        print(f"#   {c}")
    return 0


def _cmd_lock(a) -> int:
    from tunebook.lock import RECIPES_ROOT, check, update

    root = Path(a.root or RECIPES_ROOT)
    if a.check:
        problems = check(root)
        if problems:
            raise TunebookError(problems)
        print("versions.lock is up to date")
        return 0
    changed = update(root, a.message)
    print(f"versions.lock: {len(changed)} entries changed" + (": " + ", ".join(changed) if changed else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tunebook", description="Versioned fine-tuning recipes run by Axolotl / Unsloth.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("setup-model", help="convert the embedded SmolLM2 GGUF into an HF folder")
    p.add_argument("--out", default="models/smollm2-135m-instruct")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=_cmd_setup_model)

    for name, fn, hlp in (("train", _cmd_train, "validate, adapt, launch the engine, record the run"),
                          ("show", _cmd_show, "print the resolved config with this machine's adaptations")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("recipe")
        p.add_argument("--args", default="", help='overrides: "key=value key2=value"')
        p.add_argument("--engine", default=None, choices=["axolotl", "unsloth"])
        p.add_argument("--runs", default="runs", help="where run directories go")
        p.set_defaults(fn=fn)

    p = sub.add_parser("validate", help="validate recipes (all when none given)")
    p.add_argument("recipes", nargs="*")
    p.set_defaults(fn=_cmd_validate)

    p = sub.add_parser("lock", help="update recipes/versions.lock (or --check it)")
    p.add_argument("--check", action="store_true")
    p.add_argument("--root", default=None)
    p.add_argument("--message", "-m", default="", help="changelog line for bumped recipes")
    p.set_defaults(fn=_cmd_lock)
    return ap


def main(argv: list[str] | None = None) -> int:
    from tunebook.quiet import quiet_imports

    quiet_imports()
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except TunebookError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
