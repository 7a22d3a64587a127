"""Write to a temporary name beside the target, then rename: a killed process leaves the old
file or the new one, never half of one. Every file or folder tunebook writes for keeps goes
through `atomic_path`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(final: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a hidden temp path beside `final` (same suffix, so writers that read the format
    off the name work); rename it over `final` when the block succeeds, remove it otherwise."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        tmp.chmod(0o755)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o644)
    try:
        yield tmp
        if directory and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if directory else tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_save_pretrained(final: Path, *objects) -> Path:
    """save_pretrained each object (safetensors, the default in transformers 5) into a temp
    folder beside `final`, then rename it into place: never a half-written model at `final`."""
    with atomic_path(final, directory=True) as tmp:
        for obj in objects:
            obj.save_pretrained(tmp)
    return Path(final)
