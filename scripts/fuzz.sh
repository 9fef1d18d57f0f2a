#!/usr/bin/env bash
# Fuzzes portcullis' parsers with cargo fuzz (libFuzzer): every target in
# fuzz/fuzz_targets for FUZZ_SECONDS seconds each (default 30), starting from
# the committed seeds (fuzz/seeds/<target>) and the local corpus
# (fuzz/corpus/<target>, not committed). Fails on the first crash, panic,
# timeout or out-of-memory, leaving the input in fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz.sh                     # the short run CI does
#   FUZZ_SECONDS=3600 bash scripts/fuzz.sh   # a long run, every target
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh jwt jwks   # some targets
#
# The toolchain is stable Rust, so no sanitizer (`-s none`): AddressSanitizer
# needs nightly, and the code under test is safe Rust, where the failures
# that matter are panics, overflows (debug assertions are on) and runaway
# time or memory, all of which libFuzzer reports without it.
set -euo pipefail
cd "$(dirname "$0")/.."
# Installs cargo-fuzz (pinned) if missing; seconds when all is in place.
bash scripts/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

seconds="${FUZZ_SECONDS:-30}"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

printf '\033[1m==> Building the fuzz targets\033[0m\n'
cargo fuzz build -s none

for target in "${targets[@]}"; do
  printf '\033[1m==> Fuzzing %s for %ss\033[0m\n' "$target" "$seconds"
  mkdir -p "fuzz/corpus/$target"
  # -timeout: one input taking over 10 s is a finding (runaway work), as is
  # an input that needs over 2 GiB.
  if ! cargo fuzz run -s none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"fuzz/$target.log" 2>&1; then
    tail -n 60 "fuzz/$target.log"
    printf '\033[1;31mfuzz target %s failed: input saved under fuzz/artifacts/%s/\033[0m\n' "$target" "$target"
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done ' "fuzz/$target.log" || true
done
printf 'fuzz: %s targets, no crash\n' "${#targets[@]}"
