#!/usr/bin/env bash
# Builds the worker into build/ with worker-build, then puts the panic-safe
# entry point (src/entry.mjs) in front of it: build/index.js is the
# entry, build/gate.mjs the module worker-build generated.
#
#   bash scripts/build.sh               # build/, what is deployed
#   bash scripts/build.sh --probes      # build-probe/, a TEST build with the
#                                       # `panic-probe` and `verify-probe` features
#                                       # (tests/panic.test.mjs, tests/webcrypto.test.mjs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

out_dir=build
args=()
if [ "${1:-}" = "--probes" ]; then
  shift
  out_dir=build-probe
  args=(--out-dir "$out_dir" -- --features panic-probe,verify-probe)
fi
worker-build --release "$@" "${args[@]}"
# worker-build keeps the wasm name section; the worker does not need it (panics
# are logged by source location) and it is a third of the gzipped size.
node scripts/strip-wasm-names.mjs "$out_dir/index_bg.wasm"
mv "$out_dir/index.js" "$out_dir/gate.mjs"
cp src/entry.mjs "$out_dir/index.js"
