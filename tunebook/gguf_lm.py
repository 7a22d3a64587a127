"""lm-eval's model interface over an exported GGUF run by llama.cpp in this process.

Why not lm-eval's own `gguf` model: it talks to a server and, as of lm-eval 0.4.11, has no
`loglikelihood_rolling` (nba_ppl), no chat template (every NBA task is asked as a chat), and
no `max_gen_toks` (the llama-cpp-python server then stops answers at 16 tokens). This class is
lm-eval's TemplateLM with the run's HF tokenizer and chat template, so the GGUF answers the
exact token ids HFLM gives the HF model, and its scores differ only by what export changed.
"""

from __future__ import annotations

from pathlib import Path

from lm_eval import utils
from lm_eval.api.model import TemplateLM
from tqdm import tqdm

from tunebook import gguf_runtime as rt


class GGUFLM(TemplateLM):
    def __init__(self, path: Path, tokenizer, max_length: int = 1024):
        super().__init__()
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.llm = rt.open_gguf(self.path, n_ctx=max_length)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        # as HFLM: rolling perplexity conditions the first token on BOS (SmolLM2: <|im_start|>)
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name_or_path).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # as HFLM encodes for a causal model: no BOS unless asked (the chat template writes its own)
        return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        out = []
        for _key, context, continuation in tqdm(requests, disable=disable_tqdm, desc="gguf loglikelihood"):
            ids = (list(context) + list(continuation))[-(self.max_length):]
            n = len(continuation)
            lp, argmax = rt.logprobs(self.llm, ids)
            out.append((float(lp[-n:].sum()), bool((argmax[-n:] == ids[-n:]).all())))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        scores = []
        for (string,) in tqdm([r.args for r in requests], disable=disable_tqdm, desc="gguf rolling"):
            windows = map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1))
            scores.append(sum(ll for ll, _ in self._loglikelihood_tokens([(None, c, t) for c, t in windows],
                                                                          disable_tqdm=True)))
        return scores

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        stop_ids = {self.eot_token_id}
        out = []
        for context, gen_kwargs in tqdm([r.args for r in requests], disable=disable_tqdm, desc="gguf generate"):
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_gen_toks", 256))
            ids = self.tok_encode(context)[-(self.max_length - max_new):]
            stops = [u for u in until if u]

            def done(toks, stops=stops):
                return any(u in self.tokenizer.decode(toks, skip_special_tokens=True) for u in stops)

            text = self.tokenizer.decode(rt.greedy(self.llm, ids, max_new, stop_ids, done), skip_special_tokens=True)
            for stop in until:  # as HFLM: cut at the first stop sequence
                if stop and stop in text:
                    text = text.split(stop)[0]
            out.append(text)
        return out
