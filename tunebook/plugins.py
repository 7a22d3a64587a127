"""The keys Axolotl's plugins add to a config, so validation knows them as Axolotl does.

Axolotl merges each listed plugin's pydantic args model into its schema (`prepare_plugins`,
`merge_input_args`). tunebook does the same per file, without registering anything in
Axolotl's process-wide PluginManager, and without importing the plugins themselves: several
need packages this machine does not have (Liger needs liger_kernel and Triton). Each plugin's
`args.py` needs only pydantic, so it is loaded on its own; the plugin class and the name of its
args model are read from the plugin's source.
"""

from __future__ import annotations

import importlib.util
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel


@dataclass(frozen=True)
class PluginSchema:
    plugin: str  # the class as `plugins:` names it, e.g. axolotl.integrations.liger.LigerPlugin
    package: str  # axolotl.integrations.liger
    model: type[BaseModel]

    @property
    def keys(self) -> set[str]:
        from tunebook.validation import valid_keys

        return valid_keys(self.model)

    def names(self, listed: str) -> bool:
        """Whether a `plugins:` entry is this plugin (its package, or a module under it, and its class)."""
        cls = self.plugin.rsplit(".", 1)[1]
        return listed.startswith(self.package + ".") and listed.rsplit(".", 1)[-1] == cls


@lru_cache(maxsize=None)
def axolotl_plugins() -> tuple[PluginSchema, ...]:
    import axolotl.integrations as integrations

    out = []
    for folder in sorted(Path(integrations.__file__).parent.iterdir()):
        args, sources = folder / "args.py", sorted(folder.glob("*.py"))
        if not args.is_file():
            continue
        text = "\n".join(p.read_text(encoding="utf-8") for p in sources)
        plugin = re.search(r"class (\w+)\(BasePlugin\)", text)
        model_name = re.search(r"def get_input_args\(self\)[^:]*:\s*(?:\"\"\"[\s\S]*?\"\"\"\s*)?return\s+\"[\w.]+\.(\w+)\"",
                               text)
        if not (plugin and model_name):
            continue
        module = _load_alone(args, f"_tunebook_plugin_args_{folder.name}")
        model = getattr(module, model_name.group(1), None) if module else None
        if isinstance(model, type) and issubclass(model, BaseModel):
            package = f"axolotl.integrations.{folder.name}"
            out.append(PluginSchema(f"{package}.{plugin.group(1)}", package, model))
    return tuple(out)


def _load_alone(path: Path, name: str):
    """Execute one module file without its package's __init__ (which imports the plugin)."""
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
        return module
    except Exception:  # an args file this Axolotl cannot load alone: its keys stay unknown, as without the plugin
        return None


def in_play(plugins: list[str] | None) -> tuple[list[PluginSchema], list[str]]:
    """The schemas of the plugins a config lists; and the listed ones tunebook has no schema for
    (a user's own plugin with no args model: it adds no keys)."""
    found, other = [], []
    for listed in plugins or []:
        schema = next((s for s in axolotl_plugins() if s.names(str(listed))), None)
        if schema:
            found.append(schema)
        else:
            own = _own_plugin_schema(str(listed))
            found.append(own) if own else other.append(str(listed))
    return found, other


def _own_plugin_schema(listed: str) -> PluginSchema | None:
    """A plugin outside Axolotl (tunebook's own, a user's): ask it, as Axolotl would."""
    if listed.startswith("axolotl.integrations."):
        return None
    try:
        from axolotl.integrations.base import load_plugin

        args = load_plugin(listed).get_input_args()
        if not args:
            return None
        module, cls = args.rsplit(".", 1)
        model = getattr(importlib.import_module(module), cls)
        return PluginSchema(listed, listed.rsplit(".", 1)[0], model)
    except Exception:
        return None


def owner_of(key: str) -> PluginSchema | None:
    """The Axolotl plugin that defines `key`, for 'add this plugin' advice."""
    return next((s for s in axolotl_plugins() if key in s.keys), None)


@contextmanager
def merged_schema(plugins: list[PluginSchema]):
    """Axolotl's validate_config, for the duration, validates with these plugins' args merged
    into its schema, exactly as `merge_input_args` builds it from registered plugins (their
    validators read base keys, so a plugin model cannot be checked alone)."""
    import axolotl.utils.config as axolotl_config

    if not plugins:
        yield
        return
    from axolotl.utils.schemas.config import AxolotlConfigWCapabilities, AxolotlInputConfig

    models = tuple(dict.fromkeys(p.model for p in plugins))
    merged = (type("AxolotlConfigWCapabilities", (AxolotlConfigWCapabilities, *models), {}),
              type("AxolotlInputConfig", (AxolotlInputConfig, *models), {}))
    original = axolotl_config.merge_input_args
    axolotl_config.merge_input_args = lambda: merged
    try:
        yield
    finally:
        axolotl_config.merge_input_args = original
