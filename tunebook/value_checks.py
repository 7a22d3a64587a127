"""Values Axolotl's schema accepts and the engine later chokes on, checked before launch.

Axolotl types `micro_batch_size` as an int but not as a positive one, takes any string as
an optimizer or scheduler and resolves a dataset `type` only when it loads the data; each of
those ends minutes later in a library traceback. Here each is one line at its key, with the
closest valid value for a typo (validation.suggest).
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from tunebook.errors import Problem

# key -> (lowest, highest, low bound included, high bound included, integer)
RANGES: dict[str, tuple[float, float, bool, bool, bool]] = {
    "micro_batch_size": (1, math.inf, True, False, True),
    "gradient_accumulation_steps": (1, math.inf, True, False, True),
    "eval_batch_size": (1, math.inf, True, False, True),
    "sequence_len": (1, math.inf, True, False, True),
    "lora_r": (1, math.inf, True, False, True),
    "logging_steps": (1, math.inf, True, False, True),
    "warmup_steps": (0, math.inf, True, False, True),
    "save_total_limit": (1, math.inf, True, False, True),
    "learning_rate": (0, math.inf, False, False, False),
    "num_epochs": (0, math.inf, False, False, False),
    "lora_alpha": (0, math.inf, False, False, False),
    "loraplus_lr_ratio": (0, math.inf, False, False, False),
    "save_steps": (0, math.inf, False, False, False),
    "weight_decay": (0, math.inf, True, False, False),
    "max_grad_norm": (0, math.inf, True, False, False),
    "warmup_ratio": (0, 1, True, False, False),
    "val_set_size": (0, 1, True, False, False),
    "lora_dropout": (0, 1, True, False, False),
}


def _range_text(lo, hi, lo_in, hi_in, integer) -> str:
    kind = "an integer" if integer else "a number"
    if hi == math.inf:
        return f"{kind} {'>=' if lo_in else '>'} {lo:g}"
    return f"{kind} in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"


def range_problems(config: dict[str, Any], where) -> list[Problem]:
    out = []
    for key, (lo, hi, lo_in, hi_in, integer) in RANGES.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, str) and not integer:
            # YAML 1.1 reads 2e-5 (no dot) as a string; Axolotl's pydantic turns it into the number
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not (
            integer and not float(value).is_integer())
        if ok:
            ok = (value >= lo if lo_in else value > lo) and (value <= hi if hi_in else value < hi)
        if not ok:
            src, line = where(key)
            out.append(Problem(src, key, f"must be {_range_text(lo, hi, lo_in, hi_in, integer)}, got {value!r}", line))
    steps = config.get("max_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps == 0 or steps < -1):
        src, line = where("max_steps")
        out.append(Problem(src, "max_steps", f"must be a positive integer (or -1 for no limit), got {steps!r}", line))
    return out


@lru_cache(maxsize=None)
def optimizers() -> frozenset[str]:
    from axolotl.utils.schemas.enums import CustomSupportedOptimizers
    from transformers.training_args import OptimizerNames

    return frozenset({o.value for o in OptimizerNames} | {o.value for o in CustomSupportedOptimizers})


@lru_cache(maxsize=None)
def schedulers() -> frozenset[str]:
    from transformers.trainer_utils import SchedulerType

    return frozenset({s.value for s in SchedulerType} | {"one_cycle", "rex"})  # Axolotl's own two


@lru_cache(maxsize=None)
def chat_templates() -> frozenset[str]:
    from axolotl.utils.schemas.enums import ChatTemplate

    return frozenset(t.value for t in ChatTemplate)


def _modules(package: str) -> set[str]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return set()
    root = Path(list(spec.submodule_search_locations)[0])
    return {p.stem for p in root.iterdir() if not p.name.startswith("_") and (p.suffix == ".py" or p.is_dir())
            and p.name != "__pycache__"}


@lru_cache(maxsize=None)
def dataset_types(rl: str | None) -> frozenset[str]:
    """The base names Axolotl resolves a dataset `type` to: its prompt-strategy modules (the
    preference ones for DPO-style training) and its built-in instruction handlers."""
    if rl in ("dpo", "ipo", "simpo"):
        return frozenset(_modules("axolotl.prompt_strategies.dpo"))
    if rl in ("orpo", "kto"):
        return frozenset(_modules(f"axolotl.prompt_strategies.{rl}"))
    from axolotl.utils.data.wrappers import DATASET_HANDLERS

    return frozenset(_modules("axolotl.prompt_strategies") | set(DATASET_HANDLERS) | {"messages"})


def _user_module(type_: str) -> bool:
    """`type: my_pkg.my_strategy` names the user's own module: allowed when it imports."""
    head = type_.rsplit(".", 1)[0]
    try:
        return "." in type_ and importlib.util.find_spec(head) is not None
    except (ImportError, ValueError):
        return False


def choice_problems(config: dict[str, Any], where) -> list[Problem]:
    from tunebook.validation import suggest

    out = []

    def check(key: str, value: Any, valid: frozenset[str], what: str) -> None:
        if isinstance(value, str) and value not in valid:
            src, line = where(key)
            out.append(Problem(src, key, f"unknown {what} '{value}'{suggest(value, set(valid))}", line))

    check("optimizer", config.get("optimizer"), optimizers(), "optimizer")
    check("lr_scheduler", config.get("lr_scheduler"), schedulers(), "scheduler")
    template = config.get("chat_template")
    if isinstance(template, str) and not template.startswith("tokenizer_default_fallback_"):
        check("chat_template", template, chat_templates(), "chat template")
    valid = dataset_types(config.get("rl"))
    for list_key in ("datasets", "test_datasets"):
        for i, ds in enumerate(config.get(list_key) or []):
            type_ = ds.get("type") if isinstance(ds, dict) else None
            if not isinstance(type_, str) or _user_module(type_):
                continue
            base = type_.split(":")[0].split(".")[0]
            if base not in valid:
                src, line = where(f"{list_key}.{i}.type")
                out.append(Problem(src, f"{list_key}.{i}.type",
                                   f"unknown dataset type '{type_}'{suggest(base, set(valid))}", line))
    return out


def deepspeed_problems(config: dict[str, Any], where) -> list[Problem]:
    """A `deepspeed:` file must exist and be a DeepSpeed config (Axolotl reads it only when it
    launches on GPUs, minutes into a run); ZeRO-3 cannot shard 4/8-bit quantized weights."""
    import json
    from pathlib import Path

    value = config.get("deepspeed")
    if not value or not isinstance(value, str):
        return []
    src, line = where("deepspeed")
    path = Path(value)
    if not path.is_file():
        from tunebook.paths import PATHS

        shipped = sorted(p.relative_to(PATHS.recipes.parent).as_posix() if p.is_relative_to(PATHS.recipes.parent)
                         else p.as_posix() for p in (PATHS.recipes / "deepspeed").glob("*.json"))
        return [Problem(src, "deepspeed", f"no such DeepSpeed config '{value}'"
                        + (f"; shipped: {', '.join(shipped)}" if shipped else ""), line)]
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
        stage = int((ds.get("zero_optimization") or {}).get("stage", 0))
    except (ValueError, TypeError, AttributeError) as exc:
        return [Problem(src, "deepspeed", f"'{value}' is not a DeepSpeed JSON config: {exc}", line)]
    if stage == 3 and (config.get("load_in_4bit") or config.get("load_in_8bit")) and not config.get("adapter"):
        return [Problem(src, "deepspeed", "ZeRO-3 with load_in_4bit/8bit needs an adapter (qlora): quantized "
                        "weights cannot be trained whole", line)]
    return []


# the transformers model type of each shipped family, for checks that need the architecture
# before the model is at hand (a hub id on an offline machine)
FAMILY_MODEL_TYPE = {"smollm2": "llama", "llama3": "llama", "qwen3": "qwen3", "gemma3": "gemma3", "mistral": "mistral"}


def _model_type(config: dict[str, Any]) -> str | None:
    import json

    local = Path(str(config.get("base_model") or "")) / "config.json"
    if local.is_file():
        try:
            return json.loads(local.read_text(encoding="utf-8")).get("model_type")
        except ValueError:
            return None
    return FAMILY_MODEL_TYPE.get(str((config.get("recipe") or {}).get("family")))


def fsdp_problems(config: dict[str, Any], where) -> list[Problem]:
    """FSDP settings Axolotl accepts and a GPU node then fails on, or silently ignores: a
    wrapped layer class the model does not have (FSDP shards nothing per layer), DeepSpeed
    beside an FSDP2 `fsdp_config` (Axolotl refuses only the FSDP1 `fsdp:` list with it). (Axolotl's
    FSDP-QLoRA guide names llama/mistral/mixtral only, but its own examples train Qwen3 so: not checked.)"""
    fc = config.get("fsdp_config") or {}
    if not (config.get("fsdp") or fc):
        return []
    out = []
    src, line = where("fsdp_config" if fc else "fsdp")
    if config.get("deepspeed"):
        out.append(Problem(src, "fsdp_config", "DeepSpeed and FSDP both shard the model: keep one (deepspeed: or "
                           "fsdp_version/fsdp_config)", line))
    model_type = _model_type(config)
    layer = fc.get("transformer_layer_cls_to_wrap") or fc.get("fsdp_transformer_layer_cls_to_wrap")
    if layer and model_type:
        import importlib

        from tunebook.validation import suggest

        try:
            module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
        except ImportError:
            module = None
        layers = {n for n in dir(module) if n.endswith("DecoderLayer")} if module else set()
        if layers and layer not in layers:
            key = "transformer_layer_cls_to_wrap" if "transformer_layer_cls_to_wrap" in fc else "fsdp_transformer_layer_cls_to_wrap"
            src, line = where(f"fsdp_config.{key}")
            out.append(Problem(src, f"fsdp_config.{key}", f"'{layer}' is not a layer of a {model_type} model"
                               f"{suggest(layer, layers)} (FSDP would wrap no layer)", line))
    return out


# model types whose projections are model.layers.<i>.self_attn|mlp.<name>_proj (the shipped families)
LAYERED_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma3_text"}
SKIP_KEY = "bnb_config_kwargs.llm_int8_skip_modules"


def skip_module_problems(config: dict[str, Any], where) -> list[Problem]:
    """transformers keeps a `llm_int8_skip_modules` name that matches no layer in 4 bit without
    a word, so a typo would quietly quantize the layer the recipe meant to keep 16-bit."""
    names = (config.get("bnb_config_kwargs") or {}).get("llm_int8_skip_modules")
    if names is None:
        return []
    src, line = where(SKIP_KEY)
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        return [Problem(src, SKIP_KEY, "a list of module names, e.g. [lm_head, model.layers.11.mlp.down_proj]", line)]
    from tunebook.model_specs import spec_for

    base = str(config.get("base_model") or "")
    spec = spec_for(base) if _model_type(config) in LAYERED_TYPES else None
    if spec is None:
        return []  # an architecture whose layer names this check does not know
    from transformers.quantizers.quantizers_utils import should_convert_module

    from tunebook.validation import suggest

    modules = {"lm_head"} | {f"model.layers.{i}.{'mlp' if p in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'}.{p}"
                             for i in range(spec.layers) for p in spec.linear_shapes()}
    out = []
    for i, name in enumerate(names):
        if all(should_convert_module(m, [name]) for m in modules):  # the matching rule transformers applies
            src, line = where(f"{SKIP_KEY}.{i}")
            out.append(Problem(src, f"{SKIP_KEY}.{i}", f"'{name}' names no layer of {base} ({spec.layers} layers)"
                               f"{suggest(name, modules)}", line))
    return out


def value_problems(config: dict[str, Any], where) -> list[Problem]:
    return (range_problems(config, where) + choice_problems(config, where) + deepspeed_problems(config, where)
            + fsdp_problems(config, where) + skip_module_problems(config, where))
