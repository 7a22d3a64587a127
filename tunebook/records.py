"""The records that cross modules: a run's `run.json` and its `eval.json`.

Written by train and eval, read by compare, bench, the learning curve and the CLI, always
through these types: a field renamed here is renamed everywhere, and a reader cannot ask
for a key nobody writes. `schema_version` says which shape a file has; a file without one
is version 1 (written before the field existed) and still loads, its missing fields None.
Unknown fields are kept (extra="allow") so an older tunebook reading a newer file loses nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class RecipeRef(_Record):
    name: str
    path: str | None = None
    version: int
    family: str | None = None
    method: str
    content_hash: str | None = None
    resolved_hash: str | None = None


class Tokens(_Record):
    total: int | None = None  # real tokens (padding excluded)
    slots: int | None = None  # positions the model processed
    packing_efficiency: float | None = None
    trainable: int | None = None
    per_second: float | None = None
    trainable_per_second: float | None = None


class Params(_Record):
    trainable: int | None = None
    total: int | None = None
    linear4bit_modules: int | None = None


class LossPoint(_Record):
    step: int
    loss: float
    lr: float | None = None


class MachineInfo(_Record):
    kind: str


class Segment(_Record):
    """One process's stretch of a run: the first launch, then each RESUME. A segment left
    `running` by a process that died (kill -9, power loss) is marked `killed` on resume."""

    n: int
    status: str  # running | finished | failed | interrupted | killed
    started_at: str
    ended_at: str | None = None
    from_step: int = 0  # the checkpoint step it resumed from (0: the start)
    wall_time_s: float | None = None
    steps: int | None = None  # the trainer's global step when it ended (None if it died)


class RunRecord(_Record):
    schema_version: int = 1
    status: str  # running | finished | failed | interrupted
    run_id: str
    run_dir: str
    recipe: RecipeRef
    engine: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    adaptations: list[dict[str, Any]] = Field(default_factory=list)
    notices: list[dict[str, Any]] = Field(default_factory=list)  # settings that change what is trained or shipped
    data: list[dict[str, Any]] = Field(default_factory=list)  # each dataset as checked before launch
    seed: int | None = None
    git_commit: str | None = None
    tunebook_version: str | None = None
    packages: dict[str, str] = Field(default_factory=dict)
    machine: MachineInfo
    launch: dict[str, Any] | None = None  # launcher, nproc, nnodes, world_size (tunebook.launch.Launch)
    distributed: dict[str, Any] | None = None  # world_size, backend, nodes, peak_rss_mib_per_rank (from the ranks)
    trackers: dict[str, Any] = Field(default_factory=dict)  # tensorboard: dir; mlflow: {uri, experiment, run_id}
    started_at: str | None = None
    segments: list[Segment] = Field(default_factory=list)
    determinism: dict[str, Any] = Field(default_factory=dict)  # expected: bool, why: str (the nightly checks it)
    error: str | None = None
    wall_time_s: float | None = None
    train_runtime_s: float | None = None
    steps: int | None = None
    tokens: Tokens = Field(default_factory=Tokens)
    peak_rss_mib: float | None = None
    precision: dict[str, Any] = Field(default_factory=dict)
    attention: str | None = None  # the attention implementation the model ran (eager, sdpa, ...)
    # what stepped: name, fused, foreach; asked = the trainer's `optim` after any engine changed it
    optimizer: dict[str, Any] | None = None
    gradient_checkpointing: bool | None = None  # as the model ran at its first step
    packing: dict[str, Any] | None = None  # the Unsloth engine: packed, strategy, restored_after_unsloth_cpu
    memory_estimate_mib: float | None = None
    params: Params = Field(default_factory=Params)
    timing: dict[str, Any] = Field(default_factory=dict)
    loss_curve: list[LossPoint] = Field(default_factory=list)
    last_log: dict[str, Any] = Field(default_factory=dict)
    final_loss: float | None = None
    first_loss: float | None = None
    output_dir: str | None = None
    output_bytes: int | None = None
    checkpoints_bytes: int | None = None
    finished_at: str | None = None

    @property
    def as_written(self) -> bool:
        """The recipe file itself ran: no ARGS, no ENGINE= (compare and bench count only these)."""
        return not self.overrides

    @property
    def compute_dtype(self) -> str | None:
        return self.precision.get("compute_dtype")


class BaseScores(_Record):
    model: str
    results: dict[str, dict[str, Any]]
    per_doc: dict[str, list[float]] = Field(default_factory=dict)  # evaluate.per_doc_scores
    cached: bool = False


class QuantizationCheck(_Record):
    """A QLoRA adapter runs on a 4-bit base, and the 4-bit base alone already scores differently
    from the fp32 base (SmolLM2-135M: control_mc 0.535 -> 0.445 from quantizing, before any
    training). The control task on that base alone, and with the adapter on the fp32 base (the
    model `make merge` bakes), part the quantization's share of a change from the training's."""

    task: str
    base_4bit: dict[str, Any]  # lm-eval results of the 4-bit NF4 base alone
    adapter_on_fp32_base: dict[str, Any]  # the adapter applied to the fp32 base


class EvalRecord(_Record):
    schema_version: int = 1
    run: str
    recipe: RecipeRef
    evaluated: str  # what was loaded, in words (loading.Loaded.description)
    policy: str | None = None
    tasks: list[str]
    limit: int | None = None
    precision: str | None = None
    task_versions: dict[str, str] = Field(default_factory=dict)
    key: str | None = None  # evaluate.eval_key: the question these scores answer
    results: dict[str, dict[str, Any]]
    # each task's main metric per document, in document order (evaluate.per_doc_scores): the
    # learning curve's base and final points are read off these rather than scored again
    per_doc: dict[str, list[float]] = Field(default_factory=dict)
    base: BaseScores
    quantization: QuantizationCheck | None = None  # QLoRA adapters only
    seconds: float | None = None
    reused: bool = Field(default=False, exclude=True)  # this call read the file rather than evaluating

    def score(self, task: str, metric: str) -> Any:
        return self.results.get(task, {}).get(metric)


class Answer(_Record):
    question: str
    hf: str
    gguf: str
    same: bool


class QuantParity(_Record):
    """One GGUF file against the HF model it was made from, on the same token ids."""

    file: str
    bytes: int
    perplexity_hf: float
    perplexity_gguf: float
    perplexity_rel_diff: float  # (gguf - hf) / hf
    bound: float  # the largest rel. diff this quantization may have (export.PPL_BOUNDS)
    passed: bool
    answers_same: int
    answers: list[Answer] = Field(default_factory=list)
    tokenizer_agrees: int  # rendered chats the GGUF's own tokenizer splits exactly as HF does
    tokenizer_checked: int
    seconds: float | None = None


class ExportRecord(_Record):
    """`export/export.json`: what was exported from which weights, and the proof it runs the same."""

    schema_version: int = 1
    run: str
    recipe: RecipeRef
    source: str  # the HF folder converted (a run's merged/ or a full run's output/)
    llama_cpp_python: str
    converter: str
    perplexity_data: str
    perplexity_rows: int
    perplexity_tokens: int
    questions_data: str
    quants: dict[str, QuantParity] = Field(default_factory=dict)
    modelfile_template: str | None = None
    system_prompt: str | None = None
    files: list[str] = Field(default_factory=list)


def load(path: Path, kind: type[_Record]):
    return kind.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


def dump(record: _Record) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude_none=False)
