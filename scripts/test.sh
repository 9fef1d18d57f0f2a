#!/usr/bin/env bash
# Runs every test: set-up (idempotent), the native core tests, a fresh build
# of the worker, then the black-box suite against the built worker in
# Miniflare's workerd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

printf '\033[1m==> Native tests (cargo test)\033[0m\n'
cargo test --workspace --all-targets
# The command line the black-box tests run (tests/cli*.test.mjs).
cargo build -q -p portcullis-cli

# The test build with the probes first, the deployed build last: the
# supply-chain test reads the linked wasm the last build left in target/.
printf '\033[1m==> Building the test build with probes (build-probe/)\033[0m\n'
bash scripts/build.sh --probes
printf '\033[1m==> Building the worker\033[0m\n'
bash scripts/build.sh

printf '\033[1m==> Black-box tests of build/index.js in Miniflare\033[0m\n'
# The timeout also bounds each test file as a whole: demo.test.mjs starts
# `npm start`'s stack twice, each under wrangler dev, which runs the build
# (about 40 s) before it serves, so that file needs more than two minutes.
node --test --test-concurrency=1 --test-timeout=240000 tests/*.test.mjs

# Supply chain and fuzzing are part of the one test command, so what CI
# proves is what a newcomer runs (issue: "all of it in the README's test
# command").
bash scripts/deny.sh
bash scripts/fuzz.sh
