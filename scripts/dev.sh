#!/usr/bin/env bash
# Runs the gate locally under `wrangler dev`, in front of a demo MCP server,
# with a local issuer that prints a token to try it with.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
bash scripts/build.sh
exec node scripts/dev.mjs "$@"
