#!/usr/bin/env bash
# Issue 13: request latency during blue/green swaps against steady state, one run.
#
# One `slipway serve`, one busybox static-site service (health interval 1 s). A paced load
# of 200 GET/s (bench/swapload.py: 10 keep-alive connections, one request each per 50 ms,
# at fixed slots) runs through the router for STEADY_S seconds with no change (steady), then
# during SWAPS blue/green swaps made back to back (swaps), each waited for until it
# succeeded. Swaps are rollbacks between two kept revisions by default (no docker build
# competes for the two cores); SWAPS_BY=push makes them pushes (each a build).
# Prints, for both phases: requests, failures, p50, p99, max and requests over 250 ms,
# then the ratio p99(swaps) / p99(steady). The goal: at most 1.5x, and none over 250 ms.
#
#   bench/swaps.sh                   # 20 swaps by rollback
#   SWAPS_BY=push bench/swaps.sh     # 20 swaps by push
#   SWAPS=10 STEADY_S=15 SLIPWAY_BIN=target/release/slipway bench/swaps.sh
#   APP=backend bench/swaps.sh       # a keep-alive app (bench_backend) instead of busybox
#   LOAD_PREFIX="chrt -f 20" ROUTER_RT=10 bench/swaps.sh   # levers: real-time priorities
#   FLOOR=1 bench/swaps.sh           # the floor: the same swaps made on a second service
#                                    # that takes no traffic; the loaded one never changes
#
# FLOOR=1 measures what the engine's work alone (create, start, stop and remove a container
# on the same two cores) costs the serving path, with no route change under the load: the
# lowest ratio any platform that swaps containers on this engine and machine could reach.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

SVC=swaps
SWAPS="${SWAPS:-20}"
STEADY_S="${STEADY_S:-20}"
SWAPS_BY="${SWAPS_BY:-rollback}"
SWAP_SVC="$SVC" # the service the swaps are made on
[[ -n "${FLOOR:-}" ]] && SWAP_SVC="$SVC-other"
build_slipway
log "$(machine_state)"
start_slipway
if [[ -n "${ROUTER_RT:-}" ]]; then # a lever: the router's threads at SCHED_FIFO priority ROUTER_RT
    for t in /proc/"$SERVE_PID"/task/*; do
        [[ "$(cat "$t/comm")" == router-* ]] && chrt -f -p "$ROUTER_RT" "${t##*/}"
    done
    log "router threads at SCHED_FIFO $ROUTER_RT"
fi
for s in $(printf '%s\n' "$SVC" "$SWAP_SVC" | sort -u); do
    api POST /v1/services "{\"name\":\"$s\",\"health_check\":{\"interval_s\":1},\"network\":{\"drain_timeout_s\":10}}" |
        jq -e .name > /dev/null || die "create of $s failed"
done
SITE="$TMP/site"
if [[ "${APP:-site}" == backend ]]; then
    # A keep-alive app instead of busybox httpd (which closes every connection, so each
    # request is a new connection through the published port and a fork in the container):
    # router/examples/bench_backend, as in bench/product.sh, with a marker file that makes
    # each commit a new image. It answers "ok" whatever the marker.
    (cd "$ROOT" && cargo build --release -p slipway-router --example bench_backend >&2)
    mkdir -p "$SITE/public"
    cp "$ROOT/target/release/examples/bench_backend" "$SITE/"
    printf 'FROM debian:bookworm-slim\nCOPY bench_backend /bench_backend\nCOPY public/ /public/\nCMD ["/bench_backend", "0.0.0.0:8080"]\n' > "$SITE/Dockerfile"
    printf '<main>\n</main>\n' > "$SITE/public/index.html"
    (cd "$SITE" && git init -q -b main && git config user.email bench@localhost &&
        git config user.name bench && set_marker "$SITE" initial && git add -A && git commit -qm initial)
    FIRST=ok SECOND=ok
else
    make_site_repo "$SITE"
    FIRST=initial SECOND=second
fi
push() { # [service]: the site's HEAD to it
    (cd "$SITE" && SLIPWAY_TOKEN="$TOKEN" HOME="$TMP" git -c "credential.$API.helper=!$BIN git-credential --api $API --data-dir $DATA" \
        push -q -f "http://127.0.0.1:${API##*:}/git/${1:-$SWAP_SVC}.git" HEAD:main)
}
wait_done() { # deployment count to reach [service]
    for _ in $(seq 1200); do
        local n
        n="$(api GET "/v1/services/${2:-$SWAP_SVC}/deployments" | jq '[.[] | select(.state == "succeeded")] | length')"
        (( n >= $1 )) && return 0
        sleep 0.1
    done
    die "deployment $1 did not succeed"
}
push "$SVC"
wait_router_content "$SVC" "$FIRST" 120 > /dev/null || die "first push never served"
wait_done 1 "$SVC"
if [[ "$SWAP_SVC" != "$SVC" ]]; then
    push
    wait_router_content "$SWAP_SVC" "$FIRST" 120 > /dev/null || die "first push to $SWAP_SVC never served"
    wait_done 1
fi
commit_marker "$SITE" second
push
wait_router_content "$SWAP_SVC" "$SECOND" 120 > /dev/null || die "second push never served"
wait_done 2
done_count=2

STOP="$TMP/stop"
${LOAD_PREFIX:-} python3 "$ROOT/bench/swapload.py" 127.0.0.1 "$ROUTER_PORT" "$SVC" "$STOP" 900 > "$TMP/lat.tsv" 2> "$TMP/load.err" &
LOAD_PID=$!
sleep "$STEADY_S"
SWAP_START="$(python3 -c 'import time; print(time.time())')"
if [[ "$SWAPS_BY" == push ]]; then
    for i in $(seq "$SWAPS"); do
        commit_marker "$SITE" "swap-$i"
        push
        done_count=$((done_count + 1))
        wait_done "$done_count"
    done
else
    # Rollbacks alternate between the two kept revisions (images are reused). One Python
    # process makes them and polls, so the swap phase does not fork curl and jq ten times
    # a second, which the steady phase does not pay.
    python3 - "$API" "$TOKEN" "$SWAP_SVC" "$SWAPS" "$done_count" <<'PY' || die "rollbacks failed"
import json, sys, time, urllib.request
api, token, svc, swaps, done = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)
for i in range(swaps):
    active = call("GET", f"/v1/services/{svc}")["active_revision"]
    target = 2 if active == 1 else 1
    if "deployment" not in call("POST", f"/v1/services/{svc}/rollback", {"revision": target}):
        sys.exit(f"rollback {i + 1} refused")
    done += 1
    for _ in range(1200):
        deps = call("GET", f"/v1/services/{svc}/deployments")
        if sum(d["state"] == "succeeded" for d in deps) >= done:
            break
        time.sleep(0.1)
    else:
        sys.exit(f"deployment {done} did not succeed")
PY
fi
SWAP_END="$(python3 -c 'import time; print(time.time())')"
touch "$STOP"
wait "$LOAD_PID"
cat "$TMP/load.err" >&2
events_tsv "$SWAP_SVC" 0 > "$TMP/events.tsv"

python3 - "$TMP/lat.tsv" "$SWAP_START" "$SWAP_END" "$SWAPS" "$SWAPS_BY" "$TMP/events.tsv" "${FLOOR:+1}" <<'PY'
import bisect, collections, sys
path, s0, s1, n, by, floor = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[7] == "1"
events = [l.rstrip("\n").split("\t") for l in open(sys.argv[6]) if l.strip()]
events = [(int(at) / 1000, msg) for _, at, msg in events]
rows = [l.split("\t") for l in open(path) if l.strip()]
rows = [(float(t), float(lat), int(st)) for t, lat, st in rows]
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")
def phase(name, sel):
    lat = [l for _, l, _ in sel]
    fails = sum(1 for *_, st in sel if not 200 <= st < 300)
    slow = sum(1 for l in lat if l > 250)
    print(f"{name:8} requests {len(sel):6}  failures {fails:3}  p50 {pct(lat,50):7.2f} ms  p99 {pct(lat,99):7.2f} ms  max {max(lat) if lat else 0:8.2f} ms  over 250 ms {slow}")
    return pct(lat, 99)
steady = [r for r in rows if r[0] < s0]
swaps = [r for r in rows if s0 <= r[0] <= s1]
print(f"{n} swaps by {by}{' on another service (the floor)' if floor else ''}, {s1 - s0:.1f} s; 200 req/s offered")
a = phase("steady", steady)
b = phase("swaps", swaps)
print(f"p99 swaps / steady: {b / a:.2f}x (goal <= 1.5x, no request over 250 ms)")
# Where the slow ones fell: the deployment step (from the activity log) each slow request
# of the swap phase started in; slow = over twice the steady p99.
times = [t for t, _ in events]
steps = collections.Counter()
for t, lat, _ in swaps:
    if lat > 2 * a:
        i = bisect.bisect_right(times, t) - 1
        msg = events[i][1] if i >= 0 else ""
        step = msg.split(": ")[1] if msg.startswith("deployment ") and ": " in msg else msg[:30]
        steps[step] += 1
print(f"swap-phase requests over 2x steady p99 ({2 * a:.1f} ms), by the step they started in:",
      ", ".join(f"{k} {v}" for k, v in steps.most_common()) or "none")
PY
