#!/usr/bin/env bash
# Install the container engine and host tools Slipway needs, and make sure a
# Docker engine answers on /var/run/docker.sock.
#
# Idempotent: packages are installed only when missing, and dockerd is started
# only when `docker info` does not answer. A second run takes well under a second.
#
# Environment:
#   SLIPWAY_DOCKERD_LOG      dockerd log file      (default /var/log/dockerd.log)
#   SLIPWAY_DOCKERD_WAIT     seconds to wait       (default 60)
#   SLIPWAY_DOCKERD_ARGS     dockerd flags         (default --userland-proxy=false)
#   SLIPWAY_DOCKERD_NICE     dockerd's nice value  (default 10)
#
# Why these defaults (docs/BENCHMARKS.md, "Latency during swaps"):
# - --userland-proxy=false: ports published on 127.0.0.1 reach the container by the
#   kernel's NAT instead of a docker-proxy process per port, a user-space copy on every
#   request and a process started with every container.
# - nice 10: the engine (dockerd, containerd, runc) yields the CPU to serving while it
#   creates, starts, stops and removes containers. Containers are not slowed by it: each
#   runs in its own cpu cgroup, which competes by its shares, not by this nice value.
set -euo pipefail

log() { printf '[install-engine] %s\n' "$*"; }
die() { printf '[install-engine] ERROR: %s\n' "$*" >&2; exit 1; }

DOCKERD_LOG=${SLIPWAY_DOCKERD_LOG:-/var/log/dockerd.log}
DOCKERD_WAIT=${SLIPWAY_DOCKERD_WAIT:-60}
DOCKER_SOCK=/var/run/docker.sock

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or with sudo available)"
    SUDO="sudo"
fi

# ---------------------------------------------------------------- packages
PACKAGES=(docker.io busybox-static debootstrap git wrk nginx-light dnsutils curl iproute2 ca-certificates openssl libssl-dev pkg-config docker-registry pebble)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || die "apt-get update failed"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" || die "apt-get install ${missing[*]} failed"
else
    log "packages already installed: ${PACKAGES[*]}"
fi

command -v dockerd >/dev/null 2>&1 || die "dockerd not found on PATH after installing docker.io"
command -v docker >/dev/null 2>&1 || die "docker CLI not found on PATH after installing docker.io"

# ---------------------------------------------------------------- engine
engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if engine_answers; then
    log "docker engine already answering on $DOCKER_SOCK ($(docker version -f '{{.Server.Version}} API {{.Server.APIVersion}}' 2>/dev/null || echo '?'))"
    exit 0
fi

dockerd_pid() {
    local pid
    if [ -s /var/run/docker.pid ]; then
        pid=$(cat /var/run/docker.pid 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
            && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
            echo "$pid"
            return 0
        fi
    fi
    return 1
}

if pid=$(dockerd_pid); then
    log "dockerd (pid $pid) is running but not answering yet; waiting for it"
else
    # A dockerd killed hard leaves pid files behind, and the next one refuses to start.
    for f in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
        if [ -e "$f" ]; then
            p=$(cat "$f" 2>/dev/null || true)
            if [ -z "$p" ] || ! kill -0 "$p" 2>/dev/null; then
                log "removing stale pid file $f"
                $SUDO rm -f "$f"
            fi
        fi
    done
    # Containers need forwarding for outbound traffic (pip install in builds).
    if [ "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo 1)" != "1" ]; then
        $SUDO sysctl -q -w net.ipv4.ip_forward=1 || log "warning: could not enable net.ipv4.ip_forward"
    fi
    $SUDO mkdir -p "$(dirname "$DOCKERD_LOG")"
    log "starting dockerd in the background (log: $DOCKERD_LOG)"
    # setsid + nohup: dockerd outlives this script and its process group.
    # shellcheck disable=SC2086
    $SUDO setsid nohup nice -n "${SLIPWAY_DOCKERD_NICE:-10}" \
        dockerd ${SLIPWAY_DOCKERD_ARGS---userland-proxy=false} >>"$DOCKERD_LOG" 2>&1 </dev/null &
    started_pid=$!
    disown "$started_pid" 2>/dev/null || true
fi

deadline=$((SECONDS + DOCKERD_WAIT))
until engine_answers; do
    if [ -n "${started_pid:-}" ] && ! kill -0 "$started_pid" 2>/dev/null && ! dockerd_pid >/dev/null; then
        log "dockerd exited during start-up; last lines of $DOCKERD_LOG:"
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        die "dockerd exited before answering on $DOCKER_SOCK"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        log "last lines of $DOCKERD_LOG:"
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        die "docker engine did not answer on $DOCKER_SOCK within ${DOCKERD_WAIT}s (see $DOCKERD_LOG)"
    fi
    sleep 0.5
done

log "docker engine is up after ~$((DOCKERD_WAIT - (deadline - SECONDS)))s: $(docker version -f '{{.Server.Version}} API {{.Server.APIVersion}}' 2>/dev/null || echo '?')"
