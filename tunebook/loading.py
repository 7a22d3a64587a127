"""Load what a run produced, with plain transformers + peft, for merge, chat and eval."""

from __future__ import annotations

from pathlib import Path

import yaml

from tunebook.runs import RunDir


def run_config(run: RunDir) -> dict:
    return yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8"))


def load_tokenizer(run: RunDir):
    from transformers import AutoTokenizer

    cfg = run_config(run)
    source = run.output if (run.output / "tokenizer_config.json").exists() else cfg["base_model"]
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(cfg.get("trust_remote_code")))
    template = cfg.get("chat_template")
    if template and template != "tokenizer_default":
        from tunebook.engines.unsloth import axolotl_template

        text = axolotl_template(str(template))
        if text:
            tok.chat_template = text
    return tok


def load_model(run: RunDir, merged: bool = False):
    """The trained model in fp32: full output as is; an adapter on the full-precision base.

    QLoRA adapters are applied to the full-precision base too: that is what `merge` bakes
    them into, and bitsandbytes 4-bit inference on CPU would only add quantization error.
    """
    import torch
    from transformers import AutoModelForCausalLM

    cfg = run_config(run)
    trc = bool(cfg.get("trust_remote_code"))
    merged_dir = run.path / "merged"
    if merged and (merged_dir / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, trust_remote_code=trc)
    if (run.output / "adapter_config.json").exists():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(cfg["base_model"], dtype=torch.float32, trust_remote_code=trc)
        return PeftModel.from_pretrained(base, run.output)
    return AutoModelForCausalLM.from_pretrained(run.output, dtype=torch.float32, trust_remote_code=trc)


def base_path(run: RunDir) -> Path:
    return Path(run_config(run)["base_model"])
