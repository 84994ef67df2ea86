#!/usr/bin/env bash
# Router throughput: direct vs nginx vs slipway-router, on a 2-core machine.
#
# How to run (from anywhere): bench/router.sh [seconds-per-run, default 10]
#
# Method (docs/BENCHMARKS.md, FACTS.md "Measuring a proxy on two cores"): the backend and
# every proxy are pinned to CPU 1, the load generator `taskset -c 0 wrk -t1 -c64` to CPU 0;
# rounds are interleaved (direct, nginx, slipway, slipway with 1,000 services, slipway with
# its fast path off; ROUNDS=5 by default)
# and medians reported. wrk is closed-loop: its latencies are not open-loop latencies
# (coordinated omission); use them to compare the proxies, not as user-facing figures.
#
# Besides req/s and latency it reports the CPU time the proxy (or, for "direct", the
# backend) used per request, from /proc/PID/stat: on a shared machine throughput moves
# with whatever else runs, CPU per request much less.
#
# Build: release with thin LTO and one codegen unit, set here through cargo's
# CARGO_PROFILE_RELEASE_* variables so the workspace profile stays as it is. The backend
# is built the same way; it is the same binary behind every target. slipway-router runs
# on tokio's current-thread runtime (one thread, like nginx's one worker process).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR="${1:-10}"
ROUNDS="${ROUNDS:-5}"
# WORK_US=N: the backend burns N microseconds of CPU per request (an app doing work).
WORK_US="${WORK_US:-0}"
# The targets to run, in round order.
TARGETS="${TARGETS:-direct nginx slipway slipway-1k slipway-hyper}"
HOST_HDR="Host: bench.slipway.localhost"
P_BACKEND=18081 P_NGINX=18082 P_SLIPWAY=18083 P_SLIPWAY1K=18084 P_HYPER=18085

export CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
cargo build --release -p slipway-router --example bench_router --example bench_backend >&2
BIN=target/release/examples

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

cat > "$TMP/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # nginx closes a keep-alive connection after 1,000 requests by default (both sides);
    # slipway never does, so lift the limit to compare like with like.
    keepalive_requests 1000000;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi;
    scgi_temp_path $TMP/scgi;
    upstream backend {
        server 127.0.0.1:$P_BACKEND;
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

taskset -c 1 "$BIN/bench_backend" 127.0.0.1:$P_BACKEND "$WORK_US" & PIDS+=($!)
PID_BACKEND=$!
taskset -c 1 /usr/sbin/nginx -p "$TMP" -c "$TMP/nginx.conf" & PIDS+=($!)
PID_NGINX_MASTER=$!
taskset -c 1 "$BIN/bench_router" 127.0.0.1:$P_SLIPWAY 127.0.0.1:$P_BACKEND 0 current 2>/dev/null & PIDS+=($!)
PID_SLIPWAY=$!
taskset -c 1 "$BIN/bench_router" 127.0.0.1:$P_SLIPWAY1K 127.0.0.1:$P_BACKEND 1000 current 2>/dev/null & PIDS+=($!)
PID_SLIPWAY1K=$!
taskset -c 1 "$BIN/bench_router" 127.0.0.1:$P_HYPER 127.0.0.1:$P_BACKEND 0 current hyper 2>/dev/null & PIDS+=($!)
PID_HYPER=$!

for p in $P_BACKEND $P_NGINX $P_SLIPWAY $P_SLIPWAY1K $P_HYPER; do
    for _ in $(seq 100); do
        curl -fsS -o /dev/null -H "$HOST_HDR" "http://127.0.0.1:$p/" 2>/dev/null && break
        sleep 0.1
    done
    curl -fsS -o /dev/null -H "$HOST_HDR" "http://127.0.0.1:$p/" || { echo "port $p not answering" >&2; exit 1; }
done

PID_NGINX="$(pgrep -P "$PID_NGINX_MASTER" | head -1)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# utime + stime of a process, in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK="$(getconf CLK_TCK)"

# wrk latency text (e.g. 812.00us, 1.20ms, 1.01s) -> microseconds
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n
    }'
}

run() { # name port round pid
    local out c0 c1
    c0="$(cpu_ticks "$4")"
    out="$(taskset -c 0 wrk -t1 -c64 -d"${DUR}s" --latency -H "$HOST_HDR" "http://127.0.0.1:$2/")"
    c1="$(cpu_ticks "$4")"
    local rps p50 p99 errs n cpu
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    n="$(awk '/requests in/ {print $1}' <<<"$out")"
    cpu="$(awk -v a="$c0" -v b="$c1" -v n="$n" -v t="$TICK" 'BEGIN {printf "%.1f", (b - a) / t * 1e6 / n}')"
    p50="$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    p99="$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
    errs="$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')"
    echo "$1 $rps $p50 $p99 $cpu" >> "$TMP/results"
    printf 'round %s %-12s %10s req/s  p50 %8s us  p99 %8s us  cpu %6s us/req %s\n' "$3" "$1" "$rps" "$p50" "$p99" "$cpu" "$errs" >&2
}

for r in $(seq "$ROUNDS"); do
    for t in $TARGETS; do
        case "$t" in
            direct) run direct $P_BACKEND "$r" "$PID_BACKEND" ;;
            nginx) run nginx $P_NGINX "$r" "$PID_NGINX" ;;
            slipway) run slipway $P_SLIPWAY "$r" "$PID_SLIPWAY" ;;
            slipway-1k) run slipway-1k $P_SLIPWAY1K "$r" "$PID_SLIPWAY1K" ;;
            slipway-hyper) run slipway-hyper $P_HYPER "$r" "$PID_HYPER" ;;
            *) echo "unknown target $t" >&2; exit 2 ;;
        esac
    done
done

median() { # name column
    awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$TMP/results" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t1 -c64 -d${DUR}s --latency, client on CPU 0, backend and proxy on CPU 1; medians of $ROUNDS interleaved rounds; backend work ${WORK_US} us/request"
echo "(cpu us/req: CPU time of the proxy per request; for direct, of the backend)"
printf '%-14s %12s %10s %10s %12s\n' target "req/s" "p50 us" "p99 us" "cpu us/req"
for n in $TARGETS; do
    printf '%-14s %12s %10s %10s %12s\n' "$n" "$(median $n 2)" "$(median $n 3)" "$(median $n 4)" "$(median $n 5)"
done
rss() { awk '/^VmRSS/ {print $2 " KiB"}' "/proc/$1/status"; }
echo "resident memory after the runs (64 client connections each): backend $(rss "$PID_BACKEND"), nginx worker $(rss "$PID_NGINX"), slipway $(rss "$PID_SLIPWAY"), slipway-1k $(rss "$PID_SLIPWAY1K"), slipway-hyper $(rss "$PID_HYPER")"
# "a/b" ratio of two medians (column $3), printed only when both targets ran.
ratio() { # a b column label
    local x y
    x="$(median "$1" "$3")"; y="$(median "$2" "$3")"
    [ -n "$x" ] && [ -n "$y" ] && awk -v x="$x" -v y="$y" -v a="$1" -v b="$2" -v l="$4" \
        'BEGIN { if (y > 0) printf "%s %s/%s %.2f\n", l, a, b, x / y }'
    return 0
}
ratio slipway direct 2 req/s
ratio nginx direct 2 req/s
ratio slipway nginx 2 req/s
ratio slipway-1k nginx 2 req/s
ratio slipway-1k slipway 2 req/s
ratio slipway slipway-hyper 2 "req/s (fast path vs hyper on both sides)"
ratio slipway nginx 4 "p99 (below 1 is better)"
ratio slipway-1k nginx 4 "p99 (below 1 is better)"
