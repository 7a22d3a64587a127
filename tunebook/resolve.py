"""Where a recipe becomes an engine config: recipe + ARGS + ENGINE -> one `Resolved`, built once.

Every command that acts on a recipe (train, show, profile, compare, bench, the bench runners)
starts here and hands the value down; nothing below re-reads the recipe or re-parses ARGS.
The order is the order of trust: the recipe as written and the user's overrides are
validated first (errors point at file:line or ARGS), then the config is fitted to this
machine (every change said, `adapt.py` and the engine's own `adapt_cpu`), then validated
again with the machine's capabilities, then the engine says which keys it cannot honour.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunebook.adapt import Change, adapt_config, set_key
from tunebook.data.preflight import DataCheck, check_training_data
from tunebook.engines import get_engine
from tunebook.errors import Problem, TunebookError
from tunebook import trackers
from tunebook.launch import Launch, for_recipe
from tunebook.machine import Machine, detect
from tunebook.notices import Notice, notices
from tunebook.paths import PATHS
from tunebook.recipe import Recipe, RecipeMeta, apply_overrides, content_hash, load_recipe, parse_overrides
from tunebook.validation import validate


def online_requested() -> bool:
    """Runs are offline unless TUNEBOOK_ONLINE=1: nothing may download at run time by accident."""
    return os.environ.get("TUNEBOOK_ONLINE") == "1"


@dataclass(frozen=True)
class Resolved:
    recipe: Recipe
    overrides: dict[str, Any]  # ARGS, plus ENGINE= as `recipe.engine`: what differs from the file
    config: dict[str, Any]  # recipe + overrides, validated: the run as the user asked for it
    adapted: dict[str, Any]  # fitted to `machine`: what the engine is given
    changes: list[Change] = field(default_factory=list)
    machine: Machine | None = None
    data: list[DataCheck] = field(default_factory=list)  # the training data as checked (check_inputs)
    notices: list[Notice] = field(default_factory=list)  # settings that change what is trained or shipped
    launch: Launch = field(default_factory=Launch)  # one process, or torchrun with several (NPROC)

    def say_notices(self) -> None:
        """One `warning:` line each, on stderr, at the line that set it (`make show`, `make train`)."""
        for n in self.notices:
            src, line = self.where(n.key)
            print(f"warning: {src}{f':{line}' if line else ''}: {n.key}: {n.message}", file=sys.stderr)

    @property
    def meta(self) -> RecipeMeta:
        return RecipeMeta(**self.adapted["recipe"])

    @property
    def engine(self) -> str:
        return self.meta.engine

    @property
    def as_written(self) -> bool:
        """True when the run is the recipe file itself (compare and bench only count those)."""
        return not self.overrides

    def where(self, key: str) -> tuple[str, int | None]:
        return self.recipe.where(self.overrides)(key)

    def resolved_hash(self) -> str:
        return content_hash(self.adapted)


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def model_folder_problem(folder: Path) -> str | None:
    """What keeps `folder` from being a model transformers can load, in words; None if nothing."""
    if not folder.is_dir():
        return "is a file, not a model folder (a GGUF file? `make setup` converts the embedded one)"
    if not (folder / "config.json").is_file():
        return "has no config.json: not a Hugging Face model folder"
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        return "has config.json but no weights (*.safetensors)"
    return None


def preflight(config: dict, where, online: bool = False) -> None:
    """Catch missing local inputs before an engine spends a minute starting up."""
    problems = []
    base = str(config.get("base_model") or "")
    if base and Path(base).exists():
        missing = model_folder_problem(Path(base))
        if missing:
            src, line = where("base_model")
            problems.append(Problem(src, "base_model", f"'{base}' {missing}", line))
    elif base:
        looks_local = base.startswith((".", "/", "models/")) or base.count("/") != 1
        if looks_local or not (online or _in_hf_cache(base)):
            src, line = where("base_model")
            why = "no such folder" if looks_local else "is a hub id not in the local HF cache, and hubs are offline"
            problems.append(Problem(src, "base_model", f"'{base}' {why}; run `make setup` for the embedded "
                                    "model, or point base_model at a local HF folder", line))
    for list_key in ("datasets", "test_datasets"):
        for i, ds in enumerate(config.get(list_key) or []):
            path = str(ds.get("path", "")) if isinstance(ds, dict) else ""
            is_file = ds.get("ds_type") in ("json", "csv", "parquet", "text") or path.endswith(
                (".jsonl", ".json", ".csv", ".parquet"))
            if path and is_file and not Path(path).exists():
                src, line = where(f"{list_key}.{i}.path")
                problems.append(Problem(src, f"{list_key}.{i}.path", f"no such data file '{path}'", line))
    if problems:
        raise TunebookError(problems)


def resolve(recipe: str | Path | Recipe, args: str | list[str] | None = None, engine: str | None = None,
            machine: Machine | None = None, check_inputs: bool = True, launch: Launch | None = None) -> Resolved:
    """The run a command would launch. `machine` stands in for this one in tests."""
    launch = launch or Launch()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    overrides = parse_overrides(args)
    if engine:  # an override like any other: the record must not take the run for the recipe as written
        overrides["recipe.engine"] = engine
    where = recipe.where(overrides)
    config = apply_overrides(recipe.config, overrides)
    validate(config, where)
    if check_inputs:
        preflight(config, where, online=online_requested())
    machine = machine or detect()
    engine_name = config["recipe"].get("engine", "axolotl")
    eng = get_engine(engine_name)
    adapted, changes = adapt_config(config, machine, engine=engine_name, online=online_requested())
    trackers.configure(adapted, lambda key, value, why: set_key(adapted, key, value, why, changes))
    launch = for_recipe(launch, adapted, machine.has_cuda, lambda key, value, why: set_key(adapted, key, value, why, changes))
    caps, env_caps = eng.capabilities(machine)
    validate(adapted, where, capabilities=caps, env_capabilities=env_caps)
    unhonoured = []
    for p in eng.check(adapted):
        source, line = where(p.key)
        unhonoured.append(Problem(source, p.key, p.message, line))
    if (launch.distributed or launch.ray) and engine_name == "unsloth":
        how = ("use_ray / RAY_ADDRESS", "Ray Train") if launch.ray else (f"NPROC={launch.nproc}", "torchrun")
        unhonoured.append(Problem("NPROC", "", f"the unsloth engine trains in one process; {how[0]} "
                                  f"needs the axolotl engine ({how[1]})"))
    if unhonoured:
        raise TunebookError(unhonoured, hint=f"engine '{engine_name}' is set in recipe.engine (override: ENGINE=axolotl)")
    data = check_training_data(config, where, PATHS.data_checks) if check_inputs else []
    return Resolved(recipe, overrides, config, adapted, changes, machine, data,
                    notices(adapted, data, on_cpu=not machine.has_cuda), launch)
