#!/usr/bin/env bash
# Issue 4: push -> the new version serving 100% of traffic, split into build, start,
# health check and swap(+drain) from the activity log, beside a bare docker build + run of
# the same tree; and rollback -> the old content serving.
#
# How to run (from anywhere, as root, dockerd running, `bash scripts/setup.sh` done):
#   bench/deploy.sh               # 5 measured rounds after 1 warm-up round
#   ROUNDS=3 SLIPWAY_BIN=target/release/slipway bench/deploy.sh
#
# The service spec sets health_check.interval_s = 1 (default 5) so the interval does not
# dominate: until its first pass a new instance is probed at 50, 100, 200 ms... capped at
# the interval. healthy_threshold stays 1, drain_timeout_s 30 (idle instances drain at
# once).
#
# Phases, from GET /v1/services/{name}/events (at_ms) plus the new container's
# State.StartedAt (docker inspect; the log writes "starting" and "health_checking" back to
# back before the container is created, so the log alone cannot separate start from health
# check):
#   push      t0 (before `git push`) -> "push to main: commit X queued for build"
#   build     queued -> "build N succeeded"  (includes "build N ... started")
#   start     "deployment D (revision R): starting" -> container StartedAt
#   health    StartedAt -> "...: switching_traffic"
#   swap      "switching_traffic" -> "draining" (route table swap)
#   drain     "draining" -> "succeeded" (old instance drained, stopped, removed)
#   TOTAL     t0 -> "succeeded"  (100% of traffic on the new version, old one gone)
# and, measured by the client, t0 -> first 200 with the new content via the router.
# Rollback: `slipway rollback <svc> <previous revision>` -> first 200 with the previous
# content via the router, and -> "succeeded" in the log; the bare floor is `docker run -d`
# of the previous (kept) image until its first 200.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

SVC=deploy
build_slipway
MACHINE_BEFORE="$(machine_state)"
log "$MACHINE_BEFORE"
start_slipway

api POST /v1/services "{\"name\":\"$SVC\",\"health_check\":{\"interval_s\":1}}" | jq -e .name > /dev/null ||
    die "create failed"
SITE="$TMP/site"
BARE="$TMP/bare"
make_site_repo "$SITE"
cp -r "$SITE" "$BARE"
rm -rf "$BARE/.git"
(cd "$SITE" && git remote add slipway "http://slipway:$TOKEN@127.0.0.1:${API##*:}/git/$SVC.git")

# Waits for an event matching ERE after id; bounded.
wait_event() { # after ERE timeout_s
    local deadline=$((EPOCHSECONDS + $3))
    for _ in $(seq 2000); do
        events_tsv "$SVC" "$1" > "$TMP/ev"
        if awk -F'\t' -v re="$2" '$3 ~ re { f = 1 } END { exit !f }' "$TMP/ev"; then
            return 0
        fi
        (( EPOCHSECONDS < deadline )) || return 1
        sleep 0.1
    done
    return 1
}

prev_rev="" prev_mark="" prev_bare="" prev_bmark=""
for r in $(seq 0 "$ROUNDS"); do
    # ---------------- push -> 100%
    mark="slip-$r-$RANDOM$RANDOM"
    commit_marker "$SITE" "$mark"
    after="$(last_event_id "$SVC")"
    t0="$(now_ms)"
    (cd "$SITE" && git push -q slipway main 2> "$TMP/push.err") || { cat "$TMP/push.err" >&2; die "git push failed"; }
    tfirst="$(wait_router_content "$SVC" "$mark" 180)" || { events_tsv "$SVC" "$after" >&2; die "round $r: new content never served"; }
    wait_event "$after" '^build [0-9]+ succeeded' 60 || die "no build success event"
    rev="$(awk -F'\t' '$3 ~ /^build [0-9]+ succeeded/ { match($3, /revision [0-9]+/); print substr($3, RSTART + 9, RLENGTH - 9); exit }' "$TMP/ev")"
    dep="$(awk -F'\t' '$3 ~ /^build [0-9]+ succeeded/ { match($3, /deployment [0-9]+/); print substr($3, RSTART + 11, RLENGTH - 11); exit }' "$TMP/ev")"
    wait_event "$after" "^deployment $dep [(]revision ${rev}[)]: (succeeded|failed)" 120 || die "deployment $dep never finished"
    e_queued="$(event_ms "$TMP/ev" '^push to .*queued for build')"
    e_built="$(event_ms "$TMP/ev" '^build [0-9]+ succeeded')"
    e_start="$(event_ms "$TMP/ev" "^deployment $dep [(]revision ${rev}[)]: starting")"
    e_hc="$(event_ms "$TMP/ev" "^deployment $dep [(]revision ${rev}[)]: health_checking")"
    e_switch="$(event_ms "$TMP/ev" "^deployment $dep [(]revision ${rev}[)]: switching_traffic")"
    e_drain="$(event_ms "$TMP/ev" "^deployment $dep [(]revision ${rev}[)]: draining")"
    e_done="$(event_ms "$TMP/ev" "^deployment $dep [(]revision ${rev}[)]: succeeded")"
    [[ -n "$e_done" ]] || { cat "$TMP/ev" >&2; die "deployment $dep did not succeed"; }
    cont="$(docker ps -q --filter "label=slipway.platform=$PLATFORM" --filter "label=slipway.revision=$rev" | head -1)"
    started="$(docker_time_ms "$(docker inspect -f '{{.State.StartedAt}}' "$cont")")"
    # ---------------- bare docker build + run of the same tree
    bmark="bare-$r-$RANDOM$RANDOM"
    set_marker "$BARE" "$bmark"
    btag="slipway-bench-$RUN_ID:deploy-$r"
    b0="$(now_ms)"
    bare_build "$BARE" "$btag"
    b_built="$(now_ms)"
    cid="$(bare_run "$btag")"
    b_run="$(now_ms)"
    port="$(host_port "$cid")"
    b1="$(wait_direct_content "$port" "$bmark" 60)" || die "round $r: bare container never answered"
    docker rm -f "$cid" > /dev/null

    if [[ "$r" -gt 0 ]]; then
        record s_push "$(ms_diff "$e_queued" "$t0")"
        record s_build "$(ms_diff "$e_built" "$e_queued")"
        record s_wait "$(ms_diff "$e_start" "$e_built")"
        record s_start "$(ms_diff "$started" "$e_start")"
        record s_health "$(ms_diff "$e_switch" "$started")"
        record s_swap "$(ms_diff "$e_drain" "$e_switch")"
        record s_drain "$(ms_diff "$e_done" "$e_drain")"
        record s_total "$(ms_diff "$e_done" "$t0")"
        record s_first "$(ms_diff "$tfirst" "$t0")"
        record s_hc_gap "$(ms_diff "$e_hc" "$e_start")"
        record b_build "$(ms_diff "$b_built" "$b0")"
        record b_start "$(ms_diff "$b_run" "$b_built")"
        record b_health "$(ms_diff "$b1" "$b_run")"
        record b_total "$(ms_diff "$b1" "$b0")"
        log "round $r: rev $rev dep $dep: total $(ms_diff "$e_done" "$t0") ms (first new 200 at $(ms_diff "$tfirst" "$t0")); build $(ms_diff "$e_built" "$e_queued"), start $(ms_diff "$started" "$e_start"), health $(ms_diff "$e_switch" "$started"), swap+drain $(ms_diff "$e_done" "$e_switch"); bare $(ms_diff "$b1" "$b0")"
    else
        log "warm-up: rev $rev total $(ms_diff "$e_done" "$t0") ms, bare $(ms_diff "$b1" "$b0") ms (not counted)"
    fi

    # ---------------- rollback to the previous revision -> its content serves
    if [[ -n "$prev_rev" ]]; then
        after="$(last_event_id "$SVC")"
        t0="$(now_ms)"
        out="$(SLIPWAY_TOKEN="$TOKEN" "$BIN" rollback "$SVC" "$prev_rev" --no-wait --api "$API")"
        tcli="$(now_ms)"
        rdep="$(sed -n 's/.*(deployment \([0-9]*\)).*/\1/p' <<<"$out")"
        [[ -n "$rdep" ]] || die "rollback said: $out"
        told="$(wait_router_content "$SVC" "$prev_mark" 60)" || die "rollback: old content never served"
        wait_event "$after" "^deployment $rdep [(]revision ${prev_rev}[)]: (succeeded|failed)" 60 || die "rollback deployment never finished"
        r_done="$(event_ms "$TMP/ev" "^deployment $rdep [(]revision ${prev_rev}[)]: succeeded")"
        r_switch="$(event_ms "$TMP/ev" "^deployment $rdep [(]revision ${prev_rev}[)]: switching_traffic")"
        r_start="$(event_ms "$TMP/ev" "^deployment $rdep [(]revision ${prev_rev}[)]: starting")"
        [[ -n "$r_done" ]] || { cat "$TMP/ev" >&2; die "rollback deployment $rdep did not succeed"; }
        # bare floor: run the previous image again until it answers
        rb0="$(now_ms)"
        cid="$(bare_run "$prev_bare")"
        port="$(host_port "$cid")"
        rb1="$(wait_direct_content "$port" "$prev_bmark" 60)" || die "bare rollback never answered"
        docker rm -f "$cid" > /dev/null
        if [[ "$r" -gt 0 ]]; then
            record r_cli "$(ms_diff "$tcli" "$t0")"
            record r_first "$(ms_diff "$told" "$t0")"
            record r_switch "$(ms_diff "$r_switch" "$t0")"
            record r_done "$(ms_diff "$r_done" "$t0")"
            record r_start_to_switch "$(ms_diff "$r_switch" "$r_start")"
            record rb_first "$(ms_diff "$rb1" "$rb0")"
            log "round $r: rollback to rev $prev_rev: old content at $(ms_diff "$told" "$t0") ms, succeeded at $(ms_diff "$r_done" "$t0") ms; bare run of the old image $(ms_diff "$rb1" "$rb0") ms"
        fi
    fi
    # The next round rolls back to this round's revision (the newest before its push that
    # served; older ones get pruned past keep_revisions).
    prev_rev="$rev" prev_mark="$mark" prev_bare="$btag" prev_bmark="$bmark"
done

echo
echo "Issue 4: push -> new version serving 100% of traffic, examples/static-site, warm cache,"
echo "health_check.interval_s=1; medians of $ROUNDS rounds (min-max), ms"
echo "before: $MACHINE_BEFORE"
echo "after:  $(machine_state)"
printf '%-40s %18s %18s %8s\n' "phase" "slipway" "bare docker" "ratio"
row() { # label slipway-metric bare-metric
    local s b=- bm=""
    s="$(median "$2")"
    if [[ -n "$3" ]]; then b="$(median "$3")"; bm="($(minmax "$3"))"; fi
    printf '%-40s %8s %9s %8s %9s %8s\n' "$1" "$s" "($(minmax "$2"))" "$b" "$bm" "$(ratio "$s" "$b")"
}
row "push (t0 -> queued)" s_push ""
row "build (queued -> succeeded)" s_build b_build
row "wait (built -> deployment starting)" s_wait ""
row "start (starting -> container started)" s_start b_start
row "health (started -> switching_traffic)" s_health b_health
row "swap (switching_traffic -> draining)" s_swap ""
row "drain (draining -> succeeded)" s_drain ""
row "TOTAL push -> 100% (succeeded)" s_total b_total
row "push -> first 200 with new content" s_first b_total
echo "  (bare: start = docker run -d returned; health = docker port + first 200 polled)"
echo "  (log gap starting -> health_checking: median $(median s_hc_gap) ms: health_checking is written once the containers have started)"
echo
echo "Rollback to the previous revision (slipway rollback <svc> <rev>), ms"
printf '%-40s %18s %18s %8s\n' "" "slipway" "bare docker run" "ratio"
row "CLI returned" r_cli ""
row "starting -> switching_traffic" r_start_to_switch ""
row "-> first 200 with the old content" r_first rb_first
row "-> succeeded (old version 100%)" r_done ""
awk -v m="$(median r_first)" 'BEGIN { printf "aim: rollback under 5000 ms -> median %s ms (%.2fx of the aim)\n", m, m / 5000 }'
