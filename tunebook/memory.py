"""Peak-memory estimate of a recipe: weights, adapter, gradients, optimizer, activations.

Rough on purpose: every row counts at `sequence_len` and logits at every position, so a
padded batch (usually far shorter than sequence_len) is overestimated, up to 4x for the
smollm2 QLoRA recipe; packed rows are near it (smollm2-full on a CPU: 4585 estimated, 4860
MiB measured). Enough to pick hardware before a run; every run prints it beside its peak RSS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tunebook.model_specs import ModelSpec, spec_for

GIB = 2**30
CPU_RUNTIME_BYTES = 1.0 * GIB  # torch + transformers + engine imports, measured ~0.9-1.0 GiB RSS here


@dataclass
class Estimate:
    params: int
    trainable: int
    weights: float
    adapter: float
    gradients: float
    optimizer: float
    activations: float
    runtime: float

    @property
    def total(self) -> float:
        return self.weights + self.adapter + self.gradients + self.optimizer + self.activations + self.runtime

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def lora_params(spec: ModelSpec, r: int, targets: list[str]) -> int:
    shapes = spec.linear_shapes()
    return spec.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


def estimate(config: dict, on_gpu: bool | None = None) -> Estimate | None:
    """Estimate for `config` as it would run: 2-byte weights under bf16/fp16 (GPUs, and CPUs
    with bf16 hardware once adapted), else fp32; `on_gpu` (default: guessed from the
    precision, for planning a GPU recipe) adds the CPU runtime's ~1 GiB when False."""
    spec = spec_for(str(config.get("base_model", "")))
    if spec is None:
        return None
    if on_gpu is None:
        on_gpu = config.get("bf16") in (True, "auto") or bool(config.get("fp16"))
    weight_bytes = 2 if config.get("bf16") in (True, "auto") or bool(config.get("fp16")) else 4
    adapter = config.get("adapter")
    four_bit = bool(config.get("load_in_4bit"))
    linear_bytes = 0.5 + 0.03 if four_bit else weight_bytes  # NF4 + double-quantized scales
    weights = spec.linear_params * linear_bytes + (spec.params - spec.linear_params) * weight_bytes
    if adapter not in ("lora", "qlora") and not on_gpu and weight_bytes == 2:
        # a CPU run keeps fp32 master weights under bf16 autocast (the Axolotl plugin upcasts
        # what it loaded in bf16), and autocast holds a bf16 copy of each linear weight per step
        weights = spec.params * 4 + spec.linear_params * 2
    if adapter in ("lora", "qlora"):
        targets = list(spec.linear_shapes()) if config.get("lora_target_linear") else list(
            config.get("lora_target_modules") or ["q_proj", "v_proj"])
        trainable = lora_params(spec, int(config.get("lora_r") or 8), targets)
        if config.get("peft_use_dora"):
            trainable += spec.layers * sum(spec.linear_shapes()[t][1] for t in targets if t in spec.linear_shapes())
        adapter_bytes = trainable * 4.0
    else:
        trainable, adapter_bytes = spec.params, 0.0
    grad_bytes = trainable * (4 if adapter or not on_gpu else weight_bytes)
    opt = str(config.get("optimizer") or "adamw_torch")
    opt_bytes = trainable * (2 if "8bit" in opt else 8)
    if config.get("rl") == "dpo" and not adapter:
        weights *= 2  # a frozen reference copy
    b = int(config.get("micro_batch_size") or 1)
    s = int(config.get("sequence_len") or 2048)
    act_bytes = 2 if on_gpu else 4
    per_layer = 17 * b * s * spec.hidden * act_bytes  # ~34 bytes/elem in bf16 (Korthikanti et al.), no attn scores
    if config.get("gradient_checkpointing"):
        activations = spec.layers * b * s * spec.hidden * act_bytes + per_layer
    else:
        activations = spec.layers * per_layer
    if config.get("attn_implementation") == "eager":
        # eager keeps each layer's attention probabilities for the backward: fp32 out of the
        # softmax, bf16/fp32 into the matmul with V (sdpa's flash kernels keep none)
        activations += spec.layers * b * spec.heads * s * s * (4 + act_bytes)
    activations += 2 * b * s * spec.vocab * 4  # fp32 logits and their gradient
    if config.get("rl") == "dpo":
        activations *= 2  # chosen and rejected
    return Estimate(
        params=spec.params, trainable=trainable, weights=weights, adapter=adapter_bytes,
        gradients=grad_bytes, optimizer=opt_bytes, activations=activations,
        runtime=0.0 if on_gpu else CPU_RUNTIME_BYTES,
    )


def fmt_gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"
