#!/usr/bin/env bash
# make setup-export (also run by make setup): llama.cpp's GGUF tools from one pinned registry
# package, llama-cpp-python (requirements-export.txt). Its sdist vendors llama.cpp: the wheel
# built from it (once, ~4 min on 2 cores; pip caches it) holds the library, the quantizer and
# the server; the converter (convert_hf_to_gguf.py + conversion/ + gguf-py/), which the wheel
# leaves out, is copied from the same sdist into $VENV/share/tunebook/llama.cpp. Nothing is
# fetched at export time. Idempotent: a stamp skips it when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
start=$(date +%s)
version=$(sed -n 's/^llama-cpp-python==\([0-9.]*\).*/\1/p' requirements-export.txt)
share="$VENV/share/tunebook"
dest="$share/llama.cpp"
stamp="$share/.export-tools"
want=$(cat requirements-export.txt constraints.txt | sha256sum | cut -d' ' -f1)

if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -f "$dest/convert_hf_to_gguf.py" ]; then
  echo "== export tools already installed (llama-cpp-python $version, $dest)"
  exit 0
fi

mkdir -p "$share"
sdist="$share/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
  echo "== fetching the llama-cpp-python $version sdist from the package registry"
  "${PIP[@]}" download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$share"
fi

echo "== building llama-cpp-python $version (llama.cpp for this CPU; first time about 4 minutes)"
# GGML_NATIVE (the default) compiles for this machine's CPU; the venv is per machine anyway.
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  "${PIP[@]}" install -q -r requirements-export.txt -c constraints.txt --no-binary llama-cpp-python

echo "== copying llama.cpp's converter out of the sdist"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
top="llama_cpp_python-$version/vendor/llama.cpp"
tar -xzf "$sdist" -C "$tmp" "$top/convert_hf_to_gguf.py" "$top/conversion" "$top/gguf-py" "$top/LICENSE"
rm -rf "$dest" && mv "$tmp/$top" "$dest"
"$VENV/bin/python" "$dest/convert_hf_to_gguf.py" --help >/dev/null
echo "$want" > "$stamp"
echo "== export tools ready in $(( $(date +%s) - start )) s: llama-cpp-python $version, converter in $dest"
