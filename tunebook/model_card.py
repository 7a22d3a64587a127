"""The exported model's `README.md`, in the Hugging Face model-card format: YAML front matter a
hub reads (base model, library, license, datasets, tags), then what a user needs to trust or
distrust it: the recipe and its hash, data, training settings, scores against the base, the
GGUF parity numbers, intended use and limits. Everything comes from the run's records."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tunebook.paths import PATHS
from tunebook.records import EvalRecord, ExportRecord, load
from tunebook.runs import RunDir

EMBEDDED = {"models/smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# The base models' own licenses, by hub id (the card must carry the base's terms, not ours).
LICENSES = (("smollm2", "apache-2.0"), ("llama-3.1", "llama3.1"), ("llama-3.2", "llama3.2"), ("llama-3", "llama3"),
            ("qwen3", "apache-2.0"), ("gemma-3", "gemma"), ("mistral", "apache-2.0"))
TRAINING_KEYS = ("adapter", "lora_r", "lora_alpha", "lora_dropout", "peft_use_rslora", "peft_use_dora", "load_in_4bit",
                 "rl", "learning_rate", "lr_scheduler", "num_epochs", "max_steps", "micro_batch_size",
                 "gradient_accumulation_steps", "sequence_len", "sample_packing", "optimizer", "seed")


def base_id(base: str) -> str:
    return EMBEDDED.get(str(base).rstrip("/"), str(base))


def license_of(base: str) -> str:
    readme = Path(base) / "README.md"
    if readme.is_file() and readme.read_text(encoding="utf-8").startswith("---"):
        meta = yaml.safe_load(readme.read_text(encoding="utf-8").split("---")[1]) or {}
        if meta.get("license"):
            return str(meta["license"])
    low = base_id(base).lower()
    return next((lic for key, lic in LICENSES if key in low), "other")


def _scores(run: RunDir) -> list[str]:
    path = run.path / "eval.json"
    if not path.is_file():
        return ["Not evaluated yet: `make eval RECIPE=...` writes eval.json, and a new export puts it here."]
    from tunebook.evaluate import main_metric

    rec = load(path, EvalRecord)
    rows = ["| task | metric | this model | base | change |", "|---|---|---:|---:|---:|"]
    for task, res in rec.results.items():
        metric = main_metric(task) if (PATHS.tasks / f"{task}.yaml").exists() else next(iter(res))
        got, base = res.get(metric), rec.base.results.get(task, {}).get(metric)
        if isinstance(got, (int, float)) and isinstance(base, (int, float)):
            rows.append(f"| {task} | {metric.split(',')[0]} | {got:.3f} | {base:.3f} | {got - base:+.3f} |")
    rows.append(f"\nlm-eval-harness on local tasks{f', first {rec.limit} documents' if rec.limit else ''}; "
                f"model evaluated: {rec.evaluated}.")
    return rows


def render(run: RunDir, cfg: dict, export: ExportRecord) -> str:
    record = run.read_record()
    base = str(cfg["base_model"])
    datasets = [str(d.get("path")) for d in cfg.get("datasets") or [] if d.get("path")]
    front = {
        "base_model": base_id(base),
        "library_name": "gguf",
        "license": license_of(base),
        "datasets": datasets,
        "tags": ["tunebook", "gguf", "llama.cpp", record.recipe.method, *( ["axolotl"] if record.engine == "axolotl" else [record.engine])],
        "pipeline_tag": "text-generation",
    }
    settings = {k: cfg[k] for k in TRAINING_KEYS if cfg.get(k) not in (None, "")}
    curve = record.loss_curve
    quant_rows = ["| file | quantization | size (MiB) | perplexity (HF → GGUF) | greedy answers identical |",
                  "|---|---|---:|---|---:|"]
    for q, r in export.quants.items():
        quant_rows.append(f"| `{r.file}` | {q} | {r.bytes / 2**20:.1f} | {r.perplexity_hf:.3f} → {r.perplexity_gguf:.3f} "
                          f"({r.perplexity_rel_diff:+.2%}, bound ±{r.bound:.0%}) | {r.answers_same}/{len(r.answers)} |")
    body = [
        f"# {record.recipe.name} (GGUF)",
        "",
        f"A fine-tune of [{base_id(base)}](https://huggingface.co/{base_id(base)}) made with tunebook's recipe "
        f"`{record.recipe.name}` version {record.recipe.version} (content hash `{record.recipe.content_hash}`), "
        f"method **{record.recipe.method}**, engine {record.engine}, run `{record.run_id}`.",
        "",
        "## Data",
        *(f"- `{d}`" for d in datasets),
        f"- {record.tokens.total or 'unknown'} training tokens",
        "",
        "## Training",
        "```yaml",
        yaml.safe_dump(settings, sort_keys=False).strip(),
        "```",
        f"Loss {curve[0].loss:.3f} at step {curve[0].step} → {curve[-1].loss:.3f} at step {curve[-1].step}." if curve else "",
        "",
        "## Evaluation",
        *_scores(run),
        "",
        "## Files and their parity with the trained model",
        *quant_rows,
        "",
        f"Perplexity on {export.perplexity_rows} rows of `{export.perplexity_data}`; greedy answers to NBA test "
        f"questions, HF model and GGUF fed the same token ids (llama-cpp-python {export.llama_cpp_python}).",
        "",
        "## Use",
        "```sh",
        "ollama create " + record.recipe.name + " -f Modelfile && ollama run " + record.recipe.name,
        "# or, with tunebook: make serve RECIPE=<recipe> RUN=" + record.run_id,
        "```",
        *( [f"System prompt it was trained with: {json.dumps(export.system_prompt)}"] if export.system_prompt else []),
        "",
        "## Intended use and limits",
        "Answers the kind of questions in its training data, in that data's style. It was tuned on a small, "
        "narrow dataset: expect it to be wrong outside that domain, to state numbers with unearned confidence, "
        "and to keep every limitation and license term of its base model. Not for decisions that matter "
        "without a human checking the answer.",
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body) + "\n"
