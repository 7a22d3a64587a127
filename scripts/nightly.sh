#!/usr/bin/env bash
# The scheduled entry point: set up (idempotent), run the fast tests, then the bench matrix.
# Exits non-zero when anything fails or the bench finds a regression.
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
make test
make bench MATRIX="${MATRIX:-bench/nightly.yaml}"
