#!/usr/bin/env bash
# Offline dependency audit: every crate in Cargo.lock against the snapshot of the RustSec
# advisory database in ../shared/advisory-db (CI has it beside the clone too). Fails on any
# vulnerability, and on any warning (unsound, unmaintained) not allowed, with its reason, in
# .cargo/audit.toml. Installs cargo-audit when it is missing. Without the database: SKIPPED,
# except under CI=true, where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DB=../shared/advisory-db
if [ ! -d "$DB" ]; then
  if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then
    echo "audit: no advisory database at $DB under CI=true" >&2
    exit 1
  fi
  echo "audit: SKIPPED: no advisory database at $DB"
  exit 0
fi
if ! cargo audit --version >/dev/null 2>&1; then
  echo "audit: installing cargo-audit"
  cargo install --locked cargo-audit
fi
cargo audit --db "$DB" --no-fetch --stale
