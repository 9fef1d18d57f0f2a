#!/usr/bin/env bash
# Builds the worker into build/ with worker-build, then puts the panic-safe
# entry point (src/edge/entry.mjs) in front of it: build/index.js is the
# entry, build/gate.mjs the module worker-build generated.
#
#   bash scripts/build.sh               # build/, what is deployed
#   bash scripts/build.sh --panic-probe # build-panic/, a TEST build with the
#                                       # `panic-probe` feature (tests/panic.test.mjs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

out_dir=build
args=()
if [ "${1:-}" = "--panic-probe" ]; then
  shift
  out_dir=build-panic
  args=(--out-dir "$out_dir" -- --features panic-probe)
fi
worker-build --release "$@" "${args[@]}"
mv "$out_dir/index.js" "$out_dir/gate.mjs"
cp src/edge/entry.mjs "$out_dir/index.js"
