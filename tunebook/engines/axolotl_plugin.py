"""tunebook's Axolotl plugin: what Axolotl needs to train at the CPU's speed.

Added to `plugins:` by `adapt` on machines without CUDA (and recorded as an adaptation), so
a recipe file never names it and still runs under plain `axolotl train`. It goes through
Axolotl's own hooks rather than around them:

- `get_training_args`: `use_cpu=True`. transformers refuses `bf16=True` without a GPU
  unless told the run is on the CPU; with it, Accelerate runs the step under CPU bf16
  autocast, which on AMX / AVX512-BF16 CPUs is 2-2.5x the fp32 matmul rate. `adapt` only
  turns bf16 on where the CPU has it in hardware.
- `post_model_load`: fp32 master weights for full fine-tuning under bf16 (Axolotl loads the
  model in bf16 and would train the bf16 copy itself: an Adam step at lr 2e-5 is below
  bf16's 2^-8 relative resolution for most weights, so most updates would be lost; the
  matmuls still run in bf16 under autocast). Then logits only at trained positions
  (`labelled_logits`).
"""

from __future__ import annotations

from axolotl.integrations.base import BasePlugin


class CPUPlugin(BasePlugin):
    def get_training_args(self, cfg):
        import torch

        return None if torch.cuda.is_available() else {"use_cpu": True}

    def post_model_load(self, cfg, model):
        import os

        import torch

        if not cfg.adapter and not torch.cuda.is_available() and any(
                p.dtype == torch.bfloat16 for p in model.parameters() if p.requires_grad):
            model.float()

        # preference trainers compute their own log-probs from full logits;
        # TUNEBOOK_LABELLED_LOGITS=0 turns it off to measure what it is worth.
        if cfg.rl or os.environ.get("TUNEBOOK_LABELLED_LOGITS") == "0":
            return
        from tunebook.engines import labelled_logits

        labelled_logits.install(model)
