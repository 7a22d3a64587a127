"""The five row formats, their validation, detection and meaning-preserving conversions."""

from __future__ import annotations

from typing import Any, Callable

FORMATS = ("alpaca", "sharegpt", "messages", "completion", "preference")
ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_response": "tool"}
SIGNATURES = {
    "alpaca": {"instruction", "output"},
    "sharegpt": {"conversations"},
    "messages": {"messages"},
    "completion": {"text"},
    "preference": {"chosen", "rejected"},
}


class RowError(ValueError):
    """A row that does not fit its format; the message says which field and why."""


def detect(row: dict[str, Any]) -> list[str]:
    """Every format whose signature keys the row has (preference wins over messages)."""
    if not isinstance(row, dict):
        return []
    found = [f for f, keys in SIGNATURES.items() if keys <= row.keys()]
    if "preference" in found and "messages" in found:
        found.remove("messages")
    return found


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        raise RowError(f"missing field '{key}'")
    if not isinstance(value, str):
        raise RowError(f"field '{key}' must be a string, not {type(value).__name__}")
    if not value.strip():
        raise RowError(f"field '{key}' is empty")
    return value


def _messages(value: Any, key: str, need_last_assistant: bool = True) -> list[dict]:
    if not isinstance(value, list):
        raise RowError(f"field '{key}' must be a list of {{role, content}} turns, not {type(value).__name__}")
    if not value:
        raise RowError(f"field '{key}' is an empty conversation")
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise RowError(f"{key}[{i}] must be an object with role and content")
        role = turn.get("role")
        if role not in ROLES:
            raise RowError(f"{key}[{i}].role '{role}' is not one of {sorted(ROLES)}")
        content = turn.get("content")
        if not isinstance(content, str):
            raise RowError(f"{key}[{i}].content must be a string, not {type(content).__name__}")
        if not content.strip() and role != "system":
            raise RowError(f"{key}[{i}].content is empty")
    if need_last_assistant:
        if value[-1]["role"] != "assistant":
            raise RowError(f"the last turn of '{key}' is '{value[-1]['role']}', not assistant: nothing to learn")
        if not any(t["role"] == "user" for t in value):
            raise RowError(f"'{key}' has no user turn")
    return value


def validate(row: Any, fmt: str) -> dict:
    """Return the row if valid for `fmt`; raise RowError naming the field otherwise."""
    if not isinstance(row, dict):
        raise RowError(f"a row must be a JSON object, not {type(row).__name__}")
    if fmt == "alpaca":
        _text(row, "instruction"), _text(row, "output")
        if row.get("input") is not None and not isinstance(row["input"], str):
            raise RowError("field 'input' must be a string")
    elif fmt == "sharegpt":
        conv = row.get("conversations")
        if not isinstance(conv, list) or not conv:
            raise RowError("field 'conversations' must be a non-empty list of {from, value} turns")
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict) or turn.get("from") not in SHAREGPT_ROLES:
                raise RowError(f"conversations[{i}].from must be one of {sorted(SHAREGPT_ROLES)}")
            if not isinstance(turn.get("value"), str) or not turn["value"].strip():
                raise RowError(f"conversations[{i}].value must be a non-empty string")
        if SHAREGPT_ROLES[conv[-1]["from"]] != "assistant":
            raise RowError("the last turn of 'conversations' is not from gpt/assistant: nothing to learn")
    elif fmt == "messages":
        _messages(row.get("messages"), "messages")
    elif fmt == "completion":
        _text(row, "text")
    elif fmt == "preference":
        prompt = row.get("prompt", row.get("messages"))
        if isinstance(prompt, list):
            _messages(prompt, "prompt", need_last_assistant=False)
        elif not isinstance(prompt, str) or not prompt.strip():
            raise RowError("field 'prompt' must be a non-empty string or a list of turns")
        for key in ("chosen", "rejected"):
            value = row.get(key)
            if isinstance(value, list):
                _messages(value, key, need_last_assistant=True)
            else:
                _text(row, key)
        if row["chosen"] == row["rejected"]:
            raise RowError("'chosen' and 'rejected' are identical: no preference to learn")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return row


# ---- conversions: each returns the converted row or raises RowError (lossy for this row)

def alpaca_to_messages(row: dict) -> dict:
    user = row["instruction"] + (("\n\n" + row["input"]) if row.get("input") else "")
    msgs = ([{"role": "system", "content": row["system"]}] if row.get("system") else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    return {"messages": msgs}


def messages_to_alpaca(row: dict) -> dict:
    msgs = row["messages"]
    system = [m for m in msgs if m["role"] == "system"]
    rest = [m for m in msgs if m["role"] != "system"]
    if len(rest) != 2 or [m["role"] for m in rest] != ["user", "assistant"] or len(system) > 1:
        raise RowError("alpaca holds one user/assistant exchange; this conversation has more turns (lossy)")
    out = {"instruction": rest[0]["content"], "input": "", "output": rest[1]["content"]}
    if system:
        out["system"] = system[0]["content"]
    return out


def sharegpt_to_messages(row: dict) -> dict:
    return {"messages": [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in row["conversations"]]}


def messages_to_sharegpt(row: dict) -> dict:
    back = {"user": "human", "assistant": "gpt", "system": "system", "tool": "tool"}
    return {"conversations": [{"from": back[m["role"]], "value": m["content"]} for m in row["messages"]]}


def messages_to_preference(row: dict) -> dict:
    if not isinstance(row.get("rejected"), str) or not row["rejected"].strip():
        raise RowError("a preference pair needs a 'rejected' answer next to 'messages'")
    return {"prompt": row["messages"][:-1], "chosen": row["messages"][-1]["content"], "rejected": row["rejected"]}


def messages_to_completion(template: Callable[[list[dict]], str]) -> Callable[[dict], dict]:
    return lambda row: {"text": template(row["messages"])}


CONVERSIONS: dict[tuple[str, str], Callable] = {
    ("alpaca", "messages"): alpaca_to_messages,
    ("messages", "alpaca"): messages_to_alpaca,
    ("sharegpt", "messages"): sharegpt_to_messages,
    ("messages", "sharegpt"): messages_to_sharegpt,
    ("messages", "preference"): messages_to_preference,
    ("alpaca", "sharegpt"): lambda r: messages_to_sharegpt(alpaca_to_messages(r)),
    ("sharegpt", "alpaca"): lambda r: messages_to_alpaca(sharegpt_to_messages(r)),
}
REFUSED = {
    ("completion", "*"): "plain text has no turns: which part is the prompt and which the answer is unknown",
    ("preference", "*"): "dropping the rejected answer loses the preference; keep preference rows for DPO recipes",
    ("*", "completion"): "needs a chat template: pass --template RECIPE (or a tokenizer folder)",
}


def converter(src: str, dst: str, template: Callable | None = None) -> Callable[[dict], dict]:
    """The function converting one row, or a ValueError explaining why this conversion is refused."""
    if src == dst:
        return lambda row: row
    if dst == "completion" and src in ("messages", "alpaca", "sharegpt") and template is not None:
        first = {"alpaca": alpaca_to_messages, "sharegpt": sharegpt_to_messages, "messages": lambda r: r}[src]
        to_text = messages_to_completion(template)
        return lambda row: to_text(first(row))
    if (src, dst) in CONVERSIONS:
        return CONVERSIONS[(src, dst)]
    for (a, b), why in REFUSED.items():
        if a in (src, "*") and b in (dst, "*"):
            raise ValueError(f"{src} -> {dst} is refused: {why}")
    raise ValueError(f"{src} -> {dst} is not a conversion that preserves meaning")
