"""Engines launch a real trainer on a resolved config; tunebook never trains by itself.

Each engine module has NAME, `check(config) -> [Problem]` for keys it cannot honour, and
`launch(run, config_path, env, echo) -> metrics`.
"""

from __future__ import annotations

import importlib

ENGINES = ("axolotl", "unsloth")


def get_engine(name: str):
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return importlib.import_module(f"tunebook.engines.{name}")
