#!/usr/bin/env bash
# The router on the product path: `slipway serve`'s router in front of a real container
# instance deployed by `git push`, against nginx and haproxy in front of the same
# container (through its published 127.0.0.1 port), and the container direct.
#
# How to run (root, dockerd running, `bash scripts/setup.sh` done):
#   bench/product.sh                  # 5 interleaved rounds of 10 s per target
#   ROUNDS=5 DUR=10 bench/product.sh
#   RATE=4000 bench/product.sh        # the open-loop rate (req/s) of the oha runs
#   SLIPWAY_BIN=target/release/slipway bench/product.sh   # skip the cargo build
#   SERVE_ARGS="--router-threads 0" bench/product.sh       # a lever (see below)
#
# Method (FACTS.md "Measuring a proxy on two cores"): wrk on CPU 0 (`taskset -c 0 wrk -t1
# -c64 --latency`); `slipway serve` (every thread), nginx (one worker), haproxy (one
# thread) and the container (`docker update --cpuset-cpus 1`) on CPU 1. The backend is
# router/examples/bench_backend built on the host (release), copied into a
# debian:bookworm-slim image and deployed by `git push`. Closed loop (wrk) gives req/s and
# p50/p99 under saturation; open loop (oha at a fixed RATE, --latency-correction, so no
# coordinated omission) gives what each adds over direct at p50 and p99 when not
# saturated. Rounds interleave the targets; medians are reported with the load average
# before and after. Installs oha (`cargo install oha --locked`) and haproxy (apt) if absent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'cleanup_product' EXIT

DUR="${DUR:-10}"
RATE="${RATE:-4000}"
TARGETS="${TARGETS:-direct haproxy slipway nginx}"
SVC=bench
HOST_HDR="Host: $SVC.slipway.localhost"
PIDS=()

cleanup_product() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    cleanup
    exit "$rc"
}

command -v haproxy > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >&2
command -v oha > /dev/null || [[ -x "$HOME/.cargo/bin/oha" ]] || cargo install oha --locked >&2
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"

build_slipway
(cd "$ROOT" && cargo build --release -p slipway-router --example bench_backend >&2)
MACHINE_BEFORE="$(machine_state)"
log "$MACHINE_BEFORE"
SCALER_TICK_MS=1000
# A private start (start_slipway's flags plus SERVE_ARGS), pinned to CPU 1.
start_slipway_with() {
    mkdir -p "$DATA"
    local api_port
    api_port="$(free_port)"
    ROUTER_PORT="$(free_port)"
    [[ "$api_port" != "$ROUTER_PORT" ]] || ROUTER_PORT="$(free_port)"
    API="http://127.0.0.1:$api_port"
    ROUTER="http://127.0.0.1:$ROUTER_PORT"
    # shellcheck disable=SC2086
    taskset -c 1 "$BIN" serve --data-dir "$DATA" --api-addr "127.0.0.1:$api_port" \
        --router-addr "127.0.0.1:$ROUTER_PORT" --dns-addr off --https-addr off \
        ${SERVE_ARGS:-} > "$TMP/serve.log" 2>&1 &
    SERVE_PID=$!
    for _ in $(seq 150); do
        curl -fsS -o /dev/null "$API/healthz" 2>/dev/null && break
        sleep 0.1
    done
    TOKEN="$(cat "$DATA/token")"
    PLATFORM="$(api GET /v1/platform | jq -r .platform_id)"
    [[ -n "$PLATFORM" && "$PLATFORM" != null ]] || die "no platform id"
}
start_slipway_with

# The backend, deployed by git push.
api POST /v1/services "{\"name\":\"$SVC\",\"scaling\":{\"min_size\":1,\"max_size\":1},\"health_check\":{\"interval_s\":5}}" |
    jq -e .name > /dev/null || die "create failed"
SRC="$TMP/backend"
mkdir -p "$SRC"
cp "$ROOT/target/release/examples/bench_backend" "$SRC/"
cat > "$SRC/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
COPY bench_backend /bench_backend
CMD ["/bench_backend", "0.0.0.0:8080"]
EOF
(cd "$SRC" && git init -q -b main && git config user.email bench@localhost &&
    git config user.name bench && git add -A && git commit -qm backend &&
    git push -q "http://slipway:$TOKEN@127.0.0.1:${API##*:}/git/$SVC.git" main 2> "$TMP/push.err") ||
    { cat "$TMP/push.err" >&2; die "git push failed"; }
wait_router_content "$SVC" ok 300 0.2 > /dev/null || { tail -30 "$TMP/serve.log" >&2; die "the backend never went live"; }
CID="$(docker ps -q --filter "label=slipway.platform=$PLATFORM" | head -1)"
[[ -n "$CID" ]] || die "no container"
docker update --cpuset-cpus 1 "$CID" > /dev/null
P_DIRECT="$(host_port "$CID")"
log "backend container $CID on 127.0.0.1:$P_DIRECT; slipway router $ROUTER"

# nginx and haproxy in front of the same published port.
P_NGINX="$(free_port)" P_HAPROXY="$(free_port)"
cat > "$TMP/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi;
    scgi_temp_path $TMP/scgi;
    upstream backend {
        server 127.0.0.1:$P_DIRECT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_NGINX;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
NGINX
cat > "$TMP/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend f
    bind 127.0.0.1:$P_HAPROXY
    default_backend b
backend b
    server s1 127.0.0.1:$P_DIRECT
HAPROXY
taskset -c 1 /usr/sbin/nginx -p "$TMP" -c "$TMP/nginx.conf" & PIDS+=($!)
taskset -c 1 haproxy -f "$TMP/haproxy.cfg" -db 2> "$TMP/haproxy.log" & PIDS+=($!)
for p in "$P_DIRECT" "$P_NGINX" "$P_HAPROXY" "$ROUTER_PORT"; do
    for _ in $(seq 100); do
        curl -fsS -o /dev/null -H "$HOST_HDR" "http://127.0.0.1:$p/" 2>/dev/null && break
        sleep 0.1
    done
    curl -fsS -o /dev/null -H "$HOST_HDR" "http://127.0.0.1:$p/" || die "port $p not answering"
done
# Every thread of slipway serve (taskset -a) on CPU 1, as the others.
taskset -a -cp 1 "$SERVE_PID" > /dev/null

port_of() {
    case "$1" in
        direct) echo "$P_DIRECT" ;; nginx) echo "$P_NGINX" ;;
        haproxy) echo "$P_HAPROXY" ;; slipway) echo "$ROUTER_PORT" ;;
    esac
}
to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}
closed() { # target round
    local out rps p50 p99 errs
    out="$(taskset -c 0 wrk -t1 -c64 -d"${DUR}s" --latency -H "$HOST_HDR" "http://127.0.0.1:$(port_of "$1")/")"
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    p99="$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
    errs="$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')"
    record "rps_$1" "$rps"; record "p50_$1" "$p50"; record "p99_$1" "$p99"
    log "round $2 closed $(printf '%-8s' "$1") $rps req/s  p50 $p50 us  p99 $p99 us $errs"
}
open_loop() { # target round
    local j p50 p99 ok
    j="$(taskset -c 0 "$OHA" -z "${DUR}s" -q "$RATE" -c 64 --latency-correction \
        --no-tui --output-format json -H "$HOST_HDR" "http://127.0.0.1:$(port_of "$1")/" 2> "$TMP/oha.err")" ||
        { cat "$TMP/oha.err" >&2; die "oha failed"; }
    p50="$(jq '.latencyPercentiles.p50 * 1e6' <<<"$j")"
    p99="$(jq '.latencyPercentiles.p99 * 1e6' <<<"$j")"
    ok="$(jq '.summary.successRate' <<<"$j")"
    record "op50_$1" "$p50"; record "op99_$1" "$p99"
    log "round $2 open   $(printf '%-8s' "$1") at $RATE req/s: p50 $p50 us  p99 $p99 us  success $ok"
}

LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
    for t in $TARGETS; do closed "$t" "$r"; done
    for t in $TARGETS; do open_loop "$t" "$r"; done
done
LOAD1="$(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "The router on the product path: medians of $ROUNDS interleaved rounds, ${DUR} s each"
echo "load average before: $LOAD0   after: $LOAD1   ($(nproc) cores; serve args: ${SERVE_ARGS:-none})"
echo "closed loop: taskset -c 0 wrk -t1 -c64 --latency; open loop: oha -q $RATE -c 64 --latency-correction"
printf '%-9s %10s %8s %10s %10s | %12s %12s %12s %12s\n' target "req/s" "x nginx" "p50 us" "p99 us" "open p50 us" "open p99 us" "+p50 direct" "+p99 direct"
# What TARGET adds over direct at p50 or p99 of the open loop ("-" without both).
added() { # target p50|p99
    awk -v a="$(median "o$2_$1")" -v b="$(median "o$2_direct")" \
        'BEGIN { if (a == "-" || b == "-") print "-"; else printf "+%.0f", a - b }'
}
for t in $TARGETS; do
    add50="$(added "$t" p50)"
    add99="$(added "$t" p99)"
    printf '%-9s %10s %8s %10s %10s | %12.0f %12.0f %12s %12s\n' "$t" "$(median "rps_$t")" \
        "$(ratio "$(median "rps_$t")" "$(median rps_nginx)")" "$(median "p50_$t")" "$(median "p99_$t")" \
        "$(median "op50_$t")" "$(median "op99_$t")" "$add50" "$add99"
done
echo
echo "slipway req/s: $(ratio "$(median rps_slipway)" "$(median rps_nginx)") nginx (goal >= 1.2x), $(ratio "$(median rps_slipway)" "$(median rps_haproxy)") haproxy (goal >= 1.05x)"
echo "slipway p99:   $(ratio "$(median p99_slipway)" "$(median p99_nginx)") nginx, $(ratio "$(median p99_slipway)" "$(median p99_haproxy)") haproxy (goal <= 0.9x both)"
echo "open loop, added over direct (us): slipway p50 $(added slipway p50) p99 $(added slipway p99); nginx p50 $(added nginx p50) p99 $(added nginx p99); haproxy p50 $(added haproxy p50) p99 $(added haproxy p99)"
echo "slipway serve resident memory after the runs: $(awk '/^VmRSS/ {print $2 " KiB"}' "/proc/$SERVE_PID/status")"
