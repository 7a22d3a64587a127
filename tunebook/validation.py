"""Strict recipe validation with Axolotl's own schema as the source of truth.

Axolotl's pydantic models silently drop keys they don't know, so a typo like `lora_rank`
trains with the default rank and nobody notices. Here an unknown key is an error naming
the file, line and key, with the closest valid key; everything else (types, impossible
combinations) is Axolotl's own validator, its messages re-pointed at the key they concern.
"""

from __future__ import annotations

import copy
import difflib
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ValidationError

from tunebook.errors import Problem, TunebookError
from tunebook.recipe import Recipe, RecipeMeta, clean_message, meta_problems


@lru_cache(maxsize=None)
def _schemas():
    # Imported lazily: pulling in Axolotl's schema costs seconds, and `--help` shouldn't pay.
    from axolotl.utils.schemas.config import AxolotlInputConfig
    from axolotl.utils.schemas.datasets import DPODataset, KTODataset, SFTDataset

    return AxolotlInputConfig, SFTDataset, DPODataset, KTODataset


def valid_keys(model: type[BaseModel]) -> set[str]:
    keys = set(model.model_fields)
    keys.update(f.alias for f in model.model_fields.values() if f.alias)
    return keys


def engine_keys() -> set[str]:
    return valid_keys(_schemas()[0]) - {"capabilities", "env_capabilities"}


def suggest(key: str, candidates: set[str]) -> str:
    """' (did you mean X?)' for the closest valid key, or '' when nothing is close.

    difflib's ratio alone prefers `local_rank` for `lora_rank`; a valid key that starts the
    typo (`lora_r`) gets a bonus for the share of the typo it covers.
    """
    def score(c: str) -> float:
        ratio = difflib.SequenceMatcher(None, key, c).ratio()
        prefix = len(c) / len(key) + 0.2 if key.startswith(c) and len(c) >= 4 else 0.0
        return max(ratio, prefix)

    best = max(sorted(candidates), key=score, default=None)
    return f" (did you mean '{best}'?)" if best and score(best) >= 0.6 else ""


def _dataset_model(config: dict[str, Any]) -> type[BaseModel]:
    _, sft, dpo, kto = _schemas()
    rl = config.get("rl")
    if rl in ("dpo", "ipo", "simpo", "orpo"):
        return dpo
    if rl == "kto":
        return kto
    return sft


def unknown_key_problems(config: dict[str, Any], where) -> list[Problem]:
    """Unknown keys at the top level, in `recipe:` and in each `datasets`/`test_datasets` entry.

    `where(dotted_key) -> (source, line)` says which input a key came from.
    """
    from tunebook.plugins import in_play, owner_of

    problems = []
    plugins, _ = in_play(config.get("plugins") if isinstance(config.get("plugins"), list) else None)
    top = engine_keys() | {"recipe"} | {k for p in plugins for k in p.keys}
    for key in config:
        if key not in top:
            src, line = where(key)
            owner = owner_of(key)
            if owner:
                problems.append(Problem(src, key, f"belongs to the plugin {owner.plugin}, which `plugins:` does not "
                                        f"list: add `- {owner.plugin}` under plugins:", line))
            else:
                problems.append(Problem(src, key, f"unknown key{suggest(key, top)}", line))
    meta = config.get("recipe")
    if isinstance(meta, dict):
        meta_keys = set(RecipeMeta.model_fields)
        for key in meta:
            if key not in meta_keys:
                src, line = where(f"recipe.{key}")
                problems.append(Problem(src, f"recipe.{key}", f"unknown key{suggest(key, meta_keys)}", line))
    ds_keys = valid_keys(_dataset_model(config))
    for list_key in ("datasets", "test_datasets"):
        entries = config.get(list_key)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            for key in entry:
                if key not in ds_keys:
                    dotted = f"{list_key}.{i}.{key}"
                    src, line = where(dotted)
                    problems.append(Problem(src, dotted, f"unknown key{suggest(key, ds_keys)}", line))
    return problems


def _meta_problems(config: dict[str, Any], where) -> list[Problem]:
    return meta_problems(config, where, extra_ok=True)  # unknown keys: unknown_key_problems suggests


def _key_in_message(msg: str, config: dict[str, Any]) -> str:
    """Axolotl's cross-field checks raise with no location; find the key they talk about."""
    keys = engine_keys()
    mentioned = [k for k in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", msg) if k in keys]
    for k in mentioned:  # prefer a key the recipe actually sets
        if k in config:
            return k
    return mentioned[0] if mentioned else ""


def schema_problems(config: dict[str, Any], where, capabilities=None, env_capabilities=None) -> list[Problem]:
    """Run Axolotl's own validate_config and turn its errors into Problems."""
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    from tunebook.plugins import in_play, merged_schema

    engine_cfg = {k: v for k, v in copy.deepcopy(config).items() if k != "recipe"}
    plugins = in_play(engine_cfg.get("plugins") if isinstance(engine_cfg.get("plugins"), list) else None)[0]
    try:
        with merged_schema(plugins):
            validate_config(DictDefault(engine_cfg), capabilities=capabilities, env_capabilities=env_capabilities)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
            dotted = ".".join(loc) if loc else _key_in_message(err["msg"], engine_cfg)
            src, line = where(dotted) if dotted else where("")
            out.append(Problem(src, dotted, clean_message(err["msg"]), line))
        return out
    except OSError as exc:  # Axolotl read the model's config from a hub it cannot reach
        src, line = where("base_model")
        return [Problem(src, "base_model", str(exc).splitlines()[0], line)]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # Some Axolotl checks raise plain exceptions before pydantic gets to them.
        msg = str(exc)
        dotted = _key_in_message(msg, engine_cfg)
        src, line = where(dotted)
        return [Problem(src, dotted, msg, line)]
    return []


def validate(config: dict[str, Any], where, *, capabilities=None, env_capabilities=None) -> None:
    """Raise TunebookError listing every problem of `config`; return quietly when it is sound.

    `where(dotted_key) -> (source, line)` points each problem at the recipe line or at ARGS
    (`Recipe.where`). Overrides are applied before, by `resolve`, never here.
    """
    from tunebook.value_checks import value_problems

    unknown = unknown_key_problems(config, where)
    problems = unknown + _meta_problems(config, where) + value_problems(config, where)
    # Axolotl's own validator too, in the same pass (a typo must not hide a type error), on the
    # config without the keys already reported, and silent about keys already wrong
    reported = {p.key for p in problems}
    known = _without(config, {p.key for p in unknown})
    problems += [p for p in schema_problems(known, where, capabilities, env_capabilities)
                 if p.key not in reported or not p.key]
    if problems:
        raise TunebookError(problems, hint="fix the keys above; `make show RECIPE=...` prints the resolved config")


def _without(config: dict[str, Any], dotted_keys: set[str]) -> dict[str, Any]:
    """A copy of `config` without the given keys (top-level, or in a list entry: datasets.0.x)."""
    out = copy.deepcopy(config)
    for dotted in dotted_keys:
        parts = dotted.split(".")
        target: Any = out
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target.get(part, {})
        if isinstance(target, dict):
            target.pop(parts[-1], None)
    return out


def validate_recipe(recipe: Recipe) -> None:
    """The recipe file as written (`make validate`, `make new`)."""
    validate(recipe.config, recipe.where())
