#!/usr/bin/env bash
# Debian's openssh-server, for the test of git sources over ssh (slipway/tests/sources.rs
# runs its own sshd on a 127.0.0.1 port with its own host key and configuration). The
# package's own service is not started: a policy-rc.d refuses it during the install, so
# nothing listens on port 22 afterwards. Idempotent; root or sudo.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { echo "[install-sshd] $*"; }
if [ -x /usr/sbin/sshd ] && command -v ssh-keygen > /dev/null; then
    log "sshd already installed"
    exit 0
fi
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d > /dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
fi
trap '[ -z "$made_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
log "installing openssh-server (its service is not started)"
$SUDO apt-get update -qq || true
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    openssh-server openssh-client
[ -x /usr/sbin/sshd ] || { echo "[install-sshd] /usr/sbin/sshd missing after the install" >&2; exit 1; }
