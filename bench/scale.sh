#!/usr/bin/env bash
# Scale: router throughput with 1,000 services in the route table against 1; `slipway
# serve`'s resident memory with 100 services at zero; API latency of GET /v1/services
# with 1,000 services.
#
# How to run (root, dockerd running, `bash scripts/setup.sh` done):
#   bench/scale.sh                       # 3 interleaved rounds of 10 s
#   ROUNDS=5 DUR=10 SLIPWAY_BIN=target/release/slipway bench/scale.sh
#
# Method. Two `slipway serve`s, both pinned to CPU 1 with their backend containers:
#   one:  one service, `bench` (router/examples/bench_backend in debian:bookworm-slim,
#         deployed as an image);
#   many: `bench` the same, plus 100 services of examples/static-site as images with
#         {"min_size":0,"scale_to_zero_grace_s":1,"stable_window_s":6}: each deploys one
#         instance, which is removed once idle (stop mode), so they are at zero the way a
#         user's idle services are; resident memory (VmRSS) is read once all are at zero
#         and no container of theirs is left. Then 900 more services that take git pushes
#         and have had none (they are in the route table and have a worker each, with no
#         container), for 1,001 routes.
# Throughput: `taskset -c 0 wrk -t1 -c64 -d10s` to `bench` on each, rounds interleaved
# (one, many, one, many...). API: `curl -w %{time_total}` of GET /v1/services, 30 times
# after 3 unmeasured, with 100 and with 1,001 services. Medians, load average before and
# after.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-10}"
AT_ZERO="${AT_ZERO:-100}"
MORE="${MORE:-900}"
HOST_HDR="Host: bench.slipway.localhost"
declare -A S_PID S_API S_ROUTER S_TOKEN S_PLATFORM S_PORT

cleanup_scale() {
    local rc=$? n ids
    set +e
    for n in "${!S_PID[@]}"; do
        kill "${S_PID[$n]}" 2>/dev/null
    done
    sleep 2
    for n in "${!S_PID[@]}"; do
        kill -9 "${S_PID[$n]}" 2>/dev/null
        ids="$(docker ps -aq --filter "label=slipway.platform=${S_PLATFORM[$n]}")"
        [[ -z "$ids" ]] || docker rm -f $ids > /dev/null
        ids="$(docker images -q --filter "label=slipway.platform=${S_PLATFORM[$n]}" | sort -u)"
        [[ -z "$ids" ]] || docker rmi -f $ids > /dev/null 2>&1
    done
    ids="$(docker images -q --filter "label=slipway.bench=$RUN_ID" | sort -u)"
    [[ -z "$ids" ]] || docker rmi -f $ids > /dev/null 2>&1
    [[ -n "${KEEP:-}" ]] && log "kept $TMP" || rm -rf "$TMP"
    exit "$rc"
}
trap cleanup_scale EXIT

sapi() { # serve METHOD PATH [JSON]
    local args=(-sS --max-time 30 -X "$2" -H "Authorization: Bearer ${S_TOKEN[$1]}")
    if [[ $# -ge 4 ]]; then args+=(-H 'Content-Type: application/json' --data "$4"); fi
    curl "${args[@]}" "${S_API[$1]}$3"
}

start_serve() { # name
    local d="$TMP/$1" a r
    mkdir -p "$d"
    a="$(free_port)"; r="$(free_port)"
    [[ "$a" != "$r" ]] || r="$(free_port)"
    taskset -c 1 "$BIN" serve --data-dir "$d" --api-addr "127.0.0.1:$a" --router-addr "127.0.0.1:$r" \
        --dns-addr off --https-addr off > "$TMP/$1.log" 2>&1 &
    S_PID[$1]=$!
    S_API[$1]="http://127.0.0.1:$a"
    S_PORT[$1]="$r"
    for _ in $(seq 150); do
        curl -fsS -o /dev/null "http://127.0.0.1:$a/healthz" 2>/dev/null && break
        sleep 0.1
    done
    S_TOKEN[$1]="$(cat "$d/token")"
    S_PLATFORM[$1]="$(sapi "$1" GET /v1/platform | jq -r .platform_id)"
    [[ -n "${S_PLATFORM[$1]}" && "${S_PLATFORM[$1]}" != null ]] || die "$1: no platform id"
}

wait_at_zero() { # serve count timeout_s
    local deadline=$((EPOCHSECONDS + $3)) z left
    for _ in $(seq 2000); do
        z="$(sapi "$1" GET /v1/services | jq '[.[] | select(.name | startswith("zero-")) | select(.instances.ready == 0)] | length')"
        left="$(docker ps -q --filter "label=slipway.platform=${S_PLATFORM[$1]}" | wc -l)"
        # Only `bench`'s container is left.
        if [[ "$z" -ge "$2" && "$left" -le 1 ]]; then return 0; fi
        (( EPOCHSECONDS < deadline )) || { log "at zero: $z of $2, containers left $left"; return 1; }
        sleep 1
    done
    return 1
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

api_ms() { # serve label
    local i t
    for i in $(seq 33); do
        t="$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer ${S_TOKEN[$1]}" "${S_API[$1]}/v1/services")"
        [[ "$i" -le 3 ]] || record "$2" "$(awk -v t="$t" 'BEGIN { printf "%.2f", t * 1000 }')"
    done
}

to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}

build_slipway
(cd "$ROOT" && cargo build --release -p slipway-router --example bench_backend >&2)
MACHINE_BEFORE="$(machine_state)"
log "$MACHINE_BEFORE"

# The images: the backend, and the static site for the services at zero.
mkdir -p "$TMP/backend"
cp "$ROOT/target/release/examples/bench_backend" "$TMP/backend/"
printf 'FROM debian:bookworm-slim\nCOPY bench_backend /bench_backend\nCMD ["/bench_backend", "0.0.0.0:8080"]\n' > "$TMP/backend/Dockerfile"
BACKEND="slipway-bench-$RUN_ID:backend"
SITE="slipway-bench-$RUN_ID:site"
docker build -q --label "slipway.bench=$RUN_ID" -t "$BACKEND" "$TMP/backend" > /dev/null
docker build -q --label "slipway.bench=$RUN_ID" -t "$SITE" "$ROOT/examples/static-site" > /dev/null

for s in one many; do
    start_serve "$s"
    sapi "$s" POST /v1/services "{\"name\":\"bench\",\"source\":{\"type\":\"image\",\"image\":\"$BACKEND\"},\"scaling\":{\"min_size\":1,\"max_size\":1}}" |
        jq -e .name > /dev/null || die "$s: create bench failed"
done
for s in one many; do
    for _ in $(seq 300); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$HOST_HDR" "http://127.0.0.1:${S_PORT[$s]}/")" == 200 ]] && break
        sleep 0.2
    done
    cid="$(docker ps -q --filter "label=slipway.platform=${S_PLATFORM[$s]}" | head -1)"
    docker update --cpuset-cpus 1 "$cid" > /dev/null
done
RSS_ONE="$(rss_kib "${S_PID[many]}")"
log "many: resident $RSS_ONE KiB with one service; creating $AT_ZERO services that go to zero"

for i in $(seq "$AT_ZERO"); do
    sapi many POST /v1/services "{\"name\":\"zero-$i\",\"source\":{\"type\":\"image\",\"image\":\"$SITE\"},\"scaling\":{\"min_size\":0,\"scale_to_zero_grace_s\":1,\"stable_window_s\":6},\"health_check\":{\"interval_s\":5}}" |
        jq -e .name > /dev/null || die "create zero-$i failed"
done
wait_at_zero many "$AT_ZERO" 900 || die "the services never all reached zero"
sleep 5
RSS_ZERO="$(rss_kib "${S_PID[many]}")"
api_ms many api100
log "many: resident $RSS_ZERO KiB with $AT_ZERO services at zero (+bench); creating $MORE more"
for i in $(seq "$MORE"); do
    sapi many POST /v1/services "{\"name\":\"idle-$i\"}" > /dev/null
done
N="$(sapi many GET /v1/services | jq length)"
[[ "$N" -ge $((AT_ZERO + MORE + 1)) ]] || die "only $N services"
sleep 5
RSS_1K="$(rss_kib "${S_PID[many]}")"
api_ms many api1k
taskset -a -cp 1 "${S_PID[one]}" > /dev/null
taskset -a -cp 1 "${S_PID[many]}" > /dev/null

LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    for s in one many; do
        out="$(taskset -c 0 wrk -t1 -c64 -d"${DUR}s" --latency -H "$HOST_HDR" "http://127.0.0.1:${S_PORT[$s]}/")"
        rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
        p99="$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
        record "rps_$s" "$rps"; record "p99_$s" "$p99"
        log "round $r $s: $rps req/s, p99 $p99 us $(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')"
    done
done
LOAD1="$(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "Scale: medians of $ROUNDS interleaved rounds; load average before $LOAD0, after $LOAD1 ($(nproc) cores)"
echo "router, wrk -t1 -c64 -d${DUR}s on CPU 0, serve and backend on CPU 1:"
echo "  1 service:      $(median rps_one) req/s, p99 $(median p99_one) us"
echo "  $N services: $(median rps_many) req/s, p99 $(median p99_many) us"
echo "  ratio: $(ratio "$(median rps_many)" "$(median rps_one)") of the 1-service throughput (goal >= 0.97x)"
echo "resident memory of slipway serve (VmRSS):"
echo "  1 service running:                         $((RSS_ONE / 1024)) MiB"
echo "  + $AT_ZERO services at zero:                    $((RSS_ZERO / 1024)) MiB (goal < 50 MB)"
echo "  + $MORE services never pushed ($N in all): $((RSS_1K / 1024)) MiB"
echo "GET /v1/services, curl time_total, median of 30 (min-max):"
echo "  $((AT_ZERO + 1)) services:  $(median api100) ms ($(minmax api100))"
echo "  $N services: $(median api1k) ms ($(minmax api1k)) (goal < 20 ms)"
