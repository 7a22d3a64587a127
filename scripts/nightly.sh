#!/usr/bin/env bash
# The scheduled entry point: set up (idempotent), the fast tests, the slow end-to-end tests, then
# the bench matrix.
# Exits non-zero when anything fails or the bench finds a regression.
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
make test
make test-matrix  # every recipe trains (make test trains one per engine and method)
make test-slow    # end-to-end on the real model: nothing else runs it, so it would rot
make bench MATRIX="${MATRIX:-bench/nightly.yaml}"
