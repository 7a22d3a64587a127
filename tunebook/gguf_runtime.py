"""A GGUF file run by llama.cpp (llama-cpp-python), fed the same token ids as the HF model.

Export parity and `make eval EXPORT=...` compare two runtimes, not two tokenizers: every
text is tokenized once with the run's HF tokenizer (and its chat template), and both models
score or continue exactly those ids. Whether the GGUF's own tokenizer agrees is a separate,
recorded check (`tokenizer_agrees`), since that is what `make serve` will use.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def threads() -> int:
    """All usable cores: llama-cpp-python's default is half of them (1 on this 2-core machine)."""
    return max(1, len(os.sched_getaffinity(0)))


def smoke(path: Path, log: Path) -> None:
    """Load the file, tokenize a chat and run a few tokens in a child process first: llama.cpp
    aborts the whole process on some bad files (a mis-typed vocab ends in std::out_of_range),
    and that must be an error with a log, not a vanished export."""
    import subprocess
    import sys

    from tunebook.errors import Problem, TunebookError

    code = ("import sys; from tunebook import gguf_runtime as rt; llm = rt.open_gguf(sys.argv[1], 256); "
            "ids = llm.tokenize(b'<|im_start|>user\\nWho won?<|im_end|>', add_bos=False, special=True); "
            "rt.logprobs(llm, ids)")
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ smoke test of {path}\n")
        f.flush()
        done = subprocess.run([sys.executable, "-c", code, str(path)], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = Path(log).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise TunebookError([Problem(str(path), "", f"llama.cpp could not run this file (exit {done.returncode}): "
                                     + " | ".join(tail))], exit_code=1, hint=f"the whole output is in {log}")


def open_gguf(path: Path, n_ctx: int = 1024):
    """logits_all: the log-probabilities of every position are the point (perplexity, lm-eval)."""
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                 n_threads=threads(), n_threads_batch=threads())


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def logprobs(llm, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(log p(ids[i] | ids[:i]), argmax at i-1) for i >= 1, one forward pass. The KV cache of a shared prefix
    with the previous call is kept (lm-eval asks many continuations of one context)."""
    ids = list(ids)
    keep = 0
    for a, b in zip(llm.input_ids[: llm.n_tokens], ids[:-1]):
        if a != b:
            break
        keep += 1
    llm.n_tokens = keep  # eval() drops the cache past n_tokens; rows before it stay in scores
    llm.eval(ids[keep:])
    logits = np.asarray(llm.scores[: len(ids) - 1])
    lp = _log_softmax(logits)
    return lp[np.arange(len(ids) - 1), ids[1:]], logits.argmax(axis=-1)


def greedy(llm, ids: list[int], max_new: int, stop_ids: set[int], done=None) -> list[int]:
    """Argmax decoding, the same rule as HF's do_sample=False: the two outputs differ only
    where the models' logits do."""
    llm.n_tokens = 0
    llm.eval(list(ids))
    out: list[int] = []
    for _ in range(max_new):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if nxt in stop_ids:
            break
        out.append(nxt)
        if done is not None and done(out):  # a stop sequence (lm-eval's `until`) is complete
            break
        llm.eval([nxt])
    return out


def tokenizer_agrees(llm, tok, text: str) -> bool:
    """The GGUF's embedded tokenizer gives the HF tokenizer's ids for a rendered chat."""
    ours = tok(text, add_special_tokens=False)["input_ids"]
    theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    return list(ours) == list(theirs)
