"""`make new FROM=<an Axolotl config>`: an upstream example becomes a tunebook recipe.

The file is kept as written (comments and all) under a provenance comment and a `recipe:`
block; only the block is inferred: name from the destination path, family from
`base_model`, method from `rl`, `adapter`, `peft_use_dora`. Then it is validated like any
recipe and locked, and what a user must still decide on this machine is printed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from tunebook.errors import Problem, TunebookError

# base_model text -> family: the first pattern that matches (case-insensitive)
FAMILIES = (
    (r"smollm2?", "smollm2"), (r"llama[-_ ]?3|llama-3\.\d|meta-llama-3", "llama3"), (r"llama[-_ ]?4", "llama4"),
    (r"llama[-_ ]?2", "llama2"), (r"qwen[-_ ]?3", "qwen3"), (r"qwen[-_ ]?2", "qwen2"), (r"gemma[-_ ]?3", "gemma3"),
    (r"gemma[-_ ]?2", "gemma2"), (r"mixtral", "mixtral"), (r"mistral|ministral|magistral", "mistral"),
    (r"phi[-_ ]?\d", "phi"), (r"falcon", "falcon"), (r"tinyllama", "llama2"),
)
SUPPORTED_RL = {"dpo": "dpo"}  # tunebook's methods; other rl kinds (kto, orpo, grpo) have no recipe method yet


@dataclass
class Imported:
    path: Path
    meta: dict[str, Any]
    to_decide: list[str] = field(default_factory=list)


def is_recipe(config: dict[str, Any]) -> bool:
    return isinstance(config.get("recipe"), dict)


def infer_family(base_model: str | None) -> str:
    text = str(base_model or "")
    for pattern, family in FAMILIES:
        if re.search(pattern, text, re.IGNORECASE):
            return family
    tail = re.sub(r"[^a-z0-9]+", "-", text.rsplit("/", 1)[-1].lower()).strip("-")
    return tail.split("-")[0] or "model"


def infer_method(config: dict[str, Any], source: str) -> str:
    rl = config.get("rl")
    if rl:
        if str(rl) not in SUPPORTED_RL:
            raise TunebookError([Problem(source, "rl", f"{rl} has no tunebook recipe method yet "
                                         f"(recipes cover full, lora, qlora, dora, dpo)")],
                                hint="Axolotl itself runs it: axolotl train " + source)
        return SUPPORTED_RL[str(rl)]
    adapter = config.get("adapter")
    if adapter == "qlora" or (adapter == "lora" and config.get("load_in_4bit")):
        return "qlora"
    if adapter == "lora":
        return "dora" if config.get("peft_use_dora") else "lora"
    if adapter:
        raise TunebookError([Problem(source, "adapter", f"{adapter} has no tunebook recipe method yet "
                                     "(lora, qlora, or none for full fine-tuning)")])
    return "full"


def to_decide(config: dict[str, Any]) -> list[str]:
    """What an upstream example leaves to whoever runs it here: offline hubs, this CPU."""
    out = []
    base = str(config.get("base_model") or "")
    if base and not Path(base).is_dir():
        out.append(f"base_model {base} is a hub id and hubs are offline here: ARGS=\"base_model=<a local folder>\" "
                   "(models/smollm2-135m-instruct is the embedded one)")
    for i, ds in enumerate(config.get("datasets") or []):
        path = ds.get("path") if isinstance(ds, dict) else None
        if path and not Path(str(path)).exists():
            out.append(f"datasets.{i}.path {path} is not a local file: ARGS=\"datasets.{i}.path=<a .jsonl>\" "
                       "(data/nba/train.jsonl is a chat `messages` set)")
    if config.get("val_set_size") or config.get("test_datasets"):
        out.append("it evaluates during training (val_set_size/evals_per_epoch): slow on a CPU; make show says how "
                   "many passes, ARGS=\"val_set_size=0\" turns it off")
    if config.get("special_tokens") or config.get("tokens"):
        out.append("special_tokens/tokens may add tokens to the tokenizer (embeddings resized, a much larger adapter): "
                   "make show warns when they do")
    return out


def import_config(src: Path, dest: Path, root: Path) -> Imported:
    """Write `dest`: provenance, a `recipe:` block, then `src` as written. Validated and locked by the caller."""
    from tunebook.recipe import load_recipe

    recipe = load_recipe(src)  # UTF-8, YAML, a mapping, no key twice: each a clean error here too
    config = recipe.config
    name = f"{dest.parent.name}-{dest.stem}"
    meta = {"name": name, "version": 1, "family": infer_family(config.get("base_model")),
            "method": infer_method(config, str(src)), "engine": "axolotl",
            "description": f"imported from the Axolotl config {src.name}"}
    written_for = upstream_version(src)
    provenance = (f"# Imported from {src.as_posix()} ({written_for}) on {time.strftime('%Y-%m-%d')} by "
                  f"`make new`;\n# checked against Axolotl {_installed('axolotl')}. Everything below the recipe "
                  "block is the file as written.\n")
    block = yaml.safe_dump({"recipe": meta}, sort_keys=False, allow_unicode=True, width=100)
    text, notes = _shipped_deepspeed(src.read_text(encoding="utf-8"), config)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(provenance + block + "\n" + text, encoding="utf-8")
    return Imported(dest, meta, notes + to_decide(config))


def _shipped_deepspeed(text: str, config: dict[str, Any]) -> tuple[str, list[str]]:
    """Upstream examples name Axolotl's own `deepspeed_configs/zeroN.json`, relative to its
    repository; tunebook ships the same files in recipes/deepspeed/: point the line there."""
    value = config.get("deepspeed")
    if not isinstance(value, str) or not value.startswith("deepspeed_configs/"):
        return text, []
    from tunebook.paths import PATHS

    shipped = PATHS.recipes / "deepspeed" / Path(value).name
    if not shipped.is_file():
        return text, []
    to = shipped.relative_to(PATHS.root).as_posix()
    new = re.sub(rf"(?m)^(deepspeed:\s*['\"]?){re.escape(value)}", rf"\g<1>{to}", text, count=1)
    return new, [f"deepspeed {value} (Axolotl's repository) now names {to}, the same file shipped with tunebook"]


def upstream_version(src: Path) -> str:
    """What the file says it was written for: a SOURCE file beside it (tests/data/upstream
    keeps one), else unknown."""
    for folder in (src.parent, *src.parents):
        source = folder / "SOURCE"
        if source.is_file():
            for line in source.read_text(encoding="utf-8").splitlines():
                if line.startswith("axolotl:"):
                    return "written for " + line.split(":", 1)[1].strip()
            break
    return "Axolotl version it was written for unknown"


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"
