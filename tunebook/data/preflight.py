"""Training data checked before launch, with the project's own row validator.

Every row of every dataset must parse, carry the fields its dataset type needs (with the
right types and roles the chat template renders), and, for instruction types, yield at
least one trained token after the engine's own masking (Axolotl's prompt strategy, the code
that tokenizes for training). A run on data that teaches nothing finishes "successfully" in
every framework; here it does not start. Rows longer than `sequence_len` are counted: the
engine drops them (Axolotl) or cuts them (Unsloth), and the user is told how many.

A check is cached by the file's hash and what it was checked against, so the second run of
a recipe pays a hash of its data, nothing more.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunebook.atomic import atomic_write_json
from tunebook.data import formats
from tunebook.data.reader import EmptyInput, iter_records
from tunebook.errors import Problem, TunebookError

SHOWN = 10  # problems printed before "... and N more"


@dataclass
class DataCheck:
    path: str
    rows: int = 0
    trained_tokens: int | None = None  # None: not tokenized (a type without a mask check)
    too_long: int = 0  # rows longer than sequence_len
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def row_format(ds: dict[str, Any], rl: str | None) -> tuple[str | None, str]:
    """(format of tunebook's validator, the field holding the turns) for a dataset entry."""
    type_ = str(ds.get("type") or "")
    base = type_.split(":")[0].split(".")[0]
    if rl in ("dpo", "ipo", "simpo", "orpo"):
        return "preference", ""
    if base in ("chat_template", "messages"):
        return "messages", str(ds.get("field_messages") or "messages")
    if base == "alpaca":
        return "alpaca", ""
    if base == "completion":
        return "completion", str(ds.get("field") or "text")
    return None, ""


# Axolotl's chat_template roles when a dataset names none (prompt_strategies/chat_template.py)
DEFAULT_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant", "system": "system",
                 "tool": "tool"}


def _as_turns(turns: Any, ds: dict[str, Any]) -> Any:
    """The turns as Axolotl reads them: its `message_property_mappings` (role: from,
    content: value) and `roles` (user: [human]) applied, so tunebook's validator sees what
    the template will render."""
    if not isinstance(turns, list):
        return turns
    mapping = ds.get("message_property_mappings") or {}
    role_key, content_key = mapping.get("role", "role"), mapping.get("content", "content")
    roles = {s: t for t, sources in (ds.get("roles") or {}).items() for s in sources} or DEFAULT_ROLES
    out = []
    for turn in turns:
        if not isinstance(turn, dict):
            out.append(turn)
            continue
        role = turn.get(role_key)
        out.append({**{k: v for k, v in turn.items() if k not in (role_key, content_key)},
                    "role": roles.get(role, role) if isinstance(role, str) else role,
                    "content": turn.get(content_key)})
    return out


def _validate(row: Any, fmt: str, fld: str, ds: dict[str, Any] | None = None) -> None:
    if fmt == "messages" and isinstance(row, dict):
        if fld not in row:
            raise formats.RowError(f"no '{fld}' field (datasets field_messages); the row has {sorted(row)}")
        row = {"messages": _as_turns(row[fld], ds or {})}
    elif fmt == "completion" and isinstance(row, dict):
        row = {"text": row.get(fld)}
    formats.validate(row, fmt)


def _strategy(config: dict, index: int):
    from axolotl.loaders import load_tokenizer
    from axolotl.prompt_strategies import load as load_strategy
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    cfg = validate_config(DictDefault({k: v for k, v in config.items() if k != "recipe"}))
    normalize_config(cfg)
    tok = load_tokenizer(cfg)
    ds = cfg.datasets[index]
    strategy = load_strategy(ds["type"], tok, cfg, ds)
    base, _, style = str(ds["type"]).partition(":")
    if strategy is None and base == "alpaca":  # a built-in type Axolotl wraps itself (data/wrappers.py)
        from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
        from axolotl.prompters import AlpacaPrompter

        strategy = AlpacaPromptTokenizingStrategy(AlpacaPrompter(style or None), tok, cfg.train_on_inputs,
                                                  cfg.sequence_len)
    return strategy


def _key(path: Path, config: dict, ds: dict) -> str:
    h = hashlib.sha256(path.read_bytes())
    h.update(json.dumps([ds, config.get("base_model"), config.get("chat_template"), config.get("sequence_len"),
                         config.get("rl"), 2], sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def check_dataset(config: dict, index: int, cache: Path | None = None) -> DataCheck:
    ds = config["datasets"][index]
    path = Path(str(ds.get("path")))
    if not path.is_file():
        return DataCheck(str(path))  # not a local file (a hub id): resolve.preflight speaks for it
    key = _key(path, config, ds)
    hit = cache / f"{key}.json" if cache else None
    if hit and hit.exists():
        saved = json.loads(hit.read_text(encoding="utf-8"))
        return DataCheck(**{**saved, "problems": [tuple(p) for p in saved["problems"]]})
    fmt, fld = row_format(ds, config.get("rl"))
    out = DataCheck(str(path))
    good: list[tuple[int, Any]] = []
    try:
        for rec in iter_records(path):
            out.rows += 1
            if rec.error:
                out.problems.append((rec.line, rec.error))
                continue
            try:
                if fmt:
                    _validate(rec.row, fmt, fld, ds)
                good.append((rec.line, rec.row))
            except formats.RowError as exc:
                out.problems.append((rec.line, str(exc)))
    except EmptyInput:
        out.problems.append((0, "the file is empty: no rows to train on"))
    strategy = _strategy(config, index) if fmt in ("messages", "alpaca", "completion") and good and not out.problems \
        else None
    if strategy is not None:
        limit = int(config.get("sequence_len") or 2048)
        out.trained_tokens = 0
        for line, row in good:
            tokens = strategy.tokenize_prompt(row)
            labels = list(tokens["labels"])
            kept = sum(1 for x in labels[:limit] if x != -100)
            if not any(x != -100 for x in labels):
                out.problems.append((line, "no trained token after masking: no turn the template renders as the "
                                           "assistant's (check the roles and roles_to_train)"))
            out.too_long += len(labels) > limit
            out.trained_tokens += kept
    if hit:
        atomic_write_json(hit, asdict(out))
    return out


def check_training_data(config: dict, where, cache: Path | None = None) -> list[DataCheck]:
    """Every dataset of a resolved config; raises one TunebookError listing the problems."""
    checks = [check_dataset(config, i, cache) for i in range(len(config.get("datasets") or []))]
    problems: list[Problem] = []
    for i, c in enumerate(checks):
        for line, reason in c.problems[:SHOWN]:
            problems.append(Problem(c.path, "", reason, line or None))
        if len(c.problems) > SHOWN:
            problems.append(Problem(c.path, "", f"... and {len(c.problems) - SHOWN} more rows like these"))
        if not c.problems and c.rows and c.too_long == c.rows:
            src, line = where(f"datasets.{i}.path")
            problems.append(Problem(c.path, "", f"all {c.rows} rows are longer than sequence_len "
                                    f"({config.get('sequence_len')}): the engine would train on none", None))
    if problems:
        bad = next(c.path for c in checks if c.problems or (c.rows and c.too_long == c.rows))
        raise TunebookError(problems, hint=f"`make data IN={bad} TO=messages OUT=clean.jsonl` writes the good rows "
                            "and a rejects file with the reason for each bad one; point the recipe at the clean file")
    return checks
