"""`make chat`: talk to a trained run with its recipe's chat template, loaded as eval loads it."""

from __future__ import annotations

import os
import sys

from tunebook.loading import load_run
from tunebook.runs import RunDir


class Chat:
    def __init__(self, run: RunDir, system: str | None = None, max_new_tokens: int = 128):
        loaded = load_run(run)  # loading.POLICY: the model `make eval` scores, not another one
        self.model, self.tok, self.description = loaded.model, loaded.tokenizer, loaded.description
        self.system = system
        self.max_new_tokens = max_new_tokens

    def reply(self, history: list[dict]) -> str:
        import torch

        messages = ([{"role": "system", "content": self.system}] if self.system else []) + history
        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
        return self.tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def interactive(chat: Chat) -> None:
    history: list[dict] = []
    print("chat: an empty line or Ctrl-D ends the session", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        history.append({"role": "user", "content": line})
        answer = chat.reply(history)
        history.append({"role": "assistant", "content": answer})
        print(f"model> {answer}")


class ServerChat:
    """The same conversation through an OpenAI-compatible server (`make serve`, or any other),
    with the official `openai` client: what a user's own application would do."""

    def __init__(self, url: str, model: str | None = None, system: str | None = None, max_new_tokens: int = 128):
        from openai import OpenAI

        self.client = OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY") or "not-needed")
        self.model = model or self.client.models.list().data[0].id
        self.system, self.max_new_tokens = system, max_new_tokens
        self.description = f"{self.model} at {url}"

    def reply(self, history: list[dict]) -> str:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + history
        out = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0,
                                                  max_tokens=self.max_new_tokens)
        return (out.choices[0].message.content or "").strip()
