#!/usr/bin/env bash
# The main job on the fixtures. For now: decode every fixture file and print a per-file summary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked -q -p nexdecode --example summarize -- fixtures/data/*.nc
