#!/usr/bin/env bash
# Where the engine's time goes in starting Slipway's instances: create + start + first 200
# (bench/floor.py clone) of a container with Slipway's configuration, and of the same
# with one part of it taken out at a time, rounds interleaved.
#
# How to run (root, dockerd running, `bash scripts/setup.sh` done):
#   bench/configcost.sh            # 5 rounds
#   ROUNDS=7 SLIPWAY_BIN=target/release/slipway bench/configcost.sh
#
# Variants: slipway (exactly the instance's config, read with `docker inspect`), and
# without: its network (the default bridge instead of slipway's instance network, which
# has inter-container traffic off), the CPU limit (NanoCpus), the memory limit, the pids
# limit, the capability and no-new-privileges settings, init; and plain (floor.py run).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

ROUNDS="${ROUNDS:-5}"
build_slipway
MACHINE_BEFORE="$(machine_state)"
start_slipway
IMG="slipway-bench-$RUN_ID:site"
docker build -q --label "slipway.bench=$RUN_ID" -t "$IMG" "$ROOT/examples/static-site" > /dev/null
api POST /v1/services "{\"name\":\"site\",\"source\":{\"type\":\"image\",\"image\":\"$IMG\"}}" | jq -e .name > /dev/null
wait_router_content site "Hello from Slipway" 120 0.1 > /dev/null || die "site never went live"
cid="$(docker ps -q --filter "label=slipway.platform=$PLATFORM" | head -1)"
docker inspect "$cid" > "$TMP/inspect.json"

variant() { # name jq-filter
    jq "$2" "$TMP/inspect.json" > "$TMP/$1.json"
}
variant slipway '.'
variant no-network '.[0].HostConfig.NetworkMode = "default" | .[0].NetworkSettings.Networks = {}'
variant no-cpu-limit '.[0].HostConfig.NanoCpus = 0'
variant no-memory-limit '.[0].HostConfig.Memory = 0 | .[0].HostConfig.MemorySwap = 0'
variant no-pids-limit '.[0].HostConfig.PidsLimit = 0'
variant no-caps '.[0].HostConfig.CapDrop = null | .[0].HostConfig.CapAdd = null | .[0].HostConfig.SecurityOpt = null'
variant no-init '.[0].HostConfig.Init = false'
VARIANTS="slipway no-network no-cpu-limit no-memory-limit no-pids-limit no-caps no-init plain"

LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 0 "$ROUNDS"); do
    for v in $VARIANTS; do
        sleep 1
        if [[ "$v" == plain ]]; then
            out="$(python3 "$ROOT/bench/floor.py" run "$IMG" "Hello from Slipway" 30 "slipway.bench=$RUN_ID")"
        else
            out="$(python3 "$ROOT/bench/floor.py" clone "$TMP/$v.json" "Hello from Slipway" 30 "slipway.bench=$RUN_ID")"
        fi
        docker rm -f "${out#* }" > /dev/null
        [[ "$r" == 0 ]] || record "$v" "${out%% *}"
    done
    [[ "$r" == 0 ]] || log "round $r: $(for v in $VARIANTS; do printf '%s %s  ' "$v" "$(awk -v n="$v" '$1 == n { x = $2 } END { print x }' "$RESULTS")"; done)"
done
echo
echo "Engine create + start + first 200 by container configuration; medians of $ROUNDS interleaved rounds (min-max), ms"
echo "load average before: $LOAD0   after: $(cut -d' ' -f1-3 /proc/loadavg)   ($(nproc) cores)"
base="$(median slipway)"
for v in $VARIANTS; do
    printf '%-16s %8s %15s  %s\n' "$v" "$(median "$v")" "($(minmax "$v"))" \
        "$(awk -v a="$(median "$v")" -v b="$base" 'BEGIN { printf "%+.1f ms against slipway", a - b }')"
done
