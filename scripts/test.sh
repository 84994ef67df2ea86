#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run calls this).
#
# Tests that talk to the Docker engine rely on scripts/setup.sh having started it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/install-browser.sh
bash scripts/install-sshd.sh

echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "[test] cargo test"
cargo test --workspace -- --test-threads=2
echo "[test] router suites again through the hyper path (fast path off)"
SLIPWAY_ROUTER_PATH=hyper cargo test -p slipway-router --test hostile --test semantics \
    --test limits --test websocket --test h2c --test refusals -- --test-threads=2
echo "[test] all passed"
