#!/usr/bin/env bash
# Builds the worker into build/ with worker-build, then puts the panic-safe
# entry point (src/entry.mjs) in front of it: build/index.js is the
# entry, build/gate.mjs the module worker-build generated, build/replay.mjs
# the DPoP replay store's Durable Object class (src/replay.mjs), which the
# entry re-exports.
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

# Skipped when the output was built from exactly these inputs: `wrangler dev`
# runs this script when it starts and again once its file watcher settles,
# and the tests start it several times (PORTCULLIS_FORCE_BUILD=1 builds anyway).
inputs() {
  find src crates/core Cargo.toml Cargo.lock package-lock.json scripts/build.sh scripts/env.sh \
    scripts/strip-wasm-names.mjs -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  printf '%s\n' "$out_dir" "$*" "${args[*]}"
  rustc --version
  worker-build --version
}
stamp="$out_dir/.inputs.sha256"
sum=$(inputs "$@" | sha256sum | cut -d' ' -f1)
if [ "${PORTCULLIS_FORCE_BUILD:-}" != 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ] \
  && [ -f "$out_dir/index_bg.wasm" ] && [ -f "$out_dir/index.js" ] && [ -f "$out_dir/gate.mjs" ] && [ -f "$out_dir/replay.mjs" ]; then
  echo "$out_dir/ is up to date (built from these sources; PORTCULLIS_FORCE_BUILD=1 rebuilds)"
  exit 0
fi
rm -f "$stamp"
worker-build --release "$@" "${args[@]}"
wasm="$out_dir/index_bg.wasm"
# wasm-bindgen exports the JavaScript classes of the worker crate the gate
# never uses; without their exports, wasm-opt removes the code only they
# reach (function bodies that stay are left as worker-build's wasm-opt made
# them). Then the custom sections nothing reads at run time go: worker-build
# keeps the name section, a third of the gzipped size, and the worker does
# not need it (panics are logged by source location).
node scripts/strip-wasm-names.mjs --exports "$wasm"
"$WASM_OPT_BIN" --remove-unused-module-elements --debuginfo "$wasm" -o "$wasm.dce"
mv "$wasm.dce" "$wasm"
node scripts/strip-wasm-names.mjs "$wasm"
mv "$out_dir/index.js" "$out_dir/gate.mjs"
cp src/entry.mjs "$out_dir/index.js"
cp src/replay.mjs "$out_dir/replay.mjs"
# Written last: a build that failed half-way is never taken as up to date.
echo "$sum" > "$stamp"
