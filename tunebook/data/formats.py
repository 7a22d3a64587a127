"""The five row formats, their validation, detection and meaning-preserving conversions."""

from __future__ import annotations

from typing import Any, Callable

FORMATS = ("alpaca", "sharegpt", "messages", "completion", "preference")
ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_response": "tool", "observation": "tool",
                  "function_call": "assistant"}
SIGNATURES = {
    "alpaca": {"instruction", "output"},
    "sharegpt": {"conversations"},
    "messages": {"messages"},
    "completion": {"text"},
    "preference": {"chosen", "rejected"},
}
PREFERENCE_V1 = {"chosen_messages", "rejected_messages"}  # LLaMA-Factory's v1 DPO rows
TURN_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name"}  # what a turn carries through


class RowError(ValueError):
    """A row that does not fit its format; the message says which field and why."""


def detect(row: dict[str, Any]) -> list[str]:
    """Every format whose signature keys the row has (preference wins over messages)."""
    if not isinstance(row, dict):
        return []
    found = [f for f, keys in SIGNATURES.items() if keys <= row.keys()]
    if "preference" in found or PREFERENCE_V1 <= row.keys():
        return ["preference"]  # its prompt may sit in messages/conversations: still one preference row
    if "alpaca" in found and ("messages" in found or "sharegpt" in found):
        found.remove("alpaca")  # an alpaca-looking row with messages/conversations is that conversation
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


def flatten_content(content: Any, where: str) -> str:
    """OpenAI-style content parts (`[{type: text, text}]`, LLaMA-Factory's `value`) as one text;
    a non-text part (image, audio) cannot become text: the row is refused, naming it."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise RowError(f"{where} must be a string, not {type(content).__name__} (or a list of content parts)")
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type", "text") if isinstance(part, dict) else type(part).__name__
        if kind != "text":
            raise RowError(f"{where}[{j}] is a '{kind}' part: only text parts become text (a multimodal row)")
        texts.append(str(part.get("text", part.get("value", ""))))
    return "\n".join(t for t in texts if t)


def _tool_calls(calls: Any, where: str) -> list[dict]:
    if not isinstance(calls, list) or not calls:
        raise RowError(f"{where} must be a non-empty list of tool calls")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RowError(f"{where}[{j}] needs function.name (OpenAI's tool call shape)")
    return calls


def _messages(value: Any, key: str, need_last_assistant: bool = True, dropped: list | None = None,
              need_user: bool = True) -> list[dict]:
    """The turns, normalised: content parts flattened to text, assistant tool calls and tool
    results kept, any other per-turn key reported in `dropped` (by name) and left out."""
    if not isinstance(value, list):
        raise RowError(f"field '{key}' must be a list of {{role, content}} turns, not {type(value).__name__}")
    if not value:
        raise RowError(f"field '{key}' is an empty conversation")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise RowError(f"{key}[{i}] must be an object with role and content")
        role = turn.get("role")
        if role not in ROLES:
            raise RowError(f"{key}[{i}].role '{role}' is not one of {sorted(ROLES)}")
        if turn.get("content") is None and not turn.get("tool_calls"):
            raise RowError(f"{key}[{i}].content must be a string, not missing")
        content = flatten_content(turn.get("content"), f"{key}[{i}].content")
        new = {"role": role, "content": content}
        if turn.get("tool_calls"):
            if role != "assistant":
                raise RowError(f"{key}[{i}] has tool_calls but is a {role} turn (only assistant turns call tools)")
            new["tool_calls"] = _tool_calls(turn["tool_calls"], f"{key}[{i}].tool_calls")
        elif not content.strip() and role != "system":
            raise RowError(f"{key}[{i}].content is empty")
        for extra in ("tool_call_id", "name"):
            if turn.get(extra) is not None:
                new[extra] = turn[extra]
        if dropped is not None:
            dropped += [f"{key}[].{k}" for k in turn if k not in TURN_KEYS]
        out.append(new)
    if need_last_assistant:
        if out[-1]["role"] != "assistant":
            raise RowError(f"the last turn of '{key}' is '{out[-1]['role']}', not assistant: nothing to learn")
        if need_user and not any(t["role"] == "user" for t in out):
            raise RowError(f"'{key}' has no user turn")
    return out


def _tools(value: Any) -> list:
    """A row's tool schemas: a list, or a JSON string of one (LLaMA-Factory's `tools`)."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(f"field 'tools' is not JSON: {exc.msg}") from None
    if not isinstance(value, list):
        raise RowError("field 'tools' must be a list of tool schemas")
    return value


def _answer(value: Any, key: str, dropped: list | None) -> str | list[dict]:
    """A preference answer: text, one turn ({from, value} or {role, content}), or turns."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError(f"field '{key}' is empty")
        return value
    if isinstance(value, dict):
        text = flatten_content(value.get("content", value.get("value")), key)
        if not text.strip():
            raise RowError(f"field '{key}' is empty")
        return text
    if isinstance(value, list):
        return _messages(value, key, need_last_assistant=True, dropped=dropped, need_user=False)
    raise RowError(f"missing field '{key}'" if value is None else f"field '{key}' must be text or turns")


def _preference(row: dict, dropped: list | None) -> dict:
    """Every common preference layout as {prompt, chosen, rejected}: a prompt string or turns
    (from `prompt`, `messages`, sharegpt `conversations`, or Orca's `system` + `question`);
    answers as text or turns; TRL's implicit prompt (chosen and rejected as whole conversations
    sharing their first turns) split at the first turn where they differ."""
    chosen_src = row.get("chosen", row.get("chosen_messages"))
    rejected_src = row.get("rejected", row.get("rejected_messages"))
    prompt: Any = None
    used = {"chosen", "rejected", "chosen_messages", "rejected_messages"}
    if row.get("prompt") is not None:
        prompt, _ = row["prompt"], used.add("prompt")
    elif row.get("messages") is not None:
        prompt, _ = row["messages"], used.add("messages")
    elif row.get("conversations") is not None:
        prompt = sharegpt_to_messages({"conversations": row["conversations"]}, need_last_assistant=False)["messages"]
        used.add("conversations")
    elif row.get("question") is not None or row.get("instruction") is not None:
        q = row.get("question", row.get("instruction"))
        if not isinstance(q, str) or not q.strip():
            raise RowError("field 'question' must be a non-empty string")
        q = q + (("\n\n" + row["input"]) if isinstance(row.get("input"), str) and row["input"] else "")
        prompt = ([{"role": "system", "content": row["system"]}] if row.get("system") else []) + [
            {"role": "user", "content": q}]
        used |= {"question", "instruction", "input", "system"}
    elif isinstance(chosen_src, list) and isinstance(rejected_src, list):  # the prompt is their shared start
        n = 0
        while n < min(len(chosen_src), len(rejected_src)) - 1 and chosen_src[n] == rejected_src[n]:
            n += 1
        prompt, chosen_src, rejected_src = chosen_src[:n], chosen_src[n:], rejected_src[n:]
        if not prompt:
            raise RowError("'chosen' and 'rejected' share no prompt turns and there is no 'prompt'")
    if isinstance(prompt, list):
        prompt = _messages(prompt, "prompt", need_last_assistant=False, dropped=dropped)
    elif not isinstance(prompt, str) or not prompt.strip():
        raise RowError("field 'prompt' must be a non-empty string or a list of turns")
    out = {"prompt": prompt, "chosen": _answer(chosen_src, "chosen", dropped),
           "rejected": _answer(rejected_src, "rejected", dropped)}
    if out["chosen"] == out["rejected"]:
        raise RowError("'chosen' and 'rejected' are identical: no preference to learn")
    if dropped is not None:
        dropped += [k for k in row if k not in used]
    return out


def validate(row: Any, fmt: str, dropped: list | None = None) -> dict:
    """The row, normalised for `fmt` (content parts flattened, a preference layout made
    {prompt, chosen, rejected}); RowError naming the field when it does not fit. Fields the
    normalised row does not carry are added by name to `dropped`."""
    if not isinstance(row, dict):
        raise RowError(f"a row must be a JSON object, not {type(row).__name__}")
    if fmt == "alpaca":
        _text(row, "instruction"), _text(row, "output")
        if row.get("input") is not None and not isinstance(row["input"], str):
            raise RowError("field 'input' must be a string")
        return row
    if fmt == "sharegpt":
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
        if row.get("tools") is not None:
            _tools(row["tools"])
        return row
    if fmt == "messages":
        out = {**row, "messages": _messages(row.get("messages"), "messages", dropped=dropped)}
        if row.get("tools") is not None:
            out["tools"] = _tools(row["tools"])
        return out
    if fmt == "completion":
        _text(row, "text")
        return row
    if fmt == "preference":
        return _preference(row, dropped)
    raise ValueError(f"unknown format {fmt!r}")


# ---- conversions: each returns the converted row or raises RowError (lossy for this row)

CARRIED = {  # the top-level fields a conversion out of each format reads; the rest has no place
    "alpaca": {"instruction", "input", "output", "system"},
    "sharegpt": {"conversations", "system", "tools"},
    "messages": {"messages", "tools", "rejected"},
    "completion": {"text"},
    "preference": set(),  # _preference reports its own
}


def not_carried(row: dict, src: str) -> list[str]:
    """Fields of a `src` row that converting it to another format leaves behind, by name."""
    return [k for k in row if k not in CARRIED[src]] if src != "preference" else []


def alpaca_to_messages(row: dict) -> dict:
    user = row["instruction"] + (("\n\n" + row["input"]) if row.get("input") else "")
    msgs = ([{"role": "system", "content": row["system"]}] if row.get("system") else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    return {"messages": msgs}


def messages_to_alpaca(row: dict) -> dict:
    msgs = row["messages"]
    if row.get("tools") or any(m.get("tool_calls") or m["role"] == "tool" for m in msgs):
        raise RowError("alpaca has no place for tool calls, tool results or tool schemas (lossy)")
    system = [m for m in msgs if m["role"] == "system"]
    rest = [m for m in msgs if m["role"] != "system"]
    if len(rest) != 2 or [m["role"] for m in rest] != ["user", "assistant"] or len(system) > 1:
        raise RowError("alpaca holds one user/assistant exchange; this conversation has more turns (lossy)")
    out = {"instruction": rest[0]["content"], "input": "", "output": rest[1]["content"]}
    if system:
        out["system"] = system[0]["content"]
    return out


def sharegpt_to_messages(row: dict, need_last_assistant: bool = True) -> dict:
    """LLaMA-Factory's tool rows too: a `function_call` turn ({"name", "arguments"} as JSON)
    becomes an assistant turn with an OpenAI tool call, `observation` a tool turn, and the
    row's `tools` (a JSON string there) the list of schemas."""
    import json

    msgs = []
    for i, t in enumerate(row["conversations"]):
        if t.get("from") == "function_call":
            try:
                call = json.loads(t["value"])
            except (json.JSONDecodeError, TypeError):
                raise RowError(f"conversations[{i}] (function_call) is not a JSON {{name, arguments}}") from None
            calls = call if isinstance(call, list) else [call]
            msgs.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": c.get("name"), "arguments": c.get("arguments", {})}}
                for c in calls]})
        else:
            msgs.append({"role": SHAREGPT_ROLES.get(t.get("from"), t.get("from")), "content": t.get("value")})
    out = {"messages": msgs}
    if row.get("system"):
        out["messages"] = [{"role": "system", "content": row["system"]}] + msgs
    if row.get("tools") is not None:
        out["tools"] = _tools(row["tools"])
    return out


def messages_to_sharegpt(row: dict) -> dict:
    import json

    back = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}
    conv = []
    for m in row["messages"]:
        for call in m.get("tool_calls") or []:
            conv.append({"from": "function_call", "value": json.dumps(
                {"name": call["function"]["name"], "arguments": call["function"].get("arguments", {})},
                ensure_ascii=False)})
        if m.get("content") or not m.get("tool_calls"):
            conv.append({"from": back[m["role"]], "value": m["content"]})
    out = {"conversations": conv}
    if row.get("tools") is not None:
        out["tools"] = json.dumps(row["tools"], ensure_ascii=False)
    return out


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
