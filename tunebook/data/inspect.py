"""`make inspect`: rows exactly as the engine tokenizes them, and which tokens carry loss.

Uses Axolotl's own prompt strategy (the code that tokenizes for training), so what this
shows is what trains. A row with no trainable token teaches nothing and usually means a
wrong template or role mapping: every such row is named and the command fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunebook.errors import Problem, TunebookError


@dataclass
class Tokenized:
    line: int
    input_ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != -100)


def _strategy(config: dict):
    from axolotl.loaders import load_tokenizer
    from axolotl.prompt_strategies import load as load_strategy
    from axolotl.utils.config import normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    cfg = validate_config(DictDefault({k: v for k, v in config.items() if k != "recipe"}))
    normalize_config(cfg)
    tok = load_tokenizer(cfg)
    ds = cfg.datasets[0]
    if cfg.rl:
        raise TunebookError([Problem("", "rl", "preference (DPO) recipes pair whole answers; inspect shows SFT masking")])
    return tok, load_strategy(ds["type"], tok, cfg, ds), Path(ds["path"])


def tokenize(recipe_path: str | Path, args: str = "", limit: int | None = None):
    from tunebook.resolve import resolve

    config = resolve(recipe_path, args).config  # as `make train` would read it, checked the same way
    tok, strategy, data = _strategy(config)
    rows: list[Tokenized] = []
    with open(data, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            out = strategy.tokenize_prompt(json.loads(line))
            rows.append(Tokenized(n, list(out["input_ids"]), list(out["labels"])))
            if limit and len(rows) >= limit:
                break
    return tok, rows, data


def render(tok, row: Tokenized, color: bool) -> str:
    """The row's text with trained spans marked: green on a terminal, [[...]] otherwise."""
    parts, current, buf = [], None, []
    for tid, lab in zip(row.input_ids, row.labels):
        trained = lab != -100
        if trained != current and buf:
            parts.append((current, tok.decode(buf)))
            buf = []
        current = trained
        buf.append(tid)
    if buf:
        parts.append((current, tok.decode(buf)))
    if color:
        return "".join(f"\033[1;32m{t}\033[0m" if tr else f"\033[2m{t}\033[0m" for tr, t in parts)
    return "".join(f"[[{t}]]" if tr else t for tr, t in parts)


def inspect(recipe_path: str | Path, n: int = 3, args: str = "", color: bool = False) -> str:
    tok, rows, data = tokenize(recipe_path, args)
    out = []
    for row in rows[:n]:
        out.append(f"--- {data}:{row.line}  {len(row.input_ids)} tokens, {row.trained} trained on "
                   f"({'green' if color else '[[ ]]'} = loss)")
        out.append(render(tok, row, color))
    empty = [r.line for r in rows if r.trained == 0]
    total = sum(len(r.input_ids) for r in rows)
    trained = sum(r.trained for r in rows)
    out.append(f"\n{len(rows)} rows, {total} tokens, {trained} trained on ({100 * trained / max(1, total):.1f}%)")
    if empty:
        raise TunebookError(
            [Problem(str(data), "", f"row at line {line} has no trainable token") for line in empty[:20]]
            + ([Problem(str(data), "", f"... and {len(empty) - 20} more")] if len(empty) > 20 else []),
            hint="check roles_to_train, the chat template and that each row ends with an assistant turn",
        )
    return "\n".join(out)
