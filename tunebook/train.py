"""`tunebook train`: validate, adapt to this machine, launch the engine, record the run."""

from __future__ import annotations

import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from tunebook import __version__, trackers
from tunebook.adapt import engine_env
from tunebook.engines import get_engine
from tunebook.engines.process import EngineFailed
from tunebook.errors import Problem, TunebookError
from tunebook.launch import Launch
from tunebook.machine import Machine
from tunebook.machine import detect as detect_machine
from tunebook.recipe import content_hash, dump_yaml
from tunebook.records import SCHEMA_VERSION, RunRecord, dump
from tunebook.resolve import Resolved, online_requested, resolve
from tunebook.runs import MARKER, RUNS_ROOT, RunDir, dir_size, git_commit, package_versions


def _loss_curve(log_history: list[dict]) -> list[dict]:
    return [
        {"step": e["step"], "loss": float(e["loss"]), **({"lr": float(e["learning_rate"])} if "learning_rate" in e else {})}
        for e in log_history
        if "loss" in e and "step" in e
    ]


def train(recipe_path: str | Path, args: str | list[str] | None = None, engine: str | None = None,
          runs_root: Path = RUNS_ROOT, echo: bool = True, machine: Machine | None = None,
          resume: str | None = None, launch: Launch | None = None) -> RunDir:
    """`machine` stands in for this one in tests (e.g. a CPU with bf16 hardware). `resume`
    (latest or a run id) continues a run that did not finish instead of starting one."""
    if resume:
        if (args.strip() if isinstance(args, str) else args) or engine:
            raise TunebookError([Problem("RESUME", "", "a resumed run continues exactly as it was launched; "
                                         "ARGS and ENGINE cannot change it")],
                                hint="drop ARGS/ENGINE, or start a new run without RESUME")
        return resume_run(recipe_path, resume, runs_root, echo, machine)
    return start(resolve(recipe_path, args, engine, machine=machine, launch=launch), runs_root, echo)


def start(resolved: Resolved, runs_root: Path = RUNS_ROOT, echo: bool = True) -> RunDir:
    """Run the engine on a resolved config and record what ran."""
    recipe, config, changes, machine = resolved.recipe, dict(resolved.adapted), resolved.changes, resolved.machine
    meta = resolved.meta
    env, env_changes = engine_env(machine, online=online_requested(), nproc=resolved.launch.nproc)

    run = RunDir.create(meta.name, runs_root)
    with run.held():
        config.update({"output_dir": str(run.output)})
        config_path = run.path / "config.yaml"
        config_path.write_text(dump_yaml(config), encoding="utf-8")
        shutil.copyfile(recipe.path, run.path / "recipe.yaml")
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record = RunRecord.model_validate({
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            "run_id": run.path.name,
            "run_dir": str(run.path),
            "recipe": {
                "name": meta.name,
                "path": str(recipe.path),
                "version": meta.version,
                "family": meta.family,
                "method": meta.method,
                "content_hash": recipe.content_hash(),
                "resolved_hash": content_hash(config),
            },
            "engine": meta.engine,
            "overrides": resolved.overrides,
            "adaptations": [c.to_dict() for c in changes + env_changes],
            "notices": [n.to_dict() for n in resolved.notices],
            "data": [{"path": d.path, "rows": d.rows, "trained_tokens": d.trained_tokens, "too_long": d.too_long}
                     for d in resolved.data],
            "seed": config.get("seed"),
            "determinism": determinism(config, machine),
            "git_commit": git_commit(),
            "tunebook_version": __version__,
            "packages": package_versions(),
            "machine": machine.to_dict(),
            "launch": resolved.launch.to_dict(),
            "started_at": now,
            "segments": [{"n": 1, "status": "running", "started_at": now}],
        })
        record = _open_trackers(run, record, config, env)
        run.write_record(record)
        if echo:
            print(f"run directory: {run.path}")
            for d in resolved.data:
                print(f"  data {d.path}: {d.rows} rows" + (f", {d.trained_tokens} trained tokens" if d.trained_tokens else "")
                      + (f"; {d.too_long} longer than sequence_len {config.get('sequence_len')} (the engine drops or "
                         "cuts them)" if d.too_long else ""))
            for c in changes + env_changes:
                print(f"  adapted {c}")
        resolved.say_notices()
        _execute(run, record, config, machine, env, echo, processes=resolved.launch)
    return run


def resume_run(recipe_path: str | Path, which: str, runs_root: Path = RUNS_ROOT, echo: bool = True,
               machine: Machine | None = None) -> RunDir:
    """Continue a killed, interrupted or failed run from its last complete checkpoint, into the
    same run directory, with the config it was launched with (config.yaml), not the recipe
    file as it reads now: a resumed run is the run it was, or the loss curve would be two runs'."""
    import yaml

    from tunebook.recipe import load_recipe
    from tunebook.runs import resumable_run

    recipe = load_recipe(recipe_path)
    run = resumable_run(recipe.meta.name, which, runs_root)
    with run.held():
        record = run.read_record()
        config = yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8"))
        step, checkpoint = run.checkpoints()[-1]
        machine = machine or detect_machine()
        processes = Launch(**{k: v for k, v in (record.launch or {}).items()  # as it was launched
                              if k in Launch.__dataclass_fields__})
        env, _ = engine_env(machine, online=online_requested(), nproc=processes.nproc)
        env.update(_tracker_env(record))  # the same event folder and MLflow run as the first segment
        segments = [s.model_dump() for s in record.segments] or [
            {"n": 1, "status": record.status, "started_at": record.started_at or ""}]
        if segments[-1]["status"] == "running":  # its process died without a word: kill -9, OOM, power
            segments[-1]["status"] = "killed"
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        segments.append({"n": len(segments) + 1, "status": "running", "started_at": now, "from_step": step})
        record = _update(record, status="running", error=None, segments=segments)
        run.write_record(record)
        (run.path / MARKER).write_text("This run has not finished writing its outputs; do not use them.\n",
                                       encoding="utf-8")
        if echo:
            print(f"resuming {run.path} from {checkpoint.name} (segment {len(segments)})")
            if recipe.content_hash() != record.recipe.content_hash:
                print(f"  note: {recipe.path} changed since this run started; the run continues as launched "
                      "(its config.yaml)")
        _execute(run, record, config, machine, env, echo, resume_from=checkpoint, processes=processes)
    return run


def _open_trackers(run: RunDir, record: RunRecord, config: dict, env: dict[str, str]) -> RunRecord:
    """TensorBoard's folder in the run directory, and the MLflow run the engine will log into."""
    tracked: dict = {}
    if config.get("use_tensorboard"):
        tracked["tensorboard"] = str(run.path / trackers.TB_DIR)
    if config.get("use_mlflow"):
        try:
            tracked["mlflow"] = asdict(trackers.open_mlflow_run(config, record))
        except Exception as exc:  # a tracker that cannot be reached must not stop the training
            print(f"warning: MLflow at {config.get('mlflow_tracking_uri')}: {exc}; training without it",
                  file=sys.stderr)
    record = _update(record, trackers=tracked)
    env.update(_tracker_env(record))
    return record


def _tracker_env(record: RunRecord) -> dict[str, str]:
    env = {}
    if "tensorboard" in record.trackers:
        env["TENSORBOARD_LOGGING_DIR"] = record.trackers["tensorboard"]
    if "mlflow" in record.trackers:
        env.update(trackers.MlflowRun(**record.trackers["mlflow"]).env())
    return env


def _close_trackers(run: RunDir) -> None:
    """The MLflow run gets the run directory's small files, the summary and how it ended."""
    try:
        record = run.read_record()
        if "mlflow" in record.trackers:
            trackers.close_mlflow_run(record.trackers["mlflow"], run.path, record.status, trackers.run_summary(record))
    except Exception as exc:
        print(f"warning: could not finish the MLflow run: {exc}", file=sys.stderr)


def _execute(run: RunDir, record: RunRecord, config: dict, machine: Machine, env: dict[str, str], echo: bool,
             resume_from: Path | None = None, processes: Launch | None = None) -> None:
    """One segment: launch the engine, then record how it ended. Every way out writes the record."""
    try:
        _execute_segment(run, record, config, machine, env, echo, resume_from, processes)
    finally:
        _close_trackers(run)


def _execute_segment(run: RunDir, record: RunRecord, config: dict, machine: Machine, env: dict[str, str], echo: bool,
                     resume_from: Path | None = None, processes: Launch | None = None) -> None:
    eng = get_engine(record.engine)
    t0 = time.time()

    def ended(status: str, **fields) -> RunRecord:
        wall = round(time.time() - t0, 2)
        segments = [s.model_dump() for s in record.segments]
        if segments:
            segments[-1].update(status=status, ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_time_s=wall,
                                steps=fields.get("steps", segments[-1].get("steps")))
        total = round(sum(s["wall_time_s"] or 0 for s in segments), 2) if len(segments) > 1 else wall
        return _update(record, status=status, wall_time_s=total, segments=segments, **fields)

    def give_up(status: str, **fields) -> None:
        try:
            run.write_record(ended(status, **fields))
        except OSError as exc:  # the disk that failed the run may fail its record too: say so, do not hide it
            print(f"tunebook: could not update {run.record_path}: {exc}", file=sys.stderr)

    try:
        with sigterm_as_interrupt():
            metrics = eng.launch(run, run.path / "config.yaml", env, echo=echo, resume_from=resume_from,
                                 processes=processes)
    except KeyboardInterrupt:
        give_up("interrupted")
        raise
    except EngineFailed as exc:
        give_up("failed", error=exc.cause)
        raise TunebookError([Problem("engine", _key_named(exc.cause, config), exc.cause)], exit_code=1,
                            hint=_disk_hint(exc.cause) + f"the traceback is in {exc.log}; the run directory "
                                 f"{run.path} is marked INCOMPLETE" + _resume_hint(run)) from None
    except Exception as exc:
        give_up("failed", error=str(exc).splitlines()[0])
        raise TunebookError(str(exc), exit_code=1, hint=f"the run directory {run.path} is marked INCOMPLETE") from None

    if not metrics.get("global_step"):
        msg = ("the engine finished after 0 training steps: the data gave no full batch "
               "(too few rows for micro_batch_size, or packing put them in fewer packs than one batch); "
               "add rows, or pass ARGS=\"micro_batch_size=1\" or ARGS=\"sample_packing=false\"")
        give_up("failed", error=msg)
        raise TunebookError(msg, exit_code=1, hint=f"the run directory {run.path} is marked INCOMPLETE")
    bad = _not_learning(metrics)
    if bad:
        give_up("failed", error=bad, loss_curve=_loss_curve(metrics.get("log_history", [])))
        raise TunebookError(bad, exit_code=1, hint=f"the run directory {run.path} is marked INCOMPLETE")
    try:
        record = _finished(run, record, config, machine, metrics, ended)
        run.finish(record)
    except OSError as exc:  # disk full, read-only output: failed, and `latest` stays where it was
        give_up("failed", error=f"could not write the run's outputs: {exc}")
        raise TunebookError([Problem(str(run.path), "", f"could not write the run's outputs: {exc}")], exit_code=1,
                            hint="free space (or fix permissions) and resume: make train RECIPE=<its path> "
                                 "RESUME=" + run.path.name) from None
    (run.path / "metrics.json").unlink(missing_ok=True)
    if echo:
        print_summary(record)


def _finished(run: RunDir, record: RunRecord, config: dict, machine: Machine, metrics: dict, ended) -> RunRecord:
    """The record of a run whose engine ended well. Tokens, speed and timing describe the last
    segment (the process that ran to the end); the loss curve is the whole run's (the trainer
    carries its log history across checkpoints)."""
    curve = _loss_curve(metrics.get("log_history", []))
    summary = next((e for e in reversed(metrics.get("log_history", [])) if "train_runtime" in e), {})
    train_s = float(summary.get("train_runtime") or metrics["timing"]["train_s"])
    tokens = metrics.get("tokens_real") or metrics.get("tokens_total")
    return ended(
        "finished",
        train_runtime_s=round(train_s, 2),
        steps=metrics.get("global_step"),
        tokens={
            # real tokens (padding excluded); slots = positions the model processed
            "total": tokens,
            "slots": metrics.get("tokens_slots") or metrics.get("tokens_total"),
            "packing_efficiency": metrics.get("packing_efficiency"),
            "trainable": metrics.get("tokens_trainable"),
            "per_second": round(tokens / train_s, 2) if tokens and train_s else None,
            "trainable_per_second": round(metrics["tokens_trainable"] / train_s, 2)
            if metrics.get("tokens_trainable") and train_s else None,
        },
        peak_rss_mib=metrics.get("peak_rss_mib"),
        precision=metrics.get("precision") or {},
        attention=metrics.get("attention"),
        optimizer=metrics.get("optimizer"),
        gradient_checkpointing=metrics.get("gradient_checkpointing"),
        packing=metrics.get("packing"),
        distributed=metrics.get("distributed"),
        memory_estimate_mib=_estimate_mib(config, machine),
        params={"trainable": metrics.get("trainable_params"), "total": metrics.get("total_params"),
                "linear4bit_modules": metrics.get("linear4bit_modules")},
        timing={**(metrics.get("timing") or {}), "time_to_first_step_s": metrics.get("time_to_first_step_s"),
                "threads": metrics.get("threads"), "malloc_trim": metrics.get("malloc_trim"),
                "allocator": metrics.get("allocator")},
        loss_curve=curve,
        last_log=next((e for e in reversed(metrics.get("log_history", [])) if "loss" in e), {}),
        final_loss=curve[-1]["loss"] if curve else None,
        first_loss=curve[0]["loss"] if curve else None,
        output_dir=str(run.output),
        output_bytes=dir_size(run.output, skip_checkpoints=True),
        checkpoints_bytes=dir_size(run.output) - dir_size(run.output, skip_checkpoints=True),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _disk_hint(cause: str) -> str:
    words = ("No space left", "File too large", "Read-only file system", "Disk quota", "os error 28", "os error 27")
    return "the disk refused a write (full, read-only or over a size limit): free space or fix the output path; " \
        if any(w in cause for w in words) else ""


def _resume_hint(run: RunDir) -> str:
    return (f"; it kept {run.checkpoints()[-1][1].name}, so once the cause is fixed: make train "
            f"RECIPE=<its path> RESUME={run.path.name}") if run.checkpoints() else ""


def determinism(config: dict, machine: Machine) -> dict:
    """Whether this run should repeat bit for bit (same recipe, seed, machine): the nightly job
    trusts a curve that moved only where this says True. CPU kernels are deterministic at a fixed
    thread count (tests/test_train.py runs a recipe twice); CUDA is only with full_determinism."""
    if config.get("seed") is None:
        return {"expected": False, "why": "no seed in the recipe"}
    if machine.has_cuda and not config.get("full_determinism"):
        return {"expected": False, "why": "CUDA kernels (atomics, cuBLAS) vary run to run without full_determinism"}
    return {"expected": True, "why": f"seed {config['seed']}, " + ("full_determinism on CUDA" if machine.has_cuda
                                                                   else "CPU kernels at a fixed thread count")}


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a CI timeout, `kill`) ends a run as Ctrl-C does: the engine is stopped and the
    run marked interrupted. Python's default would end this process at once and leave the
    engine training on, orphaned, with run.json saying `running` forever."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _not_learning(metrics: dict) -> str | None:
    """A run that trained on nothing or on NaN is a failure, whatever the engine's exit code."""
    bad = metrics.get("nonfinite_loss")
    if bad:
        return (f"the loss became {bad['loss']} at step {bad['step']}; training stopped there. Lower "
                "learning_rate, or set max_grad_norm, or check the data (make inspect)")
    if metrics.get("tokens_trainable") == 0:
        return ("the engine trained on 0 tokens: every label was masked (roles_to_train, train_on_eos, "
                "the chat template); make inspect shows which tokens carry loss")
    return None


def _key_named(message: str, config: dict) -> str:
    """The recipe key an engine's error names, if it names one ('' otherwise)."""
    from tunebook.validation import _key_in_message

    return _key_in_message(message, config)


def _update(record: RunRecord, **fields) -> RunRecord:
    """A new record with `fields` set, validated like one read from disk."""
    return RunRecord.model_validate({**dump(record), **fields})


def _estimate_mib(config: dict, machine: Machine) -> float | None:
    from tunebook.memory import estimate

    est = estimate(config, on_gpu=machine.has_cuda)
    return round(est.total / 2**20, 1) if est else None


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def print_summary(record: RunRecord) -> None:
    curve = [p.loss for p in record.loss_curve]
    k = max(1, len(curve) // 5)
    tok, params, precision = record.tokens, record.params, record.precision
    lines = [
        "",
        f"== {record.recipe.name} v{record.recipe.version} ({record.recipe.method}, {record.engine}) finished ==",
        f"run       {record.run_dir}",
        f"steps     {record.steps}   wall {record.wall_time_s} s   train {record.train_runtime_s} s",
        f"loss      first {_mean(curve[:k]):.4f} -> last {_mean(curve[-k:]):.4f} (mean of {k} logged steps each)",
        f"tokens    {tok.total} seen, {tok.trainable} trained on; {tok.per_second} tok/s"
        + (f"; packing efficiency {tok.packing_efficiency:.2f}" if tok.packing_efficiency else ""),
        f"compute   {precision.get('compute_dtype', 'n/a')}" + (" autocast" if precision.get("autocast") else "")
        + (f", {record.attention} attention" if record.attention else "")
        + (f", {record.optimizer['name']}" + (" (fused)" if record.optimizer.get("fused") else "")
           if record.optimizer else "")
        + (", gradient checkpointing" if record.gradient_checkpointing else ""),
        f"params    {params.trainable:,} trainable of {params.total:,}" if params.trainable else "params    n/a",
        f"memory    peak RSS {record.peak_rss_mib} MiB (estimated {record.memory_estimate_mib} MiB)"
        + (f", {record.timing['allocator']} malloc" if record.timing.get("allocator") else ""),
        f"output    {record.output_dir} ({(record.output_bytes or 0) / 2**20:.1f} MiB)",
        f"adapted   {len(record.adaptations)} settings for {record.machine.kind} (see run.json)",
    ]
    if len(record.segments) > 1:
        lines.append("segments  " + ", ".join(f"{s.n}: {s.status} from step {s.from_step}" for s in record.segments)
                     + " (tokens and speed above: the last segment)")
    print("\n".join(lines))
