"""Where a run's numbers go besides `run.json`, which stays the source of truth.

- TensorBoard, always (a recipe's `use_tensorboard: false` opts out): the engine's own
  reporting (Axolotl's `use_tensorboard`, TRL's `report_to`) writes event files into the run
  directory while it trains; `make eval` adds its scores there.
- MLflow when asked (`TRACKER=mlflow` or the recipe's `use_mlflow`), on `MLFLOW_TRACKING_URI`
  or, by default, a local SQLite database (`runs/mlflow.db`) that needs no server. tunebook
  opens the MLflow run itself (recipe name, version, content hash, resolved config as
  params), hands its id to the engine (`MLFLOW_RUN_ID`), whose MLflow callback logs every step
  into it live, and afterwards adds the run directory's small files and the eval scores.
- W&B only online (`TUNEBOOK_ONLINE=1`): offline, `adapt.py` removes `wandb_*` keys and says so.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunebook.adapt import UNSET
from tunebook.paths import PATHS

TB_DIR = "tensorboard"  # in the run directory
ARTIFACTS = ("recipe.yaml", "config.yaml", "run.json", "eval.json", "learning_curve.json")


def default_mlflow_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(PATHS.runs / 'mlflow.db').resolve()}"


def mlflow_requested(cfg: dict) -> bool:
    return os.environ.get("TRACKER", "").lower() == "mlflow" or bool(cfg.get("use_mlflow"))


def configure(cfg: dict, set_key) -> None:
    """The tracker keys of the engine's config (Axolotl's own), each change said."""
    if cfg.get("use_tensorboard") is None:
        set_key("use_tensorboard", True, f"TensorBoard event files in the run directory ({TB_DIR}/; make tensorboard); "
                "use_tensorboard: false opts out")
    if mlflow_requested(cfg):
        if not cfg.get("use_mlflow"):
            set_key("use_mlflow", True, "TRACKER=mlflow")
        if not cfg.get("mlflow_tracking_uri"):
            set_key("mlflow_tracking_uri", default_mlflow_uri(), "MLflow store: MLFLOW_TRACKING_URI, else the local "
                    "SQLite database runs/mlflow.db (make mlflow-ui)")
        if not cfg.get("mlflow_experiment_name"):
            set_key("mlflow_experiment_name", f"tunebook/{(cfg.get('recipe') or {}).get('name', 'runs')}",
                    "one MLflow experiment per recipe")
    elif cfg.get("use_mlflow") is False and "mlflow_tracking_uri" in cfg:
        set_key("mlflow_tracking_uri", UNSET, "use_mlflow is false")


@dataclass(frozen=True)
class MlflowRun:
    uri: str
    experiment: str
    run_id: str

    def env(self) -> dict[str, str]:
        """What the engine's MLflow callback reads to log into this run."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_EXPERIMENT_NAME": self.experiment, "MLFLOW_RUN_ID": self.run_id}


def _experiment_id(client, uri: str, name: str) -> str:
    """An experiment by name, created when missing. On a SQLite store its files go beside the
    database (MLflow's default, ./mlruns, is wherever the command happens to run)."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        root = Path(uri[len("sqlite:///"):]).parent / "mlflow-artifacts"
        location = (root / name.replace("/", "-")).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _client(uri: str):
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # the SQLite store's migrations, once
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _params(record, config: dict) -> dict[str, str]:
    """The recipe's identity and the resolved config as MLflow params (values cut to MLflow's 6000)."""
    params = {"tunebook.recipe.name": record.recipe.name, "tunebook.recipe.version": str(record.recipe.version),
              "tunebook.recipe.content_hash": record.recipe.content_hash, "tunebook.engine": record.engine,
              "tunebook.run_id": record.run_id, "tunebook.machine": record.machine.kind}
    for key, value in config.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
        params[f"config.{key}"] = text[:6000]
    return params


def open_mlflow_run(config: dict, record) -> MlflowRun:
    """Create the MLflow run before the engine starts, with the params; the engine logs steps into it."""
    from mlflow.entities import Param

    uri = config.get("mlflow_tracking_uri") or default_mlflow_uri()
    experiment = config.get("mlflow_experiment_name") or f"tunebook/{record.recipe.name}"
    client = _client(uri)
    exp_id = _experiment_id(client, uri, experiment)
    run = client.create_run(exp_id, run_name=f"{record.recipe.name}/{record.run_id}",
                            tags={"tunebook.run_dir": record.run_dir, "tunebook.recipe": record.recipe.path})
    items = [Param(k, v) for k, v in _params(record, config).items()]
    for i in range(0, len(items), 100):  # MLflow's batch limit
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return MlflowRun(uri, experiment, run.info.run_id)


def close_mlflow_run(ref: dict, run_dir: Path, status: str, summary: dict[str, float]) -> None:
    """After the engine: the run's small files and summary numbers, and its final status."""
    client = _client(ref["uri"])
    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(ref["run_id"], str(run_dir / name))
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in summary.items() if isinstance(v, (int, float))]
    if metrics:
        client.log_batch(ref["run_id"], metrics=metrics)
    client.set_terminated(ref["run_id"], status={"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))


def run_summary(record) -> dict[str, Any]:
    return {"summary.tokens_per_s": record.tokens.per_second,
            "summary.peak_rss_mib": record.peak_rss_mib, "summary.wall_time_s": record.wall_time_s,
            "summary.final_loss": record.final_loss, "summary.steps": record.steps}


def log_eval(run_dir: Path, record, eval_scores: dict[str, dict[str, Any]]) -> None:
    """`make eval`'s scores into the run's TensorBoard folder (at its last step) and its MLflow run."""
    step = int(record.steps or 0)
    flat = {f"eval/{task}/{metric.split(',')[0]}": v for task, res in eval_scores.items() for metric, v in res.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}  # "acc,none" -> eval/nba_mc/acc
    tb = run_dir / TB_DIR
    if tb.is_dir():
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(tb)) as writer:
            for key, value in flat.items():
                writer.add_scalar(key, float(value), step)
    ref = (record.trackers or {}).get("mlflow")
    if ref:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        _client(ref["uri"]).log_batch(ref["run_id"], metrics=[Metric(k.replace("/", "."), float(v), now, step)
                                                              for k, v in flat.items()])
        if (run_dir / "eval.json").is_file():
            _client(ref["uri"]).log_artifact(ref["run_id"], str(run_dir / "eval.json"))


def log_bench_row(row: dict[str, Any], experiment: str = "tunebook/nightly") -> str | None:
    """One nightly row as one MLflow run (with TRACKER=mlflow), so the nightly history is
    browsable there beside the training runs: speed, memory, quality, peaks' fractions."""
    if os.environ.get("TRACKER", "").lower() != "mlflow":
        return None
    from mlflow.entities import Metric, Param

    uri = default_mlflow_uri()
    client = _client(uri)
    run = client.create_run(_experiment_id(client, uri, experiment), run_name=str(row.get("recipe")),
                            tags={"tunebook.bench_id": str(row.get("bench_id")), "tunebook.run_dir": str(row.get("run_dir"))})
    now = int(time.time() * 1000)
    params = [Param(k, str(row[k])) for k in ("recipe", "version", "content_hash", "git_commit", "machine_kind",
                                              "bench_id", "status") if row.get(k) is not None]
    numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "id"}
    numbers.update({f"quality.{t}": v for t, v in (row.get("quality") or {}).items() if isinstance(v, (int, float))})
    extra = row.get("metrics") or {}
    numbers.update({k: extra[k] for k in ("final_loss", "world_size", "scaling_efficiency")
                    if isinstance(extra.get(k), (int, float))})
    client.log_batch(run.info.run_id, params=params, metrics=[Metric(k, float(v), now, 0) for k, v in numbers.items()])
    client.set_terminated(run.info.run_id, status="FINISHED" if row.get("status") == "finished" else "FAILED")
    return run.info.run_id
