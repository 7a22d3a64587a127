"""`make eval`: lm-eval-harness on local task YAMLs, for a run and for its base model.

lm-eval resolves `data_files` against the working directory, so the task folder is copied
to a temp dir with every data path made absolute first: the tasks then work from anywhere.
The model is loaded under `loading.POLICY` (the one chat and merge follow too) and handed to
lm-eval's HFLM as an object, so what was evaluated is exactly what the record says.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import yaml

from tunebook import records
from tunebook.data.nba import SYSTEM  # the prompt the NBA rows were written with, defined once there
from tunebook.errors import Problem, TunebookError
from tunebook.paths import PATHS
from tunebook.loading import POLICY, chat_template_text, load, run_config, skip_modules
from tunebook.records import BaseScores, EvalRecord, QuantizationCheck
from tunebook.runs import RunDir, atomic_write_json

TASKS_DIR = PATHS.tasks
DEFAULT_TASKS = ("nba_qa", "nba_mc", "control_mc", "nba_ppl")
CONTROL_TASK = "control_mc"  # forgetting: general questions the NBA training should leave alone
CACHE = PATHS.eval_cache


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: "!function " + loader.construct_scalar(node))


def _dump(cfg: dict) -> str:
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    return text.replace("'!function ", "!function ").replace("utils.process_qa'", "utils.process_qa")


@contextmanager
def resolved_tasks(tasks_dir: Path = TASKS_DIR):
    """A temp copy of the task folder with absolute data paths (repo root = tasks_dir/../..)."""
    tasks_dir = Path(tasks_dir).resolve()
    root = tasks_dir.parents[1]
    with tempfile.TemporaryDirectory(prefix="tunebook-tasks-") as tmp:
        for src in tasks_dir.iterdir():
            if src.suffix == ".yaml":
                cfg = yaml.load(src.read_text(encoding="utf-8"), Loader=_Loader)
                files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
                for split, rel in files.items():
                    files[split] = str((root / rel).resolve()) if not Path(rel).is_absolute() else rel
                (Path(tmp) / src.name).write_text(_dump(cfg), encoding="utf-8")
            elif src.suffix == ".py":
                shutil.copy(src, Path(tmp) / src.name)
        yield Path(tmp)


def task_versions(tasks: list[str], tasks_dir: Path = TASKS_DIR) -> dict[str, str]:
    out = {}
    for t in tasks:
        path = Path(tasks_dir) / f"{t}.yaml"
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        data = [Path(tasks_dir).resolve().parents[1] / p for p in (cfg.get("dataset_kwargs") or {}).get("data_files", {}).values()]
        digest = hashlib.sha256(path.read_bytes() + b"".join(p.read_bytes() for p in data if p.exists())).hexdigest()[:12]
        out[t] = f"v{(cfg.get('metadata') or {}).get('version', 0)}-{digest}"
    return out


def model_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(folder).glob("*")):
        if p.is_file() and p.suffix in (".safetensors", ".json", ".jinja"):
            h.update(p.name.encode())
            h.update(str(p.stat().st_size).encode())
            with open(p, "rb") as f:
                h.update(f.read(1 << 20))  # first MiB + size: cheap and changes with the weights
    return h.hexdigest()[:16]


# Bumped when tunebook's own scoring path changes numbers (not only speed): under bf16 autocast a
# new kernel or batch size flips near-tie answers (2: grouped decode attention and nba_qa
# decoded 64 at a time flipped 7 of 400 base answers), and a report must not set a cached base
# scored one way against runs scored the other.
SCORER = 2


def eval_precision() -> str:
    """bf16 autocast where the CPU has bf16 matmuls (2-2.5x fp32's rate), else fp32.

    The whole-test-set comparison is ~4 models x 1,200 documents plus the learning curve's
    checkpoints: in fp32 that alone took longer than the trainings. Every model of a report
    (base included: the cache key has the precision) is scored the same way, so the deltas
    compare like with like; the weights stay fp32 and the log-softmax runs in fp32.
    """
    import torch

    from tunebook.machine import detect

    return "bfloat16" if not torch.cuda.is_available() and detect().cpu_bf16 else "float32"


def _count_requests(lm, counts: dict) -> None:
    """How many requests this rank answered: the proof, in the record, that the ranks shared
    the work (the same gathered means would come out if each scored every document)."""
    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        method = getattr(lm, name)

        def counted(reqs, *args, _method=method, **kwargs):
            counts["requests"] = counts.get("requests", 0) + len(reqs)
            return _method(reqs, *args, **kwargs)

        setattr(lm, name, counted)


@contextmanager
def autocast_cacheable(model):
    """Let autocast keep one bf16 copy of each weight for a whole `generate`.

    torch's autocast caches a cast only for leaf tensors that require grad; a loaded adapter's
    frozen base weights do not, so every generated token re-cast all of them to bf16 (measured:
    nba_qa with an adapter 40.4 s for 64 questions, 32.2 s with the cache; the base model,
    whose weights require grad as loaded, 29.4 s, 43.9 s frozen). Under no_grad the flag builds
    no graph; it is put back afterwards, so the model leaves as it came."""
    frozen = [p for p in (model.parameters() if model is not None else ())
              if p.is_floating_point() and not p.requires_grad and p.is_leaf]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def per_doc_scores(samples: dict, tasks: list[str]) -> dict[str, list[float]]:
    """Each task's main metric for every document, in document order, from lm-eval's logged
    samples: what lets the learning curve read the base and final points off the whole-test-set
    eval instead of scoring those models again. Tasks whose per-document value is not a number
    (perplexity's (loglikelihood, length) pairs) are left out."""
    out = {}
    for task in tasks:
        metric, _, filt = main_metric(task).partition(",")
        rows = sorted((s for s in samples.get(task) or [] if s.get("filter", "none") == filt), key=lambda s: s["doc_id"])
        values = [r.get(metric) for r in rows]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[task] = [float(v) for v in values]
    return out


def run_lm_eval(model, tok, tasks: list[str], limit: int | None = None, tasks_dir: Path = TASKS_DIR,
                requests: dict | None = None, lm=None, per_doc: dict | None = None) -> dict:
    """lm-eval on one loaded model. Under torchrun (`score` with nproc > 1) each rank gets its
    share of every task's documents from lm-eval itself (its evaluator shards requests by
    rank and gathers the metrics on rank 0); lm-eval sets that up only for a model it loads
    by name on GPUs, so for a model handed over as an object (its "custom distributed
    integration") the rank, world size and accelerator are given to HFLM here."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from tunebook.decode_attention import cpu_decode_attention
    from tunebook.eval_lm import TrimmedHFLM

    requests = {} if requests is None else requests
    bf16 = eval_precision() == "bfloat16"
    with resolved_tasks(tasks_dir) as tmp, autocast_cacheable(model), cpu_decode_attention(model):
        # batch 32: on CPU, generation is latency-bound per step and a bigger batch amortises it;
        # lm-eval's own autocast (mixed_precision_dtype) wraps every model call, log-softmax in fp32
        if lm is None:
            lm = TrimmedHFLM(pretrained=model, tokenizer=tok, batch_size=32, max_length=1024, softmax_dtype=torch.float32,
                              mixed_precision_dtype=torch.bfloat16 if bf16 else None)
        if model is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            from accelerate import Accelerator

            lm.accelerator = Accelerator(cpu=not torch.cuda.is_available())
            lm._rank, lm._world_size = lm.accelerator.process_index, lm.accelerator.num_processes
            _count_requests(lm, requests)
        out = simple_evaluate(model=lm, tasks=list(tasks), limit=limit, num_fewshot=0,
                              task_manager=TaskManager(include_path=str(tmp), include_defaults=False),
                              apply_chat_template=bool(tok.chat_template), system_instruction=SYSTEM,
                              log_samples=per_doc is not None, bootstrap_iters=100)
    if out is None:  # ranks other than 0: lm-eval hands the results to rank 0 only
        return {}
    if per_doc is not None:
        per_doc.update(per_doc_scores(out.get("samples") or {}, list(tasks)))
    return {t: {k: v for k, v in r.items() if k != "alias"} for t, r in out["results"].items()}


def vllm_available() -> bool:
    """vLLM is a CUDA engine: used when it is installed on a GPU machine (TUNEBOOK_EVAL_BACKEND=hf opts out)."""
    import importlib.util

    import torch

    return (os.environ.get("TUNEBOOK_EVAL_BACKEND") != "hf" and torch.cuda.is_available()
            and importlib.util.find_spec("vllm") is not None)


def vllm_model_args(cfg: dict, weights: Path, nproc: int = 1) -> dict:
    """lm-eval's `vllm` model for what `loading.load` would load: an adapter through vLLM's
    LoRA support on its base (a QLoRA adapter on the base quantized by bitsandbytes, as the
    policy says), a full run's folder as is; NPROC GPUs as vLLM's own data parallelism."""
    weights = Path(weights)
    adapter_cfg = weights / "adapter_config.json"
    args: dict = {"pretrained": str(weights), "dtype": "bfloat16", "max_model_len": 1024,
                  "trust_remote_code": bool(cfg.get("trust_remote_code")), "data_parallel_size": max(1, nproc),
                  "tokenizer": str(weights if (weights / "tokenizer_config.json").exists() else cfg["base_model"])}
    if adapter_cfg.exists():
        rank = int(json.loads(adapter_cfg.read_text(encoding="utf-8")).get("r") or 16)
        args.update(pretrained=str(cfg["base_model"]), lora_local_path=str(weights), max_lora_rank=max(8, rank))
        if cfg.get("load_in_4bit"):
            args["quantization"] = "bitsandbytes"
    return args


class Scored(NamedTuple):
    """What one scoring of one model gave: the loaded model in words, lm-eval's results, and
    each task's main metric per document (per_doc_scores)."""
    what: str
    results: dict
    per_doc: dict[str, list[float]]


def _score_vllm(cfg: dict, weights: Path, tasks: list[str], limit: int | None, nproc: int) -> Scored:
    from lm_eval.models.vllm_causallms import VLLM

    args = vllm_model_args(cfg, weights, nproc)
    lm = VLLM(**args)
    template = chat_template_text(cfg)
    if template:  # the recipe's template, as `loading.tokenizer` sets it for the HF path
        lm.tokenizer.chat_template = template
    what = (f"vLLM: {args['pretrained']}" + (f" ({args['quantization']})" if "quantization" in args else " (bf16)")
            + (f" + adapter {args['lora_local_path']}" if "lora_local_path" in args else "")
            + f", data parallel {args['data_parallel_size']}")
    per_doc: dict = {}
    results = run_lm_eval(None, lm.tokenizer, tasks, limit, lm=lm, per_doc=per_doc)
    return Scored(what, results, per_doc)


def score(cfg: dict, weights: Path, tasks: list[str], limit: int | None, nproc: int = 1,
          quantized: bool | None = None) -> Scored:
    """(what was evaluated, lm-eval results) for `weights` under POLICY (or `quantized`, as
    `loading.load` takes it): in this process, or with NPROC > 1 in that many processes under
    torchrun, each scoring its share of the documents (`tunebook/eval_worker.py`); through vLLM
    where it is installed on a GPU (POLICY's model only)."""
    from tunebook import progress

    progress.note(f"lm-eval: {weights} on {', '.join(tasks)}" + (f" (first {limit} documents)" if limit else "")
                  + (f", {nproc} processes" if nproc > 1 else ""))
    if vllm_available() and quantized is None:
        return _score_vllm(cfg, Path(weights), tasks, limit, nproc)
    if nproc <= 1:
        loaded, per_doc = load(cfg, Path(weights), quantized), {}
        results = run_lm_eval(loaded.model, loaded.tokenizer, tasks, limit, per_doc=per_doc)
        return Scored(loaded.description, results, per_doc)
    from tunebook.eval_worker import score_in_processes

    return score_in_processes(cfg, Path(weights), tasks, limit, nproc, quantized)


def eval_key(models: list[Path], tasks: list[str], limit: int | None, chat_template: str | None,
             versions: dict[str, str] | None = None, four_bit: bool = False, kept_16bit: list[str] = ()) -> str:
    """What a score depends on: the weights (and whether they were loaded 4-bit, and which layers
    of a 4-bit load stayed 16-bit), the tasks and their data, the limit, the template, the
    precision. One key for the base cache and for a run's eval.json, so neither is reused for a
    question it did not answer."""
    versions = versions or task_versions(tasks)
    what = [[model_hash(Path(m)) for m in models], versions, limit, chat_template, eval_precision(), SCORER]
    quant = (["4-bit NF4"] + ([sorted(kept_16bit)] if kept_16bit else [])) if four_bit else []
    return hashlib.sha256(json.dumps(what + quant, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_base(cfg: dict, tasks: list[str], limit: int | None, nproc: int = 1, four_bit: bool = False) -> dict:
    """Scores of a config's base model (with its chat template; 4-bit NF4 if asked), cached under eval_key."""
    base = str(cfg["base_model"])
    versions = task_versions(tasks)
    key = eval_key([Path(base)], tasks, limit, chat_template_text(cfg), versions, four_bit, skip_modules(cfg))
    cached = CACHE / f"{key}.json"
    if cached.exists():
        return {**json.loads(cached.read_text()), "cached": True}
    scored = score(cfg, Path(base), tasks, limit, nproc, quantized=True if four_bit else None)
    result = {"model": base, "results": scored.results, "per_doc": scored.per_doc, "task_versions": versions}
    atomic_write_json(cached, result)
    return {**result, "cached": False}


def _weights(run: RunDir, cfg: dict) -> list[Path]:
    """The folders whose weights a run's scores depend on: an adapter's base too."""
    adapter = (run.output / "adapter_config.json").exists()
    return [run.output, Path(cfg["base_model"])] if adapter else [run.output]


def _run_tasks(cfg: dict, tasks: list[str] | None) -> list[str]:
    return list(tasks or (cfg.get("recipe") or {}).get("eval_tasks") or DEFAULT_TASKS)


def ensure_eval(run: RunDir, tasks: list[str] | None = None, limit: int | None = None, nproc: int = 1) -> EvalRecord:
    """The run's eval.json when it answers exactly this question (eval_key), else a new eval.

    `make eval`, `make compare` and `make bench` all come through here: an eval made for
    other tasks, task versions, limit or weights is never read as if it were this one."""
    cfg = run_config(run)
    tasks = _run_tasks(cfg, tasks)
    path = run.path / "eval.json"
    if path.exists():
        saved = records.load(path, EvalRecord)
        if saved.key == eval_key(_weights(run, cfg), tasks, limit, chat_template_text(cfg)):
            saved.reused = True
            return saved
    return evaluate_run(run, tasks, limit, nproc)


def current_eval(run: RunDir) -> EvalRecord | None:
    """The run's eval.json if it still describes the run's weights (its own tasks and limit)."""
    path = run.path / "eval.json"
    if not path.exists():
        return None
    cfg, saved = run_config(run), records.load(path, EvalRecord)
    return saved if saved.key == eval_key(_weights(run, cfg), saved.tasks, saved.limit, chat_template_text(cfg)) else None


def quantization_check(run: RunDir, cfg: dict, tasks: list[str], limit: int | None,
                       nproc: int = 1) -> QuantizationCheck | None:
    """For a QLoRA adapter whose eval has the control task: that task on the 4-bit base alone
    (cached like the base) and with the adapter on the fp32 base. Two scorings of one small task,
    so a report can say how much of the control task's change quantizing the base made."""
    if CONTROL_TASK not in tasks or not (run.output / "adapter_config.json").exists() or not cfg.get("load_in_4bit"):
        return None
    base_4bit = evaluate_base(cfg, [CONTROL_TASK], limit, nproc, four_bit=True)
    on_fp32 = score(cfg, run.output, [CONTROL_TASK], limit, nproc, quantized=False)
    return QuantizationCheck(task=CONTROL_TASK, base_4bit=base_4bit["results"][CONTROL_TASK],
                             adapter_on_fp32_base=on_fp32.results[CONTROL_TASK])


def evaluate_run(run: RunDir, tasks: list[str] | None = None, limit: int | None = None, nproc: int = 1) -> EvalRecord:
    cfg = run_config(run)
    tasks = _run_tasks(cfg, tasks)
    template_text = chat_template_text(cfg)
    t0 = time.time()
    evaluated, results, per_doc = score(cfg, run.output, tasks, limit, nproc)
    base = evaluate_base(cfg, tasks, limit, nproc)
    check = quantization_check(run, cfg, tasks, limit, nproc)
    record = EvalRecord(
        schema_version=records.SCHEMA_VERSION, run=str(run.path), recipe=run.read_record().recipe,
        evaluated=evaluated, policy=POLICY, tasks=tasks, limit=limit, precision=eval_precision(),
        task_versions=task_versions(tasks), key=eval_key(_weights(run, cfg), tasks, limit, template_text),
        results=results, per_doc=per_doc,
        base=BaseScores(model=str(cfg["base_model"]), results=base["results"], per_doc=base.get("per_doc") or {},
                        cached=base["cached"]),
        quantization=check, seconds=round(time.time() - t0, 1))
    atomic_write_json(run.path / "eval.json", records.dump(record))
    try:  # the run's TensorBoard folder and MLflow run get the scores too; eval.json is what counts
        from tunebook import trackers

        trackers.log_eval(run.path, run.read_record(), results)
    except Exception as exc:
        print(f"warning: could not log the scores to the run's trackers: {exc}")
    return record


@dataclass(frozen=True)
class TaskMeta:
    main_metric: str  # lm-eval's result key, "metric,filter"
    higher_is_better: bool


@lru_cache(maxsize=None)
def task_meta(task: str, tasks_dir: Path = TASKS_DIR) -> TaskMeta:
    """Read off the task's own YAML (`metadata.main_metric`, its `higher_is_better`), so a new
    task needs no edit here."""
    path = Path(tasks_dir) / f"{task}.yaml"
    cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    metric = (cfg.get("metadata") or {}).get("main_metric")
    listed = {m["metric"]: m for m in cfg.get("metric_list") or []}
    if metric not in listed:
        raise TunebookError([Problem(str(path), "metadata.main_metric",
                                     f"must name one of metric_list ({', '.join(listed)}), got {metric!r}")])
    return TaskMeta(f"{metric},none", bool(listed[metric].get("higher_is_better", True)))


def main_metric(task: str) -> str:
    return task_meta(task).main_metric


def lower_is_better(task: str) -> bool:
    return not task_meta(task).higher_is_better


def quantization_note(record: EvalRecord) -> str | None:
    """One line: the control task on the 4-bit base alone and with the adapter on the fp32 base,
    each against the fp32 base the record compares to."""
    check = record.quantization
    if check is None:
        return None
    metric = main_metric(check.task)
    base = record.base.results.get(check.task, {}).get(metric)
    four, merged = check.base_4bit.get(metric), check.adapter_on_fp32_base.get(metric)
    if not all(isinstance(v, (int, float)) for v in (base, four, merged)):
        return None
    return (f"{check.task} {metric.split(',')[0]}: the 4-bit NF4 base alone {four:.3f} ({four - base:+.3f} vs the fp32 "
            f"base, from quantizing before any training); the adapter on the fp32 base (the model make merge "
            f"bakes) {merged:.3f} ({merged - base:+.3f})")


def render(record: EvalRecord) -> str:
    lines = [f"== eval of {record.run}", f"model  {record.evaluated}", f"policy {POLICY}",
             f"{'task':<12}{'metric':<18}{'run':>10}{'base':>10}{'delta':>10}"]
    for task, res in record.results.items():
        for metric, value in res.items():
            if not isinstance(value, (int, float)) or "stderr" in metric:
                continue
            base = record.base.results.get(task, {}).get(metric)
            delta = f"{value - base:+.3f}" if isinstance(base, (int, float)) else ""
            lines.append(f"{task:<12}{metric.split(',')[0]:<18}{value:>10.3f}{(base if base is not None else float('nan')):>10.3f}{delta:>10}")
    if quantization_note(record):
        lines.append(quantization_note(record))
    if record.reused:
        lines.append(f"reused {record.run}/eval.json: made for these tasks, task versions, limit and weights")
    else:
        lines.append(f"written to {record.run}/eval.json ({record.seconds} s; base "
                     f"{'from cache' if record.base.cached else 'evaluated'})")
    return "\n".join(lines)


def evaluate_export(run: RunDir, quant: str | None, tasks: list[str] | None = None, limit: int | None = None) -> EvalRecord:
    """`make eval EXPORT=q4_k_m`: the same tasks on the exported GGUF (llama.cpp, tunebook.gguf_lm),
    written to export/eval-<quant>.json beside the file, so the report can show what export cost."""
    from importlib import metadata

    from tunebook import progress
    from tunebook.export import export_dir, latest_gguf
    from tunebook.gguf_lm import GGUFLM
    from tunebook.loading import tokenizer

    cfg = run_config(run)
    tasks = _run_tasks(cfg, tasks)
    gguf = latest_gguf(run, quant)
    source = run.path / "merged" if (run.output / "adapter_config.json").exists() else run.output
    tok = tokenizer(source, cfg)
    progress.note(f"lm-eval: {gguf} (llama.cpp) on {', '.join(tasks)}" + (f" (first {limit} documents)" if limit else ""))
    t0 = time.time()
    results = run_lm_eval(None, tok, tasks, limit, lm=GGUFLM(gguf, tok))
    base = evaluate_base(cfg, tasks, limit)
    record = EvalRecord(
        schema_version=records.SCHEMA_VERSION, run=str(run.path), recipe=run.read_record().recipe,
        evaluated=f"GGUF {gguf} (llama.cpp via llama-cpp-python {metadata.version('llama_cpp_python')}, "
                  f"token ids from {source}'s tokenizer)",
        policy="the exported file as served", tasks=tasks, limit=limit, precision="gguf",
        task_versions=task_versions(tasks), key=eval_key([gguf], tasks, limit, chat_template_text(cfg)),
        results=results, base=BaseScores(model=str(cfg["base_model"]), results=base["results"], cached=base["cached"]),
        seconds=round(time.time() - t0, 1))
    name = gguf.name[: -len(".gguf")].rsplit("-", 1)[-1]
    atomic_write_json(export_dir(run) / f"eval-{name}.json", records.dump(record))
    return record


def render_export(record: EvalRecord, run: RunDir) -> str:
    """The GGUF's scores against the base, and against the HF run where eval.json asked the same."""
    lines = [render(record).replace(f"written to {record.run}/eval.json", f"written to {record.run}/export/")]
    path = run.path / "eval.json"
    if path.exists():
        hf = records.load(path, EvalRecord)
        if hf.tasks == record.tasks and hf.limit == record.limit:
            lines.append(f"{'task':<12}{'metric':<18}{'HF run':>10}{'GGUF':>10}{'export':>10}")
            for task, res in record.results.items():
                metric = main_metric(task)
                a, b = hf.score(task, metric), res.get(metric)
                if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                    lines.append(f"{task:<12}{metric.split(',')[0]:<18}{a:>10.3f}{b:>10.3f}{b - a:>+10.3f}")
            lines.append(f"HF run: {hf.evaluated} ({hf.precision})")
    return "\n".join(lines)
