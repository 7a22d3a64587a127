"""llama.cpp's own GGUF converter and quantizer, as installed by setup (scripts/setup_export.sh).

Both come from one pinned package: the `llama-cpp-python` sdist on the package registry. Its
wheel is built once at setup (the quantizer is `llama_model_quantize` in that library), and
the converter (`convert_hf_to_gguf.py` with its `conversion/` and `gguf-py/` folders, which
the wheel does not ship) is copied out of the same sdist into the venv. Nothing is fetched
at export time: a missing piece is a setup problem and is reported as one.

Each tool runs in a child process with its output in a log file: the converter is a script,
and the quantizer is C code that prints to the process's stderr and may abort on bad input.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tunebook.atomic import atomic_path
from tunebook.errors import Problem, TunebookError

LLAMA_CPP_DIR = Path(sys.prefix) / "share" / "tunebook" / "llama.cpp"
CONVERTER = LLAMA_CPP_DIR / "convert_hf_to_gguf.py"
SETUP_HINT = "run `make setup` (it builds llama-cpp-python and copies its converter; `make setup-export` does only that)"

# QUANT names users type -> (how it is made, llama.cpp's ftype name). f16 is the converter's
# own output and the reference the others are measured against; the rest are quantized from it,
# llama.cpp's documented path (convert to f16, then llama-quantize).
QUANTS = {
    "f16": ("convert", "f16"),
    "q8_0": ("quantize", "LLAMA_FTYPE_MOSTLY_Q8_0"),
    "q6_k": ("quantize", "LLAMA_FTYPE_MOSTLY_Q6_K"),
    "q5_k_m": ("quantize", "LLAMA_FTYPE_MOSTLY_Q5_K_M"),
    "q4_k_m": ("quantize", "LLAMA_FTYPE_MOSTLY_Q4_K_M"),
    "q4_0": ("quantize", "LLAMA_FTYPE_MOSTLY_Q4_0"),
}


@dataclass(frozen=True)
class Tooling:
    converter: Path
    llama_cpp_version: str


def tooling() -> Tooling:
    """The installed converter and library, or one error saying what is missing and how to get it."""
    from importlib import metadata

    problems = []
    try:
        version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        version = ""
        problems.append(Problem("llama-cpp-python", "", "is not installed"))
    if not CONVERTER.is_file():
        problems.append(Problem(str(CONVERTER), "", "llama.cpp's converter is not there"))
    if problems:
        raise TunebookError(problems, hint=SETUP_HINT)
    return Tooling(CONVERTER, version)


def check_quant(name: str) -> str:
    key = name.strip().lower()
    if key not in QUANTS:
        from tunebook.validation import suggest

        raise TunebookError([Problem("QUANT", name, f"is not one of {', '.join(QUANTS)}" + suggest(key, set(QUANTS)))])
    return key


def _run(cmd: list[str], log: Path, what: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        raise TunebookError([Problem(what, "", f"failed (exit {done.returncode}): " + " | ".join(tail))],
                            hint=f"the whole output is in {log}")


def convert(model_dir: Path, out: Path, log: Path, name: str | None = None) -> Path:
    """HF folder -> f16 GGUF at `out`, written under a temporary name and renamed."""
    tools = tooling()
    with atomic_path(out) as tmp:
        cmd = [sys.executable, str(tools.converter), str(model_dir), "--outfile", str(tmp), "--outtype", "f16"]
        if name:
            cmd += ["--model-name", name]
        _run(cmd, log, "convert_hf_to_gguf.py")
    return out


def quantize(src: Path, out: Path, quant: str, log: Path, threads: int = 0) -> Path:
    """llama.cpp's quantizer (llama_model_quantize) from the f16 GGUF `src` to `out`."""
    tooling()
    how, ftype = QUANTS[check_quant(quant)]
    if how != "quantize":
        raise ValueError(f"{quant} is made by the converter, not quantized")
    with atomic_path(out) as tmp:
        _run([sys.executable, "-m", "tunebook.llama_cpp_tools", "quantize", str(src), str(tmp), ftype, str(threads)],
             log, f"llama_model_quantize ({quant})")
    return out


def _quantize_main(src: str, out: str, ftype: str, threads: str) -> int:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = int(threads)
    return int(llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(params)))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "quantize":
        sys.exit(_quantize_main(*sys.argv[2:]))
    sys.exit("usage: python -m tunebook.llama_cpp_tools quantize SRC OUT FTYPE THREADS")
