#!/usr/bin/env bash
# Builds the worker into build/ (build/index.js + its wasm) with worker-build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec worker-build --release "$@"
