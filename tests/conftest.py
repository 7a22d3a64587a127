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

from tiny_models import ARCH, build_tiny_model  # noqa: E402

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
