"""An Ollama Modelfile for an exported GGUF: the run's chat template in Ollama's Go-template
form, its system prompt and its stop markers.

The template is not guessed from a family name: the run's own jinja template is rendered on
marker contents, cut into per-role prefixes and suffixes and a generation prompt, and those
pieces become a `range .Messages` template. The pieces are then checked by re-rendering a set
of conversations (with and without a system turn, several turns) and comparing them with the
jinja output character for character. A template the pieces cannot reproduce (Gemma folds the
system prompt into the first user turn, Mistral into the last) is left out and said so:
Ollama then uses the chat template embedded in the GGUF, which it recognises for known families.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROLES = ("system", "user", "assistant")
_MARK = {"system": "\x01SYS\x01", "user": "\x01USR\x01", "assistant": "\x01AST\x01"}
END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>", "<|end|>", "<|endoftext|>")


@dataclass(frozen=True)
class Pieces:
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str
    default_system: str | None  # what the template inserts when a chat has no system turn
    lead: str = ""  # once at the start of every chat (a BOS the tokenizer does not add itself)

    def render(self, messages: list[dict]) -> str:
        """What the Ollama template below renders (Ollama puts SYSTEM first when a chat has none)."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}] + messages
        turns = "".join(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages)
        return self.lead + turns + self.generation


def _render(tok, messages: list[dict], gen: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def _added_bos(tok) -> str | None:
    """The BOS text the tokenizer adds on its own (llama.cpp adds it too, from the GGUF's
    add_bos_token): a template's leading copy of it would be doubled, so it is left out."""
    bos_id = getattr(tok, "bos_token_id", None)
    ids = tok("a")["input_ids"]
    return tok.bos_token if bos_id is not None and ids and ids[0] == bos_id else None


def _strip_bos(text: str, bos: str | None) -> str:
    return text[len(bos):] if bos and text.startswith(bos) else text


def extract(tok) -> Pieces | None:
    """Per-role pieces of the tokenizer's chat template, or None when it is not of that shape.
    A leading BOS the template writes may be the chat's (Llama 3) or the first role marker's
    own text (SmolLM2's BOS is ChatML's `<|im_start|>`): both readings are tried."""
    for lead in dict.fromkeys(["", getattr(tok, "bos_token", None) or ""]):
        pieces = _extract(tok, lead)
        if pieces is not None and not verify(tok, pieces):
            return pieces
    return _extract(tok, "")


def _extract(tok, lead: str) -> Pieces | None:
    s, u, a = _MARK["system"], _MARK["user"], _MARK["assistant"]
    bos = _added_bos(tok)

    def render(msgs, gen):
        text = _strip_bos(_render(tok, msgs, gen), bos)
        if not text.startswith(lead):
            raise ValueError("no lead")
        return text[len(lead):]

    try:
        full = render([{"role": "system", "content": s}, {"role": "user", "content": u},
                       {"role": "assistant", "content": a}, {"role": "user", "content": u}], True)
        no_sys = render([{"role": "user", "content": u}], False)
        sys_only = render([{"role": "system", "content": s}], False)
        one = [{"role": "user", "content": u}]
        generation = render(one, True)[len(no_sys):]
    except Exception:
        return None
    if full.count(s) != 1 or full.count(u) != 2 or full.count(a) != 1 or sys_only.count(s) != 1:
        return None
    p0, rest = full.split(s)
    p1, rest = rest.split(u, 1)
    p2, rest = rest.split(a)
    p3, p4 = rest.split(u)
    sys_suffix = sys_only.split(s)[1]
    if not p1.startswith(sys_suffix):
        return None
    user_prefix = p1[len(sys_suffix):]
    if not p3.endswith(user_prefix):
        return None
    asst_suffix = p3[: len(p3) - len(user_prefix)]
    # p4 = user suffix + generation prompt; p2 = user suffix + assistant prefix
    if not p4.endswith(generation) or not p2.startswith(p4[: len(p4) - len(generation)]):
        return None
    user_suffix = p4[: len(p4) - len(generation)]
    asst_prefix = p2[len(user_suffix):]
    pieces = Pieces({"system": p0, "user": user_prefix, "assistant": asst_prefix},
                    {"system": sys_suffix, "user": user_suffix, "assistant": asst_suffix}, generation, None, lead)
    head = no_sys.split(u)[0]
    if head != user_prefix:  # a default system turn is inserted: recover its text
        if head.startswith(p0) and head.endswith(sys_suffix + user_prefix):
            default = head[len(p0): len(head) - len(sys_suffix + user_prefix)]
            pieces = Pieces(pieces.prefix, pieces.suffix, generation, default, lead)
        else:
            return None
    return pieces


PROBES = [
    [{"role": "user", "content": "Who led the league in assists?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}],
    [{"role": "user", "content": "x\ny"}, {"role": "assistant", "content": "z"}, {"role": "user", "content": "w"}],
]


def verify(tok, pieces: Pieces) -> list[str]:
    """Conversations on which the pieces and the jinja template disagree (empty: they agree)."""
    bos = _added_bos(tok)
    bad = []
    for msgs in PROBES:
        want = _strip_bos(_render(tok, msgs, True), bos)
        if pieces.render(msgs) != want:
            bad.append(json.dumps(msgs)[:80])
    return bad


def _go_literal(text: str) -> str:
    """Literal text as it stands in a Go template; quoted when it holds template delimiters."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if "{{" in text or "}}" in text else text


def go_template(pieces: Pieces) -> str:
    branches = []
    for i, role in enumerate(ROLES):
        kw = "if" if i == 0 else "else if"
        branches.append(f'{{{{ {kw} eq .Role "{role}" }}}}{_go_literal(pieces.prefix[role])}{{{{ .Content }}}}'
                        f"{_go_literal(pieces.suffix[role])}")
    return _go_literal(pieces.lead) + "{{ range .Messages }}" + "".join(branches) + "{{ end }}{{ end }}" + _go_literal(pieces.generation)


def stop_markers(tok) -> list[str]:
    vocab = tok.get_vocab()
    found = [m for m in END_MARKERS if m in vocab]
    eos = getattr(tok, "eos_token", None)
    return list(dict.fromkeys(found + ([eos] if eos else [])))


def training_system_prompt(data: Path | None, rows: int = 200) -> str | None:
    """The system turn the run's data trained with most often (None when it has none)."""
    if data is None or not Path(data).is_file():
        return None
    seen: Counter[str] = Counter()
    with open(data, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= rows:
                break
            try:
                msgs = json.loads(line).get("messages") or []
            except (json.JSONDecodeError, AttributeError):
                continue
            if msgs and isinstance(msgs[0], dict) and msgs[0].get("role") == "system":
                seen[str(msgs[0].get("content"))] += 1
    return seen.most_common(1)[0][0] if seen else None


def _quote(text: str) -> str:
    if '"""' in text:
        raise ValueError('a Modelfile value cannot hold """')
    return f'"""{text}"""'


@dataclass(frozen=True)
class ModelfileInfo:
    text: str
    template: str  # "translated" or why it was left to Ollama
    system: str | None


def build(gguf_name: str, tok, system: str | None) -> ModelfileInfo:
    pieces = extract(tok)
    problems = verify(tok, pieces) if pieces else ["the template is not one per-role prefix/suffix per turn"]
    lines = ["# Ollama Modelfile written by tunebook: `ollama create <name> -f Modelfile` in this folder",
             f"FROM ./{gguf_name}"]
    if not problems:
        lines.append(f"TEMPLATE {_quote(go_template(pieces))}")
        how = "translated"
    else:
        how = "left to Ollama (it reads the GGUF's chat template): " + "; ".join(problems)[:200]
        lines.append("# TEMPLATE: " + how)
    system = system if system is not None else (pieces.default_system if pieces else None)
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    for marker in stop_markers(tok):
        lines.append(f"PARAMETER stop {json.dumps(marker)}")
    lines.append("PARAMETER temperature 0")
    return ModelfileInfo("\n".join(lines) + "\n", how, system)
