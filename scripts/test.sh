#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run calls this).
#
# NOTE for the lead: the cargo invocations below are a starting point; adjust them
# (nextest, feature flags, ignored docker tests, thread count) as the workspace needs.
# Tests that talk to the Docker engine rely on scripts/setup.sh having started it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "[test] cargo test"
cargo test --workspace -- --test-threads=2
echo "[test] all passed"
