"""Where a training step's time goes: a few steps of a real run under torch.profiler, the
ops' self CPU time folded into the few kinds a user can act on (matmuls, 4-bit
dequantisation, attention, loss, optimizer, the rest).

The engine is launched exactly as `make train` launches it (same resolution, same engine
process); only the worker's step wrapper (`engines.timing`) turns the profiler on, so what
is profiled is what trains.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunebook.engines.timing import PROFILE_ENV, SHAPES_ENV
from tunebook.paths import PATHS

# First match wins; names are torch/bitsandbytes op names as the profiler reports them.
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("4-bit dequantise", ("bitsandbytes", "dequantize", "quantize_4bit", "gemv_4bit")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "attention")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss", "logsumexp")),
    ("optimizer", ("adam", "optimizer", "_foreach", "zero_")),
    ("dtype casts / copies", ("aten::copy_", "aten::to", "aten::_to_copy", "aten::clone", "aten::contiguous")),
]


@dataclass(frozen=True)
class StepProfile:
    recipe: str
    engine: str
    steps: int
    wall_s: float
    tokens: int
    kinds: dict[str, float]  # kind -> share of the profiled ops' self CPU time
    top: list[dict]  # the heaviest ops

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


def kind_of(op: str) -> str:
    low = op.lower()
    for kind, needles in KINDS:
        if any(n.lower() in low for n in needles):
            return kind
    return "other"


def fold(ops: list[dict]) -> dict[str, float]:
    """Share of self CPU time per kind (sums to 1)."""
    total = sum(o["self_cpu_s"] for o in ops) or 1.0
    out: dict[str, float] = {}
    for o in ops:
        k = kind_of(o["name"])
        out[k] = out.get(k, 0.0) + o["self_cpu_s"] / total
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile(recipe: str | Path, args: str = "", engine: str | None = None, first: int = 3, last: int = 6,
            runs_root: Path = PATHS.profile_runs, shapes: bool = False) -> StepProfile:
    """Profile steps first..last (the first steps pay one-time costs: warm-up, allocator).
    `shapes` splits each op by its input shapes: how many matmuls of which size a step ran is
    what showed the Unsloth engine recomputing its forward (gradient checkpointing left on)."""
    from tunebook.train import train

    out = Path(tempfile.mkdtemp(prefix="tunebook-profile-")) / "profile.json"
    extra = f"max_steps={last} save_strategy=no save_steps=null"
    os.environ[PROFILE_ENV] = f"{first}:{last}:{out}"
    if shapes:
        os.environ[SHAPES_ENV] = "1"
    try:
        run = train(recipe, f"{args} {extra}".strip(), engine=engine, runs_root=runs_root, echo=False)
    finally:
        os.environ.pop(PROFILE_ENV, None)
        os.environ.pop(SHAPES_ENV, None)
    raw = json.loads(out.read_text(encoding="utf-8"))
    rec = run.read_record()
    return StepProfile(recipe=str(recipe), engine=rec.engine, steps=raw["steps"], wall_s=raw["wall_s"],
                       tokens=raw["tokens"], kinds=fold(raw["ops"]), top=raw["ops"][:12])


def table(p: StepProfile) -> str:
    lines = [f"{p.recipe} via {p.engine}: {p.steps} steps, {p.wall_s:.1f} s, {p.tokens_per_s:.0f} real tokens/s "
             "(profiler on: slower than a real run)", "", "| where the time goes | share |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.0%} |" for k, v in p.kinds.items()]
    lines += ["", "| heaviest ops | self s | calls |", "| --- | ---: | ---: |"]
    lines += [f"| {o['name']} | {o['self_cpu_s']:.2f} | {o['calls']} |" for o in p.top]
    return "\n".join(lines)
