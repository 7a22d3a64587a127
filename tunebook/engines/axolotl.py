"""The Axolotl engine: full, LoRA, QLoRA and DPO through Axolotl's own train path."""

from __future__ import annotations

from pathlib import Path

from tunebook.engines.process import run_worker
from tunebook.runs import RunDir

NAME = "axolotl"
WORKER = "tunebook.engines.axolotl_worker"


def check(config: dict) -> list:
    """Axolotl honours every key its schema knows; validation already checked them."""
    return []


def launch(run: RunDir, config_path: Path, env: dict[str, str], echo: bool = True) -> dict:
    return run_worker(WORKER, run, config_path, env, echo)
