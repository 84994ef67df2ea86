#!/usr/bin/env bash
# Smoke test of the base images and examples with the real engine: build each
# example, run it as Slipway would (--init, PORT set, published on 127.0.0.1 only),
# check its answer, stop it (timed) and remove it. Needs scripts/setup.sh first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DOCKER_BUILDKIT=0
log() { printf '[check-examples] %s\n' "$*"; }
die() { printf '[check-examples] FAIL: %s\n' "$*" >&2; exit 1; }

cids=()
cleanup() { [ "${#cids[@]}" -eq 0 ] || docker rm -f "${cids[@]}" >/dev/null 2>&1 || true; }
trap cleanup EXIT

check() { # example path expected-text [docker run args...]
    local ex=$1 path=$2 want=$3 tag="slipway-example/$1:check" cid port body t0
    shift 3
    log "$ex: docker build"
    docker build -q -t "$tag" "examples/$ex" >/dev/null 2>"/tmp/check-$ex.build.log" \
        || { cat "/tmp/check-$ex.build.log" >&2; die "$ex: build failed"; }
    cid=$(docker run -d --init -p 127.0.0.1::8080 -e PORT=8080 "$@" "$tag")
    cids+=("$cid")
    port=$(docker port "$cid" 8080/tcp | head -n1 | sed 's/.*://')
    body=""
    for _ in $(seq 1 50); do
        body=$(curl -fsS --max-time 2 "http://127.0.0.1:$port$path" 2>/dev/null) && break
        sleep 0.1
    done
    grep -qF "$want" <<<"$body" || { docker logs "$cid" >&2 || true; die "$ex: GET $path lacks '$want' (got: ${body:0:200})"; }
    t0=$(date +%s%N)
    docker stop -t 10 "$cid" >/dev/null
    log "$ex: OK (GET $path on 127.0.0.1:$port has '$want'; stop took $((($(date +%s%N) - t0) / 1000000)) ms, exit $(docker inspect -f '{{.State.ExitCode}}' "$cid"))"
    docker rm "$cid" >/dev/null
    docker image rm "$tag" >/dev/null
}

check static-site / '<h1>Hello from Slipway</h1>'
check python-app / 'Hello from Python on Slipway'
check python-app /healthz 'ok'
check python-app / 'Custom greeting' -e GREETING='Custom greeting'
log "all examples answer"
