#!/usr/bin/env bash
# Prepare this machine for Slipway: host packages, a running Docker engine, and the
# locally built base images (no registry is reachable here).
#
# Called first by .ci/run (through scripts/test.sh), by the test command and by the
# start command. Idempotent: a second run only checks, in a few seconds.
#   cold (fresh machine, nothing cached): ~1.5-2.5 min, almost all of it debootstrap
#   images pruned, tarball cached:        ~7 s
#   warm (engine up, images current):     ~2-3 s
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
t0=$SECONDS
echo "[setup] 1/2 host packages and docker engine (scripts/install-engine.sh)"
bash scripts/install-engine.sh
t1=$SECONDS
echo "[setup] 2/2 base images (scripts/base-images.sh)"
bash scripts/base-images.sh
t2=$SECONDS
echo "[setup] done in $((t2 - t0))s (engine $((t1 - t0))s, images $((t2 - t1))s);" \
    "docker $(docker version -f '{{.Server.Version}}' 2>/dev/null), log /var/log/dockerd.log"
