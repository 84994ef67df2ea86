#!/usr/bin/env bash
# The autoscaling step: from zero to CLIENTS concurrent clients within RAMP seconds;
# how long until enough instances are ready for the demand, and whether any request
# failed. Draws the instance count over time to docs/autoscale-step.png.
#
# How to run (root, dockerd running, `bash scripts/setup.sh` done):
#   bench/autoscale.sh                     # 3 interleaved rounds of each configuration
#   ROUNDS=3 CLIENTS=100 RAMP=10 HOLD=25 SLIPWAY_BIN=target/release/slipway bench/autoscale.sh
#
# Method. router/examples/bench_backend in debian:bookworm-slim, each request waiting
# 100 ms without CPU (bench_backend's wait-ms: concurrency, not CPU, is the demand),
# deployed as an image service twice:
#   tuned:    {"min_size":0,"max_size":25,"max_concurrency":10,"target_utilization_pct":70,
#              "stable_window_s":6,"panic_window_s":1,"scale_to_zero_grace_s":1}
#   defaults: the defaults (max_concurrency 100, target 70%, stable 60 s, panic 6 s) but
#             min_size 0 and scale_to_zero_grace_s 1, so each round starts from zero.
# Each round waits until the service is at zero with no container, then bench/autoscale.py
# ramps closed-loop keep-alive clients from 0 to CLIENTS over RAMP s (one every
# RAMP/CLIENTS s) and keeps them going until HOLD s, reading instances.ready from the API
# every 100 ms. "Enough" at a moment is ceil(clients / max_concurrency): instances that
# serve every client without queueing. The lag of a rise in demand is the time until
# that many are ready; a round's figure is its worst lag. Rounds interleave the two
# configurations; medians are printed with the load average before and after.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-100}"
RAMP="${RAMP:-10}"
HOLD="${HOLD:-25}"
PNG="${PNG:-$ROOT/docs/autoscale-step.png}"
PY=/usr/bin/python3
"$PY" -c 'import matplotlib' 2> /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-matplotlib >&2

build_slipway
(cd "$ROOT" && cargo build --release -p slipway-router --example bench_backend >&2)
MACHINE_BEFORE="$(machine_state)"
start_slipway
log "$MACHINE_BEFORE"

mkdir -p "$TMP/backend"
cp "$ROOT/target/release/examples/bench_backend" "$TMP/backend/"
printf 'FROM debian:bookworm-slim\nCOPY bench_backend /bench_backend\nCMD ["/bench_backend", "0.0.0.0:8080", "0", "100"]\n' > "$TMP/backend/Dockerfile"
IMG="slipway-bench-$RUN_ID:wait"
docker build -q --label "slipway.bench=$RUN_ID" -t "$IMG" "$TMP/backend" > /dev/null

declare -A PER=([tuned]=10 [defaults]=100)
api POST /v1/services "{\"name\":\"tuned\",\"source\":{\"type\":\"image\",\"image\":\"$IMG\"},\"scaling\":{\"min_size\":0,\"max_size\":25,\"max_concurrency\":10,\"target_utilization_pct\":70,\"stable_window_s\":6,\"panic_window_s\":1,\"scale_to_zero_grace_s\":1},\"health_check\":{\"interval_s\":5}}" |
    jq -e .name > /dev/null || die "create tuned failed"
api POST /v1/services "{\"name\":\"defaults\",\"source\":{\"type\":\"image\",\"image\":\"$IMG\"},\"scaling\":{\"min_size\":0,\"scale_to_zero_grace_s\":1},\"health_check\":{\"interval_s\":5}}" |
    jq -e .name > /dev/null || die "create defaults failed"

at_zero() { # service timeout_s
    local deadline=$((EPOCHSECONDS + $2)) v
    for _ in $(seq 1000); do
        v="$(api GET "/v1/services/$1" | jq '.instances.ready + .instances.paused')"
        if [[ "$v" == 0 ]] && [[ -z "$(docker ps -q --filter "label=slipway.platform=$PLATFORM" --filter "label=slipway.service=$1")" ]]; then
            return 0
        fi
        (( EPOCHSECONDS < deadline )) || return 1
        sleep 1
    done
    return 1
}

LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
ARGS=()
for r in $(seq "$ROUNDS"); do
    for svc in tuned defaults; do
        at_zero "$svc" 300 || die "$svc never reached zero"
        sleep 1
        out="$TMP/$svc-$r.json"
        taskset -c 0 "$PY" "$ROOT/bench/autoscale.py" "$ROUTER_PORT" "$svc.slipway.localhost" "$API" "$TOKEN" \
            "$svc" "$CLIENTS" "$RAMP" "$HOLD" "$out"
        ARGS+=("$svc:${PER[$svc]}=$out")
        log "round $r $svc: $(jq -c '{requests, failed, peak: ([.ready[][1]] | max)}' "$out")"
    done
done
LOAD1="$(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "Autoscaling step: 0 -> $CLIENTS clients over $RAMP s, held to $HOLD s; $ROUNDS interleaved rounds"
echo "load average before: $LOAD0   after: $LOAD1   ($(nproc) cores)"
"$PY" "$ROOT/bench/autoscale_report.py" "$PNG" "${ARGS[@]}"
