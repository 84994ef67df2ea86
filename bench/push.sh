#!/usr/bin/env bash
# Issue 2: git push -> first 200 through the router showing the new content, beside a bare
# `docker build` + `docker run -d --init -p 127.0.0.1::8080` of the same tree -> first 200.
#
# How to run (from anywhere, as root, dockerd running, `bash scripts/setup.sh` done):
#   bench/push.sh                 # 5 measured rounds after 1 warm-up round
#   ROUNDS=3 bench/push.sh
#   SLIPWAY_BIN=target/release/slipway bench/push.sh   # skip the cargo build
#
# Method: examples/static-site in a temporary git repository. Each round changes one line
# of public/index.html (a marker paragraph), commits and times `git push` to the service's
# remote until `curl -H 'Host: push.slipway.localhost' http://127.0.0.1:<router>/` answers
# 200 with the new marker (polled every ~20 ms, bounded). The bare side copies the same
# tree with its own marker (so neither side gets the other's COPY layer from the build
# cache) and times `docker build -q` + `docker run -d --init -p 127.0.0.1::8080` +
# `docker port` until a 200 with its marker from 127.0.0.1:<port>. Both sides have a warm
# cache: base image present, a warm-up round (not counted) built the same Dockerfile. The
# service uses the default spec (health check TCP, interval 5 s: the first probes are
# spaced 50, 100, 200 ms..., so the interval hardly matters here). Medians of ROUNDS.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

SVC=push
build_slipway
log "$(machine_state)"
MACHINE_BEFORE="$(machine_state)"
start_slipway

api POST /v1/services "{\"name\":\"$SVC\"}" | jq -e .name > /dev/null || die "create failed"
SITE="$TMP/site"
BARE="$TMP/bare"
make_site_repo "$SITE"
cp -r "$SITE" "$BARE"
rm -rf "$BARE/.git"
(cd "$SITE" && git remote add slipway "http://slipway:$TOKEN@127.0.0.1:${API##*:}/git/$SVC.git")

for r in $(seq 0 "$ROUNDS"); do
    # --- Slipway
    mark="slip-$r-$RANDOM$RANDOM"
    commit_marker "$SITE" "$mark"
    after="$(last_event_id "$SVC")"
    t0="$(now_ms)"
    (cd "$SITE" && git push -q slipway main 2> "$TMP/push.err") || { cat "$TMP/push.err" >&2; die "git push failed"; }
    tp="$(now_ms)"
    t1="$(wait_router_content "$SVC" "$mark" 180)" || { events_tsv "$SVC" "$after" >&2; die "round $r: new content never served"; }
    events_tsv "$SVC" "$after" > "$TMP/ev"
    built="$(event_ms "$TMP/ev" '^build [0-9]+ succeeded')"
    total="$(ms_diff "$t1" "$t0")"
    # --- bare Docker, same tree, its own marker
    bmark="bare-$r-$RANDOM$RANDOM"
    set_marker "$BARE" "$bmark"
    b0="$(now_ms)"
    bare_build "$BARE" "slipway-bench-$RUN_ID:push-$r"
    b_built="$(now_ms)"
    cid="$(bare_run "slipway-bench-$RUN_ID:push-$r")"
    port="$(host_port "$cid")"
    b1="$(wait_direct_content "$port" "$bmark" 60)" || die "round $r: bare container never answered"
    docker rm -f "$cid" > /dev/null
    btotal="$(ms_diff "$b1" "$b0")"
    if [[ "$r" == 0 ]]; then
        log "warm-up: slipway ${total} ms, bare ${btotal} ms (not counted)"
        continue
    fi
    record s_total "$total"
    record s_push "$(ms_diff "$tp" "$t0")"
    record s_build "$(ms_diff "$built" "$t0")"
    record s_after "$(ms_diff "$t1" "$built")"
    record b_total "$btotal"
    record over "$(ms_diff "$total" "$btotal")"
    record b_build "$(ms_diff "$b_built" "$b0")"
    record b_after "$(ms_diff "$b1" "$b_built")"
    log "round $r: slipway ${total} ms (push $(ms_diff "$tp" "$t0"), built at +$(ms_diff "$built" "$t0")), bare ${btotal} ms (built at +$(ms_diff "$b_built" "$b0"))"
done

echo
echo "Issue 2: git push -> first 200 with the new content via the router, examples/static-site,"
echo "warm cache; medians of $ROUNDS rounds (min-max), ms"
echo "before: $MACHINE_BEFORE"
echo "after:  $(machine_state)"
printf '%-34s %18s %18s %8s\n' "" "slipway" "bare docker" "ratio"
row() { # label slipway-metric bare-metric
    local s b
    s="$(median "$2")"
    b="$( [[ -n "$3" ]] && median "$3" || echo -)"
    printf '%-34s %8s %9s %8s %9s %8s\n' "$1" "$s" "($(minmax "$2"))" "$b" "$( [[ -n "$3" ]] && echo "($(minmax "$3"))" || echo)" "$(ratio "$s" "$b")"
}
row "git push returned" s_push ""
row "image built (from t0)" s_build b_build
row "built -> first new 200" s_after b_after
row "TOTAL push -> first new 200" s_total b_total
echo "Slipway's overhead over bare docker build + run + first 200 (per round, median): $(median over) ms ($(minmax over)) (aim: <= 1000 ms)"
