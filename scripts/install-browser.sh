#!/usr/bin/env bash
# What the browser test needs, installed idempotently: Debian's chromium and node (with
# npm), and npm's playwright-core in target/browser (it drives the system chromium; no
# browser is downloaded).
#
#   SLIPWAY_BROWSER_DIR   where playwright-core goes (default <repo>/target/browser)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR=${SLIPWAY_BROWSER_DIR:-$PWD/target/browser}
PLAYWRIGHT=1.49.1
log() { echo "[browser] $*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v npm >/dev/null 2>&1; then
    log "installing npm"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi
if [ -f "$DIR/node_modules/playwright-core/package.json" ] \
    && grep -q "\"version\": \"$PLAYWRIGHT\"" "$DIR/node_modules/playwright-core/package.json"; then
    log "playwright-core $PLAYWRIGHT already in $DIR"
else
    log "npm install playwright-core@$PLAYWRIGHT into $DIR"
    mkdir -p "$DIR"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix "$DIR" "playwright-core@$PLAYWRIGHT"
fi
log "ready: $(chromium --version 2>/dev/null | head -1), node $(node --version)"
