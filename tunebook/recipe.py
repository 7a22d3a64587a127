"""A recipe: an Axolotl config plus one `recipe:` block that Axolotl ignores.

Loading keeps the line of every key so that validation errors can point at it, and the
content hash ignores comments, key order, `recipe.version` and `recipe.description`, so
that only edits which can change results ask for a version bump.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunebook.errors import Problem, TunebookError

METHODS = ("full", "lora", "qlora", "dora", "dpo")
ENGINES = ("axolotl", "unsloth")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
HASH_EXCLUDED = (("recipe", "version"), ("recipe", "description"))


class RecipeMeta(BaseModel):
    """The `recipe:` block. Strict: a typo here is as wrong as one in the engine keys."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="unique, used for runs/<name>/")
    version: int = Field(ge=1, description="bump on any change that can alter results")
    family: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    method: Literal["full", "lora", "qlora", "dora", "dpo"]
    engine: Literal["axolotl", "unsloth"] = "axolotl"
    description: str = ""
    hardware: str = Field(default="", description="what the recipe expects, for people")
    eval_tasks: list[str] = Field(default_factory=list, description="lm-eval tasks in eval/tasks for `make eval`")


@dataclass
class Recipe:
    path: Path
    config: dict[str, Any]  # the whole YAML mapping, `recipe:` block included
    lines: dict[str, int] = field(default_factory=dict)  # dotted key -> 1-based line

    @property
    def meta(self) -> RecipeMeta:
        """The `recipe:` block; a broken one is the project's error naming file, line and key."""
        problems = meta_problems(self.config, self.where())
        if problems:
            raise TunebookError(problems, hint="the `recipe:` block needs name, version, family, method")
        return RecipeMeta(**self.config["recipe"])

    @property
    def engine_config(self) -> dict[str, Any]:
        """What the engine sees: everything but the `recipe:` block."""
        return {k: v for k, v in self.config.items() if k != "recipe"}

    def line_of(self, key: str) -> int | None:
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return None

    def content_hash(self) -> str:
        return content_hash(self.config)

    def where(self, overrides: dict[str, Any] | None = None):
        """`where(dotted_key) -> (source, line)`: ARGS for an overridden key, else file and line."""
        overrides = overrides or {}

        def where(dotted: str) -> tuple[str, int | None]:
            for key in overrides:
                if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + ".") and dotted:
                    return "ARGS", None
            return str(self.path), self.line_of(dotted)

        return where


def meta_problems(config: dict[str, Any], where, extra_ok: bool = False) -> list[Problem]:
    """What is wrong with a config's `recipe:` block, each at its key. `where(key) -> (source,
    line)`; with extra_ok, unknown keys are left to the caller (validation suggests a fix)."""
    meta = config.get("recipe")
    if not isinstance(meta, dict):
        return [_at(where, "recipe", "missing `recipe:` block (name, version, family, method, engine)")]
    try:
        RecipeMeta(**meta)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            if err["type"] == "extra_forbidden" and extra_ok:
                continue
            dotted = "recipe." + ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else clean_message(err["msg"])
            out.append(_at(where, dotted, msg))
        return out
    return []


def _at(where, dotted: str, message: str) -> Problem:
    source, line = where(dotted)
    return Problem(source, dotted, message, line)


def clean_message(msg: str) -> str:
    return re.sub(r"^(Value error|Assertion failed), ", "", msg).strip()


def content_hash(config: dict[str, Any]) -> str:
    data = copy.deepcopy(config)
    for block, key in HASH_EXCLUDED:
        if isinstance(data.get(block), dict):
            data[block].pop(key, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key + ".", out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}{i}"
            out[key] = item.start_mark.line + 1
            _key_lines(item, key + ".", out)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise TunebookError(
            [Problem(str(path), "", "no such recipe file")],
            hint="`make list` shows the shipped recipes",
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TunebookError([Problem(str(path), "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                                     "save the recipe as UTF-8", line)]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        config = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise TunebookError([Problem(str(path), "", f"not valid YAML: {exc.problem}", line)]) from None
    if not isinstance(config, dict):
        raise TunebookError([Problem(str(path), "", "a recipe must be a YAML mapping of keys to values")])
    lines: dict[str, int] = {}
    if node is not None:
        _key_lines(node, "", lines)
        dupes = _duplicate_keys(node, "", str(path))
        if dupes:
            raise TunebookError(dupes, hint="YAML keeps the last of two equal keys: delete the one you did not mean")
    return Recipe(path=path, config=config, lines=lines)


def _duplicate_keys(node: yaml.Node, prefix: str, source: str) -> list[Problem]:
    out: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                out.append(Problem(source, f"{prefix}{key_node.value}",
                                   f"set twice, on lines {seen[key_node.value]} and {line}", line))
            seen.setdefault(key_node.value, line)
            out += _duplicate_keys(value_node, f"{prefix}{key_node.value}.", source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicate_keys(item, f"{prefix}{i}.", source)
    return out


def parse_overrides(args: str | list[str] | None) -> dict[str, Any]:
    """`ARGS="lora_r=8 datasets.0.path=x.jsonl"` -> {"lora_r": 8, "datasets.0.path": "x.jsonl"}.

    Values are parsed as YAML, so `8` is an int, `true` a bool and `[a, b]` a list; but, as in
    YAML 1.2, only true/false are booleans: `save_strategy=no` stays the string "no" (YAML 1.1
    made it False, which Axolotl then rejected), and a bool key given `yes` still validates.
    """
    if not args:
        return {}
    items = shlex.split(args) if isinstance(args, str) else list(args)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TunebookError(
                [Problem("ARGS", item, "expected key=value")],
                hint='ARGS="lora_r=8 learning_rate=1e-4"',
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _FLOAT.match(value):
            value = float(value)  # YAML 1.1 reads `1e-4` (no dot) as a string
        if isinstance(value, bool) and raw.lower() not in ("true", "false"):
            value = raw
        out[key] = value
    return out


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `config` with dotted-key overrides set (list indices allowed)."""
    config = copy.deepcopy(config)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        target: Any = config
        for i, part in enumerate(parts[:-1]):
            if isinstance(target, list):
                if not part.isdigit() or int(part) >= len(target):
                    raise TunebookError([Problem("ARGS", dotted, f"'{part}' is not an index of this list")])
                target = target[int(part)]
            else:
                if part not in target or target[part] is None:
                    target[part] = {}
                target = target[part]
            if not isinstance(target, (dict, list)):
                raise TunebookError(
                    [Problem("ARGS", dotted, f"'{'.'.join(parts[: i + 1])}' is not a mapping or list")]
                )
        last = parts[-1]
        if isinstance(target, list):
            if not last.isdigit() or int(last) >= len(target):
                raise TunebookError([Problem("ARGS", dotted, f"'{last}' is not an index of this list")])
            target[int(last)] = value
        else:
            target[last] = value
    return config


def dump_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
