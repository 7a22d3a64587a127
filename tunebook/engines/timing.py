"""Time to the first optimizer step, the tokens really processed and the precision used,
measured inside the engine process (both workers share it).

Both engines train through transformers' Trainer; wrapping `Trainer.training_step` once in
the worker (our own process) catches every step whatever subclass the engine builds, and
sees each batch exactly as the model gets it, padding and packing included.
"""

from __future__ import annotations

import os
import time

FIRST_STEP: dict[str, float] = {}
TOKENS = {"real": 0, "slots": 0}
STEPS = {"n": 0}
WATCH: dict = {}
TRIM: dict = {}  # the memory trimmer (engines/heap_trim.py), for the metrics
NONFINITE: dict = {}  # the first optimizer step whose loss was NaN or inf, and the value
OPTIMIZER: dict = {}  # the optimizer the trainer built, as seen at its first step
CHECKPOINTING: dict = {}  # whether the model recomputed its forward in the backward, ditto


def real_tokens(inputs, pad_token_id: int | None = None) -> tuple[int, int]:
    """(real tokens, token slots) of one batch.

    Padded batches carry an attention mask (0 = padding). Packed batches drop it (Axolotl's
    block-diagonal path reads rows off `position_ids` restarting at 0), and Axolotl pads a
    packed row with one more such segment, 0, 1, 2, ... of pad tokens: a row's last segment
    made only of pad tokens is padding. (A real row never is: it opens with a chat marker.)
    """
    ids = inputs.get("input_ids")
    if ids is None:
        return 0, 0
    slots = int(ids.numel())
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        return int((mask != 0).sum()), slots
    pos = inputs.get("position_ids")
    if pos is None or pos.dim() != 2 or pad_token_id is None:
        return slots, slots
    real = 0
    for row_ids, row_pos in zip(ids, pos.expand_as(ids)):
        starts = (row_pos == 0).nonzero().flatten()
        last = int(starts[-1]) if starts.numel() else 0
        real += last if last > 0 and bool((row_ids[last:] == pad_token_id).all()) else row_ids.numel()
    return real, slots


PROFILE_ENV = "TUNEBOOK_PROFILE"  # "<first step>:<last step>:<output .json>", set by `tunebook profile`
SHAPES_ENV = "TUNEBOOK_PROFILE_SHAPES"  # set: ops split by input shapes (`make profile SHAPES=1`)


def install() -> None:
    import os

    import transformers

    original = transformers.Trainer.training_step
    if getattr(original, "_tunebook_timed", False):
        return
    from tunebook.engines.heap_trim import Trimmer

    profiler = _StepProfiler(os.environ[PROFILE_ENV]) if os.environ.get(PROFILE_ENV) else None
    TRIM["trimmer"] = Trimmer()
    cores = int(os.environ.get("OMP_NUM_THREADS") or 0)
    if cores >= 2 and os.environ.get("TUNEBOOK_ADAPTIVE_THREADS", "1") != "0":
        from tunebook.engines.threads import Watcher

        WATCH["watcher"] = Watcher(cores)

    def training_step(self, model, inputs, *args, **kwargs):
        FIRST_STEP.setdefault("start", time.time())
        if not OPTIMIZER:
            OPTIMIZER.update(optimizer_in_use(self))
        if "on" not in CHECKPOINTING:  # once: it walks every module
            CHECKPOINTING["on"] = checkpointing_in_use(model)
        tok = getattr(self, "processing_class", None)
        real, slots = real_tokens(inputs, getattr(tok, "pad_token_id", None))
        TOKENS["real"] += real
        TOKENS["slots"] += slots
        if profiler:
            profiler.before(real)
        out = original(self, model, inputs, *args, **kwargs)
        if profiler:
            profiler.after()
        FIRST_STEP.setdefault("at", time.time())
        STEPS["n"] += 1
        TRIM["trimmer"].after_step(STEPS["n"])
        _watchdog(self, out)
        if "watcher" in WATCH:
            WATCH["watcher"].step(STEPS["n"])
        return out

    training_step._tunebook_timed = True
    transformers.Trainer.training_step = training_step
    _log_tokens_per_second(transformers.Trainer)
    _progress_bar_not_dicts()


LOGGED: dict = {}


def _log_tokens_per_second(trainer_cls) -> None:
    """Each logged step gets `tokens_per_second` (real tokens since the last log / wall time),
    so every tracker the engine reports to (TensorBoard, MLflow) and run.json's log history
    have it beside the loss. Per rank under several processes."""
    original = trainer_cls.log

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and "start" in FIRST_STEP:
            now = time.time()
            since, tokens = LOGGED.get("at", FIRST_STEP["start"]), TOKENS["real"] - LOGGED.get("tokens", 0)
            if now > since and tokens > 0:
                logs["tokens_per_second"] = round(tokens / (now - since), 1)
            LOGGED.update(at=now, tokens=TOKENS["real"])
        return original(self, logs, *args, **kwargs)

    trainer_cls.log = log


def _progress_bar_not_dicts() -> None:
    """The terminal shows one progress bar with loss, tokens/s and the ETA, not one printed
    dict per step: transformers' progress callback writes each logged dict under the bar; here
    it goes to logs/engine.log (TUNEBOOK_ENGINE_LOG, set by tunebook) and the bar's postfix
    shows what a person follows. Without the variable (an engine run by hand) nothing changes."""
    import json
    import os

    from transformers.trainer_callback import ProgressCallback

    log_path = os.environ.get("TUNEBOOK_ENGINE_LOG")
    if not log_path or getattr(ProgressCallback.on_log, "_tunebook", False):
        return

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar is not None and logs):
            return
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")
        shown = [f"{label} {logs[key]:{fmt}}" for key, label, fmt in
                 (("loss", "loss", ".4g"), ("eval_loss", "eval loss", ".4g"), ("tokens_per_second", "tok/s", ".0f"))
                 if isinstance(logs.get(key), (int, float))]
        if shown:
            self.training_bar.set_postfix_str(" · ".join(shown), refresh=False)

    begin = ProgressCallback.on_train_begin

    def on_train_begin(self, args, state, control, **kwargs):
        # tqdm redraws at most every 0.1 s and skips the steps in between; `make bench-engines`
        # and `bench-levers` time tunebook's runs by each step's redraw, so every step is drawn
        # (a redraw per step costs nothing beside a step)
        begin(self, args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.mininterval, self.training_bar.miniters = 0, 1

    on_log._tunebook = True
    ProgressCallback.on_log = on_log
    ProgressCallback.on_train_begin = on_train_begin


def _watchdog(trainer, loss) -> None:
    """Stop at the first non-finite loss: every later step would only train on NaN, and a run
    that ends with loss NaN must read as failed, not finished (train.launch marks it)."""
    import math

    value = float(loss.detach().float().item()) if hasattr(loss, "detach") else float(loss)
    if not math.isfinite(value) and not NONFINITE:
        NONFINITE.update(step=trainer.state.global_step + 1, loss=str(value))
        trainer.control.should_training_stop = True


def thread_use() -> dict:
    """Threads the run started with and every change the neighbour watcher made (`threads`)."""
    w = WATCH.get("watcher")
    if w is None:
        return {"adaptive": False}
    return {"adaptive": True, "cores": w.policy.cores, "final": w.policy.threads, "changes": w.policy.changes}


def time_to_first_step(since: float) -> float | None:
    """Seconds from `since` (the worker's start) to the end of the first training step."""
    return round(FIRST_STEP["at"] - since, 2) if "at" in FIRST_STEP else None


def token_counts() -> dict:
    """Real tokens, slots, and packing efficiency (real / slots) over every step so far."""
    real, slots = TOKENS["real"], TOKENS["slots"]
    return {"tokens_real": real, "tokens_slots": slots,
            "packing_efficiency": round(real / slots, 4) if slots else None}


def optimizer_in_use(trainer) -> dict:
    """The optimizer the trainer really built, not the name asked for: an engine may swap it
    (Unsloth's CPU backend turns `adamw_torch` into the fused kernel), and on a CPU the
    for-loop AdamW cost a full fine-tuning step 1.30x over the fused one."""
    opt = getattr(trainer, "optimizer", None)
    opt = getattr(opt, "optimizer", opt)  # accelerate wraps it
    if opt is None:
        return {}
    defaults = getattr(opt, "defaults", {}) or {}
    asked = getattr(getattr(trainer, "args", None), "optim", None)
    return {"name": type(opt).__name__, "asked": str(getattr(asked, "value", asked)) if asked else None,
            "fused": bool(defaults.get("fused")), "foreach": defaults.get("foreach")}


def checkpointing_in_use(model) -> bool:
    """Whether any module recomputes its forward in the backward (transformers and Unsloth
    both flag the layers they wrap): an engine's default can turn it on behind the recipe's
    back, as TRL's SFTConfig did for the Unsloth engine, costing 1.5x the matmuls of a step."""
    return any(bool(getattr(m, "gradient_checkpointing", False)) for m in model.modules())


def precision(args, model) -> dict:
    """What the matmuls really ran in (the trainer's autocast dtype if any, else the weights'),
    and what the optimizer updates (`master_dtype`): bf16 there would lose small updates."""
    import torch

    weights = str(getattr(model, "dtype", "")).replace("torch.", "")
    trained = {str(p.dtype).replace("torch.", "") for p in model.parameters() if p.requires_grad}
    autocast = "bfloat16" if args.bf16 else "float16" if args.fp16 else None
    on_cpu = args.use_cpu or not torch.cuda.is_available()
    return {"compute_dtype": autocast or weights, "autocast": autocast, "weights_dtype": weights,
            "master_dtype": "+".join(sorted(trained)) or None, "device": "cpu" if on_cpu else "cuda"}


class _StepProfiler:
    """torch.profiler from the start of step `first` to the end of step `last` of the engine's
    own loop: forward, backward and the optimizer steps between them, whatever the engine.

    Writes each op's self CPU time, so the steps' time splits without double counting."""

    def __init__(self, spec: str):
        first, last, out = spec.split(":", 2)
        self.first, self.last, self.out = int(first), int(last), out
        self.shapes = bool(os.environ.get(SHAPES_ENV))
        self.step, self.prof, self.tokens, self.t0 = 0, None, 0, 0.0

    def before(self, real: int) -> None:
        import torch

        self.step += 1
        if self.step == self.first:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                               record_shapes=self.shapes)
            self.prof.__enter__()
            self.t0 = time.time()
        if self.prof is not None:
            self.tokens += real

    def after(self) -> None:
        if self.prof is None or self.step != self.last:
            return
        import json

        wall = time.time() - self.t0
        self.prof.__exit__(None, None, None)
        ops = [{"name": e.key + (f" {e.input_shapes}" if self.shapes else ""),
                "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count}
               for e in self.prof.key_averages(group_by_input_shape=self.shapes) if e.self_cpu_time_total > 0]
        ops.sort(key=lambda o: -o["self_cpu_s"])
        with open(self.out, "w", encoding="utf-8") as f:
            json.dump({"steps": self.last - self.first + 1, "wall_s": round(wall, 3), "tokens": self.tokens,
                       "ops": ops}, f)
        self.prof = None
