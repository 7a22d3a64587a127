from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
os.chdir(ROOT)  # recipes name repo-relative paths (data/, models/), as `make` runs them

for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "WANDB_MODE": "disabled", "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(k, v)

from tiny_models import ARCH, build_tiny_model, fold_skip_list  # noqa: E402

from tunebook.quiet import quiet_imports  # noqa: E402

quiet_imports()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted embedded model (make setup); converted here if a test run comes first."""
    from tunebook import embedded_model

    return embedded_model.convert(ROOT / embedded_model.DEFAULT_DIR)


@pytest.fixture(scope="session")
def tiny_llama(smollm2_dir, tmp_path_factory) -> Path:
    return build_tiny_model("llama", smollm2_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def memorise_data(tmp_path_factory) -> Path:
    """Eight short chats, the same every time: a few steps must lower the loss on them."""
    path = tmp_path_factory.mktemp("data") / "memorise.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(8):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Say the code word {i % 2}."},
                {"role": "assistant", "content": "The code word is tunebook." if i % 2 else "The code word is recipe."},
            ]}) + "\n")
    return path


def write_tiny_recipe(src: Path, dest: Path, base_model: Path, data: Path, **overrides) -> Path:
    """A shipped recipe pointed at a tiny model and tiny data, everything else as shipped."""
    cfg = yaml.safe_load(Path(src).read_text(encoding="utf-8"))
    cfg["base_model"] = str(base_model)
    fold_skip_list(cfg)  # the recipe's 16-bit modules, on the tiny model's 2 layers
    cfg["datasets"][0]["path"] = str(data)
    cfg["dataset_prepared_path"] = str(dest.parent / "prepared")
    cfg["output_dir"] = str(dest.parent / "direct-out")
    # unpacked: 8 short rows would fill fewer packs than one batch (packing is covered by
    # test_recipe_matrix on 48 rows and by test_cpu_speed_paths)
    cfg.update({"max_steps": 2, "micro_batch_size": 4, "sequence_len": 128, "warmup_steps": 0,
                "sample_packing": False, "pad_to_sequence_len": False})
    cfg.update(overrides)
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return dest


@pytest.fixture(scope="session")
def tiny_models(smollm2_dir, tmp_path_factory):
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        arch = ARCH[family]
        if arch not in cache:
            cache[arch] = build_tiny_model(arch, smollm2_dir, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return cache[arch]

    return get


# --- tiny trained runs (full, LoRA, QLoRA through Unsloth and through Axolotl) ---
STEPS = 6
METHODS = {  # learning rates high enough that 6 steps visibly lower the loss on 8 rows
    "full": {"learning_rate": 1e-3},
    "lora": {"learning_rate": 1e-2},
    "qlora": {"learning_rate": 1e-2},  # the recipe's engine: Unsloth
    "qlora-axolotl": {"learning_rate": 1e-2},
}


def _recipe_of(method: str) -> tuple[Path, str | None]:
    name, _, engine = method.partition("-")
    return Path(f"recipes/smollm2/{name}.yaml"), engine or None


@pytest.fixture(scope="session")
def runs(tmp_path_factory, tiny_llama, memorise_data):
    """One tiny run per method, trained once a session: test_train checks them, test_export exports them."""
    from tunebook.train import train

    out = {}
    for method, overrides in METHODS.items():
        work = tmp_path_factory.mktemp(f"train-{method}")
        src, engine = _recipe_of(method)
        recipe = write_tiny_recipe(src, work / "recipe.yaml", tiny_llama, memorise_data, max_steps=STEPS, **overrides)
        # the LoRA run also logs to MLflow (TRACKER=mlflow, a SQLite store of its own): test_trackers reads it back
        tracked = {"TRACKER": "mlflow", "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"} if method == "lora" else {}
        saved = {k: os.environ.get(k) for k in tracked}
        os.environ.update(tracked)
        try:
            out[method] = train(recipe, engine=engine, runs_root=work / "runs", echo=False)
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return out
