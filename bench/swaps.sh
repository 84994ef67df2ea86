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

TITLE="$SWAPS swaps by $SWAPS_BY${FLOOR:+ on another service (the floor)}"
python3 "$ROOT/bench/swapreport.py" "$TMP/lat.tsv" "$SWAP_START" "$SWAP_END" "$TITLE" "$TMP/events.tsv"
