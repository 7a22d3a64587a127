"""Load what a run produced, with plain transformers + peft: one policy for eval, chat, merge,
the learning curve and the data commands.

The policy, stated once (POLICY) and printed by each command: an adapter is applied to the
base it was trained on. A LoRA adapter goes on the fp32 base; a QLoRA adapter on the 4-bit
NF4 base (double quantization), because that base is what its weights were fitted to, so
`make eval` and `make chat` talk to the same model. `make merge` is the one exception it
must be: 4-bit weights cannot hold a merged delta, so it bakes the adapter into the fp32
base and records how far that model is from the 4-bit one (`merge.json`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunebook.runs import RunDir

POLICY = ("an adapter runs on the base it was trained on: LoRA on the fp32 base, QLoRA on the 4-bit NF4 base; "
          "make merge bakes either into the fp32 base")


def axolotl_template(name: str) -> str | None:
    """Axolotl's jinja template text for a `chat_template:` name, read without importing Axolotl."""
    spec = importlib.util.find_spec("axolotl")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "chat_templates" / "templates" / f"{name}.jinja"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def chat_template_text(cfg: dict[str, Any]) -> str | None:
    """The chat template a config trains with, as text, when it is not the tokenizer's own."""
    name = cfg.get("chat_template")
    return axolotl_template(str(name)) if name and name != "tokenizer_default" else None


def tokenizer(source: str | Path, cfg: dict[str, Any]):
    """The tokenizer at `source` with the config's chat template: what the engine trained with."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source), trust_remote_code=bool(cfg.get("trust_remote_code")))
    text = chat_template_text(cfg)
    if text:
        tok.chat_template = text
    return tok


def run_config(run: RunDir) -> dict:
    return yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8"))


def skip_modules(cfg: dict[str, Any]) -> list[str]:
    """The linear layers a 4-bit load keeps in 16 bit (`bnb_config_kwargs.llm_int8_skip_modules`,
    Axolotl's key): the few whose NF4 rounding costs the model most. The output head is kept
    16-bit by every 4-bit load here whatever the list says, as transformers does without one."""
    names = (cfg.get("bnb_config_kwargs") or {}).get("llm_int8_skip_modules") or []
    return [n for n in names if n != "lm_head"]


@dataclass(frozen=True)
class Loaded:
    model: Any
    tokenizer: Any
    description: str  # what was loaded, in words, for the command's output and the records


def load(cfg: dict[str, Any], weights: Path, quantized: bool | None = None) -> Loaded:
    """`weights` is a full model folder or an adapter (a run's output or one of its checkpoints).

    quantized=None follows POLICY (the 4-bit base when the config trained in 4-bit);
    False forces the fp32 base (merge); True loads 4-bit NF4 even a folder without an adapter
    (the base a QLoRA adapter runs on, scored alone)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    weights = Path(weights)
    trc = bool(cfg.get("trust_remote_code"))
    adapter = (weights / "adapter_config.json").exists()
    four_bit = (adapter and bool(cfg.get("load_in_4bit"))) if quantized is None else quantized
    kwargs: dict[str, Any] = {"dtype": torch.float32, "trust_remote_code": trc}
    if four_bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=["lm_head", *skip_modules(cfg)])
    base = cfg["base_model"] if adapter else weights
    if adapter and not (weights / "adapter_model.safetensors").is_file():
        from tunebook.errors import Problem, TunebookError

        raise TunebookError([Problem(str(weights), "", "no adapter_model.safetensors: tunebook loads run outputs "
                                     "only as safetensors (a pickle can run code when loaded)")])
    if not adapter:
        kwargs["use_safetensors"] = True  # a run's own weights: never a pickle
    model = AutoModelForCausalLM.from_pretrained(str(base), **kwargs)
    tok = tokenizer(weights if (weights / "tokenizer_config.json").exists() else base, cfg)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, weights)
        what = f"{base} ({'4-bit NF4' if four_bit else 'fp32'}) + adapter {weights}"
    else:
        what = f"full model {weights} ({'4-bit NF4' if four_bit else 'fp32'})"
    model.eval()
    return Loaded(model, tok, what)


def load_run(run: RunDir, quantized: bool | None = None) -> Loaded:
    """A run's trained model under POLICY."""
    return load(run_config(run), run.output, quantized)


def load_base(cfg: dict[str, Any]) -> Loaded:
    return load(cfg, Path(cfg["base_model"]))


def base_path(run: RunDir) -> Path:
    return Path(run_config(run)["base_model"])
