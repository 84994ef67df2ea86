# shellcheck shell=bash
# Shared helpers for bench/push.sh, bench/deploy.sh and bench/coldstart.sh (sourced, not run).
#
# Each benchmark starts its own `slipway serve` (own --data-dir under /tmp, API and router on
# free 127.0.0.1 ports), and on exit kills it and removes every container and image it or
# the bare-Docker side made: Slipway's by the label slipway.platform=<platform_id>, the
# bare ones by the label slipway.bench=<run id>. Traffic goes to 127.0.0.1 only.
#
# Knobs (environment):
#   ROUNDS=5            measured rounds (one warm-up round is run first and not counted)
#   SLIPWAY_BIN=path    use this binary instead of `cargo build --release -p slipway`
#   SCALER_TICK_MS=1000 passed to `slipway serve --scaler-tick-ms`
#   KEEP=1              keep the temporary directory (logs, data dir) for inspection

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-5}"
SCALER_TICK_MS="${SCALER_TICK_MS:-1000}"
RUN_ID="b$$-$(date +%s)"
TMP="$(mktemp -d "/tmp/slipway-bench.XXXXXX")"
DATA="$TMP/data"
RESULTS="$TMP/results"
: > "$RESULTS"
SERVE_PID=""
PLATFORM=""
TOKEN=""
API=""
ROUTER=""
ROUTER_PORT=""

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Milliseconds since the epoch, with microsecond precision (bash 5: no fork).
now_ms() {
    local t="${EPOCHREALTIME/./}"
    printf '%d.%03d' "$((t / 1000))" "$((t % 1000))"
}
# a - b, in ms, 1 decimal
ms_diff() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

# Below the kernel's ephemeral range (32768-60999), where Docker's published ports land.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        if ! ss -Htan "sport = :$p" | grep -q .; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

build_slipway() {
    if [[ -n "${SLIPWAY_BIN:-}" ]]; then
        BIN="$(realpath "$SLIPWAY_BIN")"
    else
        (cd "$ROOT" && cargo build --release -p slipway >&2)
        # A private copy: a concurrent rebuild must not swap the binary under a running bench.
        cp "$ROOT/target/release/slipway" "$TMP/slipway"
        BIN="$TMP/slipway"
    fi
    [[ -x "$BIN" ]] || die "no slipway binary at $BIN"
}

start_slipway() {
    mkdir -p "$DATA"
    local api_port
    api_port="$(free_port)"
    ROUTER_PORT="$(free_port)"
    [[ "$api_port" != "$ROUTER_PORT" ]] || ROUTER_PORT="$(free_port)"
    API="http://127.0.0.1:$api_port"
    ROUTER="http://127.0.0.1:$ROUTER_PORT"
    "$BIN" serve --data-dir "$DATA" --api-addr "127.0.0.1:$api_port" \
        --router-addr "127.0.0.1:$ROUTER_PORT" --scaler-tick-ms "$SCALER_TICK_MS" \
        --dns-addr off --https-addr off ${SERVE_ARGS:-} \
        > "$TMP/serve.log" 2>&1 &
    SERVE_PID=$!
    local ok=""
    for _ in $(seq 150); do
        if curl -fsS -o /dev/null "$API/healthz" 2>/dev/null; then ok=1; break; fi
        kill -0 "$SERVE_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$ok" ]] || { tail -20 "$TMP/serve.log" >&2; die "slipway serve did not answer"; }
    TOKEN="$(cat "$DATA/token")"
    PLATFORM="$(api GET /v1/platform | jq -r .platform_id)"
    [[ -n "$PLATFORM" && "$PLATFORM" != null ]] || die "no platform id"
    log "slipway serve pid $SERVE_PID, API $API, router $ROUTER, platform $PLATFORM, data $DATA"
}

# api METHOD PATH [JSON]
api() {
    local args=(-sS --max-time 30 -X "$1" -H "Authorization: Bearer $TOKEN")
    if [[ $# -ge 3 ]]; then args+=(-H 'Content-Type: application/json' --data "$3"); fi
    curl "${args[@]}" "$API$2"
}

# GET through the router: prints "<status> <body>" (body on one line).
via_router() { # service [max-time]
    local out
    out="$(curl -s --max-time "${2:-5}" -w '\n%{http_code}' -H "Host: $1.slipway.localhost" "$ROUTER/" 2>/dev/null)" || true
    printf '%s %s' "${out##*$'\n'}" "$(tr -d '\n' <<<"${out%$'\n'*}")"
}

# Polls until the router serves `marker` for `service` with status 200; bounded by count and
# time. Prints the ms timestamp of the successful response's end. Tight: no sleep between
# attempts beyond `gap` (seconds).
wait_router_content() { # service marker timeout_s [gap_s]
    local deadline=$(( ${EPOCHSECONDS} + $3 )) r
    for _ in $(seq 20000); do
        r="$(via_router "$1" 2)"
        if [[ "$r" == 200\ * && "$r" == *"$2"* ]]; then now_ms; return 0; fi
        (( EPOCHSECONDS < deadline )) || return 1
        sleep "${4:-0.02}"
    done
    return 1
}

# Polls 127.0.0.1:port directly until a 200 containing `marker`; prints the ms timestamp.
wait_direct_content() { # port marker timeout_s [gap_s]
    local deadline=$(( ${EPOCHSECONDS} + $3 )) out
    for _ in $(seq 20000); do
        out="$(curl -s --max-time 2 -w '\n%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null)" || true
        if [[ "${out##*$'\n'}" == 200 && "$out" == *"$2"* ]]; then now_ms; return 0; fi
        (( EPOCHSECONDS < deadline )) || return 1
        [[ "${4:-0}" == 0 ]] || sleep "$4"
    done
    return 1
}

# Events of a service after event id `after`, as TSV: id at_ms message(first line)
events_tsv() { # service after
    api GET "/v1/services/$1/events?after=$2&limit=1000" |
        jq -r '.[] | [.id, .at_ms, (.message | split("\n")[0])] | @tsv'
}
last_event_id() { api GET "/v1/services/$1/events?limit=1000" | jq -r '[.[].id] | max // 0'; }

# First event at_ms (after id) whose message matches the ERE.
event_ms() { # tsv-file ERE
    awk -F'\t' -v re="$2" '$3 ~ re { print $2; exit }' "$1"
}

# Docker's RFC 3339 time -> ms since the epoch (with fraction).
docker_time_ms() {
    local ns
    ns="$(date -d "$1" +%s%N)"
    printf '%d.%03d' "$((ns / 1000000))" "$(((ns / 1000) % 1000))"
}

# Host port Docker published for container port 8080.
host_port() { docker port "$1" 8080/tcp | head -1 | sed 's/.*://'; }

# record NAME VALUE  (one line per round and metric)
record() { echo "$1 $2" >> "$RESULTS"; }
median() { # name
    awk -v n="$1" '$1 == n { print $2 }' "$RESULTS" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
count() { awk -v n="$1" '$1 == n' "$RESULTS" | wc -l; }
minmax() { # name -> "min-max"
    awk -v n="$1" '$1 == n { print $2 }' "$RESULTS" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s-%s", lo, hi; else print "-" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$SERVE_PID" ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill "$SERVE_PID"
        for _ in $(seq 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVE_PID" 2>/dev/null
        wait "$SERVE_PID" 2>/dev/null
    fi
    local ids
    if [[ -n "$PLATFORM" ]]; then
        ids="$(docker ps -aq --filter "label=slipway.platform=$PLATFORM")"
        [[ -z "$ids" ]] || docker rm -f $ids > /dev/null
        ids="$(docker images -q --filter "label=slipway.platform=$PLATFORM" | sort -u)"
        [[ -z "$ids" ]] || docker rmi -f $ids > /dev/null 2>&1
    fi
    ids="$(docker ps -aq --filter "label=slipway.bench=$RUN_ID")"
    [[ -z "$ids" ]] || docker rm -f $ids > /dev/null
    ids="$(docker images -q --filter "label=slipway.bench=$RUN_ID" | sort -u)"
    [[ -z "$ids" ]] || docker rmi -f $ids > /dev/null 2>&1
    if [[ -n "${KEEP:-}" ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}

machine_state() {
    echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/'), docker $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
}

# A git checkout of examples/static-site in $1 with index.html carrying a marker line.
make_site_repo() { # dir
    mkdir -p "$1"
    cp -r "$ROOT/examples/static-site/." "$1/"
    (cd "$1" && git init -q -b main && git config user.email bench@localhost &&
        git config user.name bench && set_marker "$1" "initial" && git add -A &&
        git commit -qm initial)
}

# Replaces (or adds) the marker line in public/index.html.
set_marker() { # dir marker
    local f="$1/public/index.html"
    if grep -q 'id="bench-marker"' "$f"; then
        sed -i "s|<p id=\"bench-marker\">.*</p>|<p id=\"bench-marker\">$2</p>|" "$f"
    else
        sed -i "s|</main>|  <p id=\"bench-marker\">$2</p>\n  </main>|" "$f"
    fi
}

commit_marker() { # dir marker
    set_marker "$1" "$2"
    (cd "$1" && git commit -qam "bench: $2")
}

# Bare Docker: build the tree in `dir` (its .dockerignore applies) as `tag`; labelled for
# cleanup. Prints nothing; the caller times it.
# (Engine 20.10 without buildx: the classic builder, the same one Slipway's API build uses.)
bare_build() { # dir tag
    docker build -q --label "slipway.bench=$RUN_ID" -t "$2" "$1" > /dev/null 2> "$TMP/build.err" ||
        { cat "$TMP/build.err" >&2; die "docker build failed"; }
}
bare_run() { # tag -> container id
    docker run -d --init --label "slipway.bench=$RUN_ID" -p 127.0.0.1::8080 "$1"
}
