#!/usr/bin/env bash
# Issue 5: time to first byte of the first request to a scaled-to-zero service (stopped,
# and paused), beside the floor: a bare `docker start` (or `docker unpause`) of an
# equivalent container plus its first successful response.
#
# How to run (from anywhere, as root, dockerd running, `bash scripts/setup.sh` done):
#   bench/coldstart.sh            # 5 measured rounds after 1 warm-up round
#   ROUNDS=3 SCALER_TICK_MS=1000 SLIPWAY_BIN=target/release/slipway bench/coldstart.sh
#
# Method. examples/static-site is built once with plain `docker build` and deployed as an
# image-sourced service twice:
#   cold: {"scaling":{"min_size":0,"scale_to_zero_grace_s":1,"stable_window_s":6,
#          "panic_window_s":1},"health_check":{"interval_s":1}}       (idle_mode stop)
#   warm: the same plus "idle_mode":"pause"
# (stable_window_s 6, the minimum, because a cold wake enters panic mode, which holds the
# instance for a whole stable window: 60 s by default.) Each round waits until
# GET /v1/services/cold shows instances.ready == 0 and no container of it is left on the
# engine (warm: instances.paused >= 1 and ready == 0), waits 1 s more, then times
#   curl -s -o /dev/null -w '%{time_starttransfer}' -H 'Host: cold.slipway.localhost' \
#        http://127.0.0.1:<router>/
# The floors use one bare container of the same image, created with
# `docker create --init -p 127.0.0.1::8080`, each measurement after a 1 s pause like the
# Slipway side: `docker start` (CLI) + `docker port` + a curl loop (no sleep) until a 200;
# and the tight floor, bench/floor.py: Engine API start + inspect + raw-socket polling in
# one process, timed inside it (a curl or docker process costs 15-80 ms to start on this
# loaded 2-core machine, as much as the unpause itself). Paused: `docker unpause` (CLI,
# then curl loop; and floor.py) of a running bare container that was paused. Because
# Slipway's stop mode removes idle containers, its cold path creates a new one: floor.py run
# (Engine API create + start + first 200 of a new container) is that like-for-like floor.
# The scaler tick (--scaler-tick-ms, default 1000) only paces scale-down; the cold path does
# not wait for a tick: the router's wake goes straight to the scaler (desired 0 -> 1) and
# the deployer.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

build_slipway
MACHINE_BEFORE="$(machine_state)"
log "$MACHINE_BEFORE"
start_slipway

IMG="slipway-bench-$RUN_ID:site"
docker build -q --label "slipway.bench=$RUN_ID" -t "$IMG" "$ROOT/examples/static-site" > /dev/null
CONTENT="Hello from Slipway"
SCALING='"min_size":0,"scale_to_zero_grace_s":1,"stable_window_s":6,"panic_window_s":1'
for svc in cold warm; do
    mode=""
    [[ "$svc" == warm ]] && mode=',"idle_mode":"pause"'
    api POST /v1/services "{\"name\":\"$svc\",\"source\":{\"type\":\"image\",\"image\":\"$IMG\"},\"scaling\":{$SCALING$mode},\"health_check\":{\"interval_s\":1}}" |
        jq -e .name > /dev/null || die "create $svc failed"
done

command -v python3 > /dev/null || die "python3 is needed for the tight floor (bench/floor.py)"
# Bare floors: one stopped container (start) and one running, then paused (unpause).
CID_COLD="$(docker create --init --label "slipway.bench=$RUN_ID" -p 127.0.0.1::8080 "$IMG")"
CID_WARM="$(bare_run "$IMG")"
WARM_PORT="$(host_port "$CID_WARM")"
wait_direct_content "$WARM_PORT" "$CONTENT" 30 0.05 > /dev/null || die "bare warm container never answered"
docker pause "$CID_WARM" > /dev/null

svc_json() { api GET "/v1/services/$1"; }
# Bounded wait until the service is at zero: jq condition on the service view.
wait_state() { # svc jq-condition timeout_s
    local deadline=$((EPOCHSECONDS + $3))
    for _ in $(seq 1000); do
        if svc_json "$1" | jq -e "$2" > /dev/null 2>&1; then
            if [[ "$1" != cold ]] || [[ -z "$(docker ps -aq --filter "label=slipway.platform=$PLATFORM" --filter "label=slipway.service=$1")" ]]; then
                return 0
            fi
        fi
        (( EPOCHSECONDS < deadline )) || return 1
        sleep 0.2
    done
    return 1
}

# One timed request through the router; prints "<code> <ttfb ms> <t0 ms>".
timed_request() { # svc
    local t0 out
    t0="$(now_ms)"
    out="$(curl -s -o "$TMP/body" --max-time 60 -w '%{http_code} %{time_starttransfer}' \
        -H "Host: $1.slipway.localhost" "$ROUTER/")" || true
    grep -q "$CONTENT" "$TMP/body" || out="bad-body ${out#* }"
    awk -v o="$out" -v t0="$t0" 'BEGIN { split(o, a, " "); printf "%s %.1f %s\n", a[1], a[2] * 1000, t0 }'
}

# Bare start via CLI / API; prints ms until the first 200.
bare_start_cli() {
    local t0 t1 port
    sleep 1
    t0="$(now_ms)"
    docker start "$CID_COLD" > /dev/null
    port="$(host_port "$CID_COLD")"
    t1="$(wait_direct_content "$port" "$CONTENT" 30)" || die "bare start: no answer"
    ms_diff "$t1" "$t0"
}
# The tight floor: Engine API + raw-socket polling in one process (bench/floor.py).
bare_start_api() { sleep 1; python3 "$ROOT/bench/floor.py" start "$CID_COLD" "$CONTENT" 30; }
# Like Slipway's stop mode (which removes idle instances): create + start a new container.
bare_run_api() {
    local out
    sleep 1
    out="$(python3 "$ROOT/bench/floor.py" run "$IMG" "$CONTENT" 30 "slipway.bench=$RUN_ID")"
    docker rm -f "${out#* }" > /dev/null
    echo "${out%% *}"
}
# The same, with the configuration of the container Slipway made (saved in the warm-up
# round): the engine's floor for exactly that container.
bare_clone_api() {
    local out
    sleep 1
    out="$(python3 "$ROOT/bench/floor.py" clone "$TMP/slipway-container.json" "$CONTENT" 30 "slipway.bench=$RUN_ID")"
    docker rm -f "${out#* }" > /dev/null
    echo "${out%% *}"
}
bare_stop() { docker stop -t 5 "$CID_COLD" > /dev/null; }
bare_unpause_cli() {
    local t0 t1
    sleep 1
    t0="$(now_ms)"
    docker unpause "$CID_WARM" > /dev/null
    t1="$(wait_direct_content "$WARM_PORT" "$CONTENT" 30)" || die "bare unpause: no answer"
    ms_diff "$t1" "$t0"
}
bare_unpause_api() { sleep 1; python3 "$ROOT/bench/floor.py" unpause "$CID_WARM" "$CONTENT" 30; }

for r in $(seq 0 "$ROUNDS"); do
    # ------------- from zero (stopped)
    wait_state cold '.instances.ready == 0 and .instances.paused == 0 and .active_revision != null' 120 ||
        die "cold never scaled to zero"
    sleep 1
    after="$(last_event_id cold)"
    read -r code ttfb t0 < <(timed_request cold)
    [[ "$code" == 200 ]] || die "cold request answered $code"
    warm_ttfb="$(timed_request cold | awk '{ print $2 }')"
    events_tsv cold "$after" > "$TMP/ev"
    e_demand="$(event_ms "$TMP/ev" '^desired instances 0 -> 1')"
    e_ready="$(event_ms "$TMP/ev" '^started [0-9]+ instance')"
    cont="$(docker ps -q --filter "label=slipway.platform=$PLATFORM" --filter "label=slipway.service=cold" | head -1)"
    created="$(docker_time_ms "$(docker inspect -f '{{.Created}}' "$cont")")"
    started="$(docker_time_ms "$(docker inspect -f '{{.State.StartedAt}}' "$cont")")"
    [[ -s "$TMP/slipway-container.json" ]] || docker inspect "$cont" > "$TMP/slipway-container.json"
    b_cli="$(bare_start_cli)"; bare_stop
    b_api="$(bare_start_api)"; bare_stop
    b_run="$(bare_run_api)"
    b_same="$(bare_clone_api)"
    # direct TTFB of a started bare container, for the router's per-request share
    docker start "$CID_COLD" > /dev/null
    port="$(host_port "$CID_COLD")"
    wait_direct_content "$port" "$CONTENT" 30 > /dev/null || die "bare: no answer"
    b_direct="$(curl -s -o /dev/null -w '%{time_starttransfer}' "http://127.0.0.1:$port/" | awk '{ printf "%.1f", $1 * 1000 }')"
    bare_stop
    # ------------- from paused
    wait_state warm '.instances.ready == 0 and .instances.paused >= 1' 120 || die "warm never paused"
    sleep 1
    after="$(last_event_id warm)"
    read -r pcode pttfb pt0 < <(timed_request warm)
    [[ "$pcode" == 200 ]] || die "paused request answered $pcode"
    events_tsv warm "$after" > "$TMP/pev"
    pe_demand="$(event_ms "$TMP/pev" '^desired instances 0 -> 1')"
    pe_unpaused="$(event_ms "$TMP/pev" '^unpaused [0-9]+ instance')"
    bp_cli="$(bare_unpause_cli)"; docker pause "$CID_WARM" > /dev/null
    bp_api="$(bare_unpause_api)"; docker pause "$CID_WARM" > /dev/null

    line="cold ttfb $ttfb ms (demand +$(ms_diff "${e_demand:-0}" "$t0"), created +$(ms_diff "$created" "$t0"), started +$(ms_diff "$started" "$t0"), ready +$(ms_diff "${e_ready:-0}" "$t0")); bare start cli $b_cli api $b_api, create+start api $b_run, same config $b_same; warm $warm_ttfb, direct $b_direct | paused ttfb $pttfb (unpaused +$(ms_diff "${pe_unpaused:-0}" "$pt0")); bare unpause cli $bp_cli api $bp_api"
    if [[ "$r" == 0 ]]; then log "warm-up: $line (not counted)"; continue; fi
    log "round $r: $line"
    record s_cold "$ttfb"
    record s_demand "$(ms_diff "$e_demand" "$t0")"
    record s_created "$(ms_diff "$created" "$t0")"
    record s_started "$(ms_diff "$started" "$t0")"
    record s_ready "$(ms_diff "$e_ready" "$t0")"
    record s_warm "$warm_ttfb"
    record b_cli "$b_cli"
    record b_api "$b_api"
    record b_run "$b_run"
    record b_same "$b_same"
    record b_direct "$b_direct"
    record s_paused "$pttfb"
    record s_unpaused "$(ms_diff "$pe_unpaused" "$pt0")"
    record s_pdemand "$(ms_diff "$pe_demand" "$pt0")"
    record bp_cli "$bp_cli"
    record bp_api "$bp_api"
done

echo
echo "Issue 5: first request to a scaled-to-zero service (examples/static-site image),"
echo "scaler tick ${SCALER_TICK_MS} ms; medians of $ROUNDS rounds (min-max), ms"
echo "before: $MACHINE_BEFORE"
echo "after:  $(machine_state)"
pr() { printf '%-52s %8s %13s\n' "$1" "$(median "$2")" "($(minmax "$2"))"; }
echo "-- from zero (idle_mode stop)"
pr "slipway: TTFB of the first request" s_cold
pr "  request -> scaler demand 0 -> 1 (log)" s_demand
pr "  request -> container created (docker inspect)" s_created
pr "  request -> container started (docker inspect)" s_started
pr "  request -> 'started 1 instance' (healthy, routed)" s_ready
pr "bare: docker start + docker port + curl loop" b_cli
pr "bare, tight: Engine API start + inspect + first 200" b_api
echo "ratio slipway / bare CLI floor: $(ratio "$(median s_cold)" "$(median b_cli)")   slipway / bare API floor: $(ratio "$(median s_cold)" "$(median b_api)")   (aim: <= 1.20x)"
pr "bare, tight: Engine API create + start + first 200" b_run
echo "ratio slipway / bare create+start floor: $(ratio "$(median s_cold)" "$(median b_run)")"
pr "bare, tight: the same with Slipway's container config" b_same
over() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN { printf "%+.1f ms", a - b }'; }
echo "slipway over its floors: $(over s_cold b_api) over start of a stopped container, $(over s_cold b_run) over create+start, $(over s_cold b_same) over create+start of the same container (aim: <= +20 ms)"
echo "engine cost of Slipway's container config over a plain one: $(over b_same b_run)"
pr "reference: slipway TTFB of the next (warm) request" s_warm
pr "reference: bare TTFB direct to a running container" b_direct
echo "-- from paused (idle_mode pause)"
pr "slipway: TTFB of the first request" s_paused
pr "  request -> scaler demand 0 -> 1 (log)" s_pdemand
pr "  request -> 'unpaused 1 instance' (log)" s_unpaused
pr "bare: docker unpause + curl loop" bp_cli
pr "bare, tight: Engine API unpause + first 200" bp_api
echo "ratio slipway / bare CLI floor: $(ratio "$(median s_paused)" "$(median bp_cli)")   slipway / bare API floor: $(ratio "$(median s_paused)" "$(median bp_api)")   (aim: median < 50 ms -> $(median s_paused) ms)"
echo "slipway over a bare unpause: $(over s_paused bp_api) (aim: <= +5 ms)"
