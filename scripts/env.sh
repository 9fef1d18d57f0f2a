# Sourced by the build, test and dev scripts: points worker-build at the
# tools set-up installed from the registries, so it never downloads its own.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
PORTCULLIS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
export ESBUILD_BIN="$PORTCULLIS_ROOT/node_modules/.bin/esbuild"
export WASM_OPT_BIN="$PORTCULLIS_ROOT/node_modules/.bin/wasm-opt"
