"""Engines launch a real trainer on a resolved config; tunebook never trains by itself."""

from __future__ import annotations


def get_engine(name: str):
    if name == "axolotl":
        from tunebook.engines import axolotl

        return axolotl
    raise NotImplementedError(f"engine '{name}' is not available yet")
