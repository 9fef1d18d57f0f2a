#!/usr/bin/env bash
# Installs everything portcullis needs, from the package registries only
# (crates.io, npm). Idempotent: each step is skipped when already done at the
# right version, so running it again costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# The version of a package as pinned in Cargo.lock.
locked_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# npm ci only when package-lock.json changed since the last install. It is
# mostly downloads, so it runs in the background while the cargo installs
# below (mostly compiling) take the CPU; it is waited for further down.
lock_stamp=node_modules/.portcullis-lock.sha256
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
npm_pid=""
npm_log=$(mktemp)
trap 'rm -f "$npm_log"' EXIT
if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_sum" ]; then
  step "Installing npm packages (in the background)"
  npm ci --no-audit --no-fund > "$npm_log" 2>&1 &
  npm_pid=$!
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "Adding the wasm32-unknown-unknown Rust target"
  rustup target add wasm32-unknown-unknown
fi

# worker-build must match the worker crate; wasm-bindgen-cli must match the
# wasm-bindgen library exactly, or the generated glue does not fit the module.
worker_version=$(locked_version worker)
bindgen_version=$(locked_version wasm-bindgen)

installed_version() { "$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1; }

if [ "$(installed_version worker-build)" != "$worker_version" ]; then
  step "Installing worker-build $worker_version (about 5 minutes, once)"
  cargo install worker-build --version "$worker_version" --locked --force
fi

if [ "$(installed_version wasm-bindgen)" != "$bindgen_version" ]; then
  step "Installing wasm-bindgen-cli $bindgen_version (about 3 minutes, once)"
  # --locked can fail when a crate in the CLI's own lock file was yanked;
  # fall back to a fresh resolution of the same CLI version.
  cargo install wasm-bindgen-cli --version "$bindgen_version" --locked --force \
    || cargo install wasm-bindgen-cli --version "$bindgen_version" --force
fi

# Headless Chromium for tests/browser.test.mjs, from Debian (driven by the npm
# playwright-core; `playwright install` is never used). Only when missing.
if [ ! -x /usr/bin/chromium ]; then
  step "Installing Chromium (Debian packages chromium, chromium-driver)"
  sudo_cmd=()
  if [ "$(id -u)" != 0 ]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get install -y chromium chromium-driver \
    || { "${sudo_cmd[@]}" apt-get update && "${sudo_cmd[@]}" apt-get install -y chromium chromium-driver; }
fi

# Supply-chain and fuzzing tools (scripts/deny.sh, scripts/fuzz.sh), pinned.
cargo_deny_version=0.20.2
cargo_fuzz_version=0.13.2
if [ "$(installed_version cargo-deny)" != "$cargo_deny_version" ]; then
  step "Installing cargo-deny $cargo_deny_version (about 10 minutes, once)"
  cargo install cargo-deny --version "$cargo_deny_version" --locked --force
fi
if [ "$(cargo fuzz --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1)" != "$cargo_fuzz_version" ]; then
  step "Installing cargo-fuzz $cargo_fuzz_version (about 2 minutes, once)"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --force
fi

# npm ci's background run (started above) must have succeeded.
if [ -n "$npm_pid" ]; then
  if ! wait "$npm_pid"; then
    cat "$npm_log" >&2
    echo "npm ci failed (output above)" >&2
    exit 1
  fi
  echo "$lock_sum" > "$lock_stamp"
  step "npm packages installed"
fi

# The official MCP Python SDK for tests/python-sdk.test.mjs, in a project venv
# (.venv): exactly the set pinned in tests/python/requirements.txt (--no-deps,
# so nothing unpinned slips in; pip check proves the set is complete). The venv
# is rebuilt only when that file changed since the last install.
venv_stamp=.venv/.portcullis-requirements.sha256
requirements_sum=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$venv_stamp" 2>/dev/null)" != "$requirements_sum" ]; then
  step "Installing the MCP Python SDK into .venv (about 15 seconds, once)"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --no-input -q --disable-pip-version-check --no-deps -r tests/python/requirements.txt
  .venv/bin/pip check --disable-pip-version-check > /dev/null
  echo "$requirements_sum" > "$venv_stamp"
fi

# The command line (crates/cli): `./target/debug/portcullis check|explain|doctor`.
# cargo makes this a no-op when nothing changed; the tests reuse the build.
if [ ! -x target/debug/portcullis ] || [ -n "$(find crates/cli crates/core Cargo.lock -newer target/debug/portcullis -type f -print -quit)" ]; then
  step "Building the portcullis command line (target/debug/portcullis, about a minute once)"
  cargo build -q -p portcullis-cli
fi
