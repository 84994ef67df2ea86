#!/usr/bin/env bash
# Start Slipway on this machine and deploy the static-site example with a real `git push`.
#
#   bash scripts/up.sh
#
# Prepares the machine (scripts/setup.sh), builds `slipway` (release), starts
# `slipway serve` in the background (log: $SLIPWAY_DATA_DIR/serve.log), creates the
# `static-site` service, pushes examples/static-site to it and waits for the page, then
# prints the console/API URL and the example's URL. Idempotent: a platform already
# answering is reused, an existing service is pushed to again.
#
# Knobs: SLIPWAY_DATA_DIR (default ~/.local/share/slipway), SLIPWAY_API_ADDR
# (127.0.0.1:7070), SLIPWAY_ROUTER_ADDR (127.0.0.1:8080), SLIPWAY_ZONE (slipway.localhost),
# SLIPWAY_PROFILE (release or debug).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

export SLIPWAY_DATA_DIR=${SLIPWAY_DATA_DIR:-$HOME/.local/share/slipway}
export SLIPWAY_API_ADDR=${SLIPWAY_API_ADDR:-127.0.0.1:7070}
export SLIPWAY_ROUTER_ADDR=${SLIPWAY_ROUTER_ADDR:-127.0.0.1:8080}
export SLIPWAY_ZONE=${SLIPWAY_ZONE:-slipway.localhost}
profile=${SLIPWAY_PROFILE:-release}
api="http://$SLIPWAY_API_ADDR"
export SLIPWAY_API=$api

bash scripts/setup.sh

echo "[up] building slipway ($profile)"
if [ "$profile" = release ]; then
    cargo build --release -q -p slipway
else
    cargo build -q -p slipway
fi
bin="$root/target/$profile/slipway"
mkdir -p "$SLIPWAY_DATA_DIR"

if curl -fsS -m 2 "$api/healthz" >/dev/null 2>&1; then
    echo "[up] a platform already answers at $api: reusing it"
else
    # Builds trust what this host trusts (a TLS-intercepting proxy's CA included), so
    # `pip install` in an apprunner.yaml or Dockerfile build works on any base image.
    if [ -z "${SLIPWAY_BUILD_CA_FILE:-}" ] && [ -r "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" ]; then
        export SLIPWAY_BUILD_CA_FILE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
    fi
    echo "[up] starting slipway serve (log $SLIPWAY_DATA_DIR/serve.log)"
    nohup "$bin" serve >>"$SLIPWAY_DATA_DIR/serve.log" 2>&1 </dev/null &
    for _ in $(seq 1 300); do
        curl -fsS -m 1 "$api/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! curl -fsS -m 2 "$api/healthz" >/dev/null 2>&1; then
        echo "[up] slipway serve did not start; the end of its log:" >&2
        tail -n 20 "$SLIPWAY_DATA_DIR/serve.log" >&2
        exit 1
    fi
fi

if ! "$bin" show static-site >/dev/null 2>&1; then
    "$bin" create static-site --health-interval 1 >/dev/null
fi
# git gets the token from `slipway git-credential` (set up by `slipway login`), never
# from the remote URL.
"$bin" login >/dev/null
remote=$("$bin" remote static-site)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a examples/static-site/. "$work/"
(
    cd "$work"
    git init -q -b main
    git add -A
    git -c user.name=slipway -c user.email=up@slipway.local commit -q -m "static-site example ($(date -u +%FT%TZ))"
    git push -q -f "$remote" HEAD:main
)

url=$("$bin" url static-site)
router_port=${SLIPWAY_ROUTER_ADDR##*:}
host="static-site.$SLIPWAY_ZONE"
echo "[up] waiting for $url"
for _ in $(seq 1 600); do
    if curl -fsS -m 2 -H "Host: $host" "http://127.0.0.1:$router_port/" 2>/dev/null | grep -q "Hello from Slipway"; then
        echo
        echo "Slipway is up."
        echo "  console/API:  $api   (token: $SLIPWAY_DATA_DIR/token)"
        echo "  example:      $url"
        echo "                curl -H 'Host: $host' http://127.0.0.1:$router_port/"
        echo "  CLI:          $bin status static-site"
        exit 0
    fi
    sleep 0.2
done
echo "[up] the example did not come up; its activity log:" >&2
"$bin" logs static-site >&2 || true
exit 1
