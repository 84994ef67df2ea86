#!/usr/bin/env bash
# Build Slipway's base images locally: this host reaches no container registry,
# so the images that real Dockerfiles name in FROM are made here.
#
#   busybox  Debian's busybox-static in FROM scratch, with /etc/passwd and /etc/group
#            tags: busybox:latest busybox:1 slipway/busybox:latest
#   python   debootstrap'd Debian bookworm (minbase + python3, pip, ca-certificates)
#            tags: python:3.11-slim python:3.11 python:3 python:latest
#                  public.ecr.aws/docker/library/python:3.11-slim
#                  debian:bookworm-slim debian:bookworm slipway/python:3.11
#
# Idempotent: every image carries the label org.slipway.recipe=<hash of its recipe>
# (the recipe functions below, their inputs, the busybox binary, the host CA bundle).
# An image whose label matches is not rebuilt; only missing tags are re-applied.
# The python root filesystem is cached as a tarball under $SLIPWAY_CACHE_DIR, so a
# re-run after `docker system prune -a` only re-imports it (seconds, not minutes).
#
# Environment:
#   SLIPWAY_CACHE_DIR       cache directory           (default /var/cache/slipway)
#   SLIPWAY_DEBIAN_MIRROR   Debian mirror             (default http://deb.debian.org/debian)
#   SLIPWAY_FORCE_REBUILD   1 = rebuild even if the recipe label matches
#   SSL_CERT_FILE           CA bundle to trust inside the python image
#                           (default /etc/ssl/certs/ca-certificates.crt)
set -euo pipefail

log() { printf '[base-images] %s\n' "$*"; }
die() { printf '[base-images] ERROR: %s\n' "$*" >&2; exit 1; }

CACHE_DIR=${SLIPWAY_CACHE_DIR:-/var/cache/slipway}
MIRROR=${SLIPWAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PY_INCLUDE=python3,python3-pip,python-is-python3,ca-certificates
HOST_CA_BUNDLE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
BUSYBOX_BIN=${SLIPWAY_BUSYBOX_BIN:-/bin/busybox}
LABEL_KEY=org.slipway.recipe
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUSYBOX_EXTRAS="$SCRIPT_DIR/images/busybox" # adduser, addgroup (not in Debian's busybox)
FORCE=${SLIPWAY_FORCE_REBUILD:-0}

BUSYBOX_TAGS=(busybox:latest busybox:1 slipway/busybox:latest)
PYTHON_TAGS=(slipway/python:3.11 python:3.11-slim python:3.11 python:3 python:latest
    public.ecr.aws/docker/library/python:3.11-slim debian:bookworm-slim debian:bookworm)

# The CLI on this machine may be newer than the engine and has no buildx plugin:
# ask for the classic builder explicitly rather than fail on "buildx missing".
export DOCKER_BUILDKIT=0

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot need it)"
timeout 10 docker info >/dev/null 2>&1 || die "docker engine not answering; run scripts/install-engine.sh first"
if [ ! -x "$BUSYBOX_EXTRAS/adduser" ] || [ ! -x "$BUSYBOX_EXTRAS/addgroup" ]; then
    die "$BUSYBOX_EXTRAS/adduser and addgroup missing"
fi
[ -x "$BUSYBOX_BIN" ] || die "$BUSYBOX_BIN missing (apt-get install busybox-static)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap missing (apt-get install debootstrap)"
[ -r "$HOST_CA_BUNDLE" ] || die "CA bundle $HOST_CA_BUNDLE not readable (set SSL_CERT_FILE)"

mkdir -p "$CACHE_DIR"
# Two setup runs at once (CI and a start command, say) must not debootstrap into
# the same directory: serialise on a lock.
exec 9>"$CACHE_DIR/base-images.lock"
if ! flock -n 9; then
    log "another base-images.sh holds $CACHE_DIR/base-images.lock; waiting (up to 15 min)"
    flock -w 900 9 || die "timed out waiting for $CACHE_DIR/base-images.lock"
fi

WORK=$(mktemp -d "$CACHE_DIR/work.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

sha() { sha256sum | cut -c1-16; }

image_recipe() { # image -> its recipe label, or empty
    docker image inspect -f "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$1" 2>/dev/null || true
}

drop_old() { # image-id: remove a replaced image once no tag or container uses it
    [ -n "$1" ] || return 0
    if [ -z "$(docker image inspect -f '{{join .RepoTags " "}}' "$1" 2>/dev/null)" ]; then
        if docker image rm "$1" >/dev/null 2>&1; then
            log "  removed superseded image ${1:7:12}"
        fi
    fi
}

ensure_tags() { # source-image tag...
    local src=$1 want id t
    shift
    want=$(docker image inspect -f '{{.Id}}' "$src")
    for t in "$@"; do
        id=$(docker image inspect -f '{{.Id}}' "$t" 2>/dev/null || true)
        if [ "$id" != "$want" ]; then
            docker tag "$src" "$t"
            log "  tagged $t"
        fi
    done
}

# ====================================================================== busybox

busybox_passwd() {
    cat <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
}

busybox_group() {
    cat <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
wheel:x:10:root
www-data:x:33:
users:x:100:
app:x:1000:
nogroup:x:65534:
EOF
}

busybox_shadow() {
    local u
    busybox_passwd | while IFS=: read -r u _; do printf '%s:*:19000:0:99999:7:::\n' "$u"; done
}

make_busybox_context() { # dir
    local ctx=$1 root=$1/rootfs applet
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/app,var/www,var/spool/cron/crontabs,dev,proc,sys}
    cp "$BUSYBOX_BIN" "$root/bin/busybox"
    chmod 0755 "$root/bin/busybox"
    # Like the upstream busybox image every applet lives in /bin; the paths busybox
    # itself knows (/usr/bin/env for shebangs, /sbin/...) are symlinks too.
    for applet in $("$BUSYBOX_BIN" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    while read -r applet; do
        case $applet in bin/*|linuxrc|"") continue ;; esac
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done < <("$BUSYBOX_BIN" --list-full)
    install -m 0755 "$BUSYBOX_EXTRAS/adduser" "$BUSYBOX_EXTRAS/addgroup" "$root/bin/"
    busybox_passwd >"$root/etc/passwd"
    busybox_group >"$root/etc/group"
    busybox_shadow >"$root/etc/shadow"
    chmod 0640 "$root/etc/shadow"
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root"
    chown 1000:1000 "$root/home/app"
    # ADD of a local tarball keeps owners (COPY would make everything root's).
    tar --numeric-owner -C "$root" -cf "$ctx/rootfs.tar" .
    rm -rf "$root"
    cat >"$ctx/Dockerfile" <<EOF
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL $LABEL_KEY=$BUSYBOX_RECIPE org.slipway.base=busybox
CMD ["sh"]
EOF
}

BUSYBOX_RECIPE=$({
    echo "busybox recipe v1"
    sha256sum <"$BUSYBOX_BIN"
    cat "$BUSYBOX_EXTRAS/adduser" "$BUSYBOX_EXTRAS/addgroup"
    declare -f busybox_passwd busybox_group busybox_shadow make_busybox_context
} | sha)

build_busybox() {
    local have old
    have=$(image_recipe slipway/busybox:latest)
    old=$(docker image inspect -f '{{.Id}}' slipway/busybox:latest 2>/dev/null || true)
    if [ "$FORCE" != 1 ] && [ "$have" = "$BUSYBOX_RECIPE" ]; then
        log "busybox: slipway/busybox:latest is current (recipe $BUSYBOX_RECIPE)"
    else
        log "busybox: building from $BUSYBOX_BIN (recipe $BUSYBOX_RECIPE${have:+, was $have})"
        make_busybox_context "$WORK/busybox"
        if ! docker build --no-cache --force-rm -t slipway/busybox:latest "$WORK/busybox" >"$WORK/build.log" 2>&1; then
            cat "$WORK/build.log" >&2
            die "docker build of busybox failed"
        fi
        log "busybox: built $(docker image inspect -f '{{.Id}}' slipway/busybox:latest | cut -c1-19)"
    fi
    ensure_tags slipway/busybox:latest "${BUSYBOX_TAGS[@]}"
    [ "$old" = "$(docker image inspect -f '{{.Id}}' slipway/busybox:latest)" ] || drop_old "$old"
}

# ====================================================================== python

python_sources() {
    cat <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

# Certificates in the host bundle that the image's own bundle lacks (a
# TLS-intercepting CA, say) become /usr/local/share/ca-certificates/*.crt, so
# they survive any later update-ca-certificates inside user builds.
inject_host_cas() { # rootfs
    local root=$1 n=0 f
    mkdir -p "$WORK/certs" "$root/usr/local/share/ca-certificates"
    awk -v dir="$WORK/certs" '
        /-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/host-%03d.pem", dir, n) }
        f { print > f }
        /-----END CERTIFICATE-----/ { close(f); f = "" }
    ' "$HOST_CA_BUNDLE"
    # Fingerprints of what the image already trusts.
    awk -v dir="$WORK/certs" '
        /-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/img-%03d.pem", dir, n) }
        f { print > f }
        /-----END CERTIFICATE-----/ { close(f); f = "" }
    ' "$root/etc/ssl/certs/ca-certificates.crt"
    for f in "$WORK"/certs/img-*.pem; do
        openssl x509 -noout -fingerprint -sha256 -in "$f" 2>/dev/null || true
    done | sort -u >"$WORK/certs/img.fp"
    for f in "$WORK"/certs/host-*.pem; do
        fp=$(openssl x509 -noout -fingerprint -sha256 -in "$f" 2>/dev/null) || continue
        if ! grep -qxF "$fp" "$WORK/certs/img.fp"; then
            n=$((n + 1))
            cp "$f" "$root/usr/local/share/ca-certificates/slipway-host-$n.crt"
        fi
    done
    # (its stderr warns about the bundle file itself: expected, and noise)
    chroot "$root" update-ca-certificates >"$WORK/uca.log" 2>&1 \
        || { cat "$WORK/uca.log" >&2; die "update-ca-certificates failed in the python rootfs"; }
    log "python: injected $n CA certificate(s) from $HOST_CA_BUNDLE that Debian's bundle lacks"
}

customize_python_rootfs() { # rootfs
    local root=$1
    # Debian marks its python "externally managed"; images like python:3.11-slim let
    # `pip install` write to the system.
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    inject_host_cas "$root"
    rm -f "$root/etc/apt/sources.list"
    python_sources >"$root/etc/apt/sources.list.d/debian.sources"
    # The paths the official image uses, for Dockerfiles and shebangs that name them.
    for b in python python3 pip pip3; do
        [ -e "$root/usr/local/bin/$b" ] || ln -s "/usr/bin/$b" "$root/usr/local/bin/$b"
    done
    # Keep later `apt-get install` in user builds slim, as the official images do.
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d"
    cat >"$root/etc/dpkg/dpkg.cfg.d/slipway-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
    printf 'APT::Install-Recommends "false";\n' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
    # Caches, logs and host leftovers.
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
        "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/* \
        "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/tmp/* "$root"/root/.cache
    find "$root" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
    : >"$root/etc/resolv.conf"
    printf 'localhost\n' >"$root/etc/hostname"
}

PY_ENV=(
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "LANG=C.UTF-8"
    "PYTHON_VERSION=3.11"
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
    "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"
    "PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
    "PIP_ROOT_USER_ACTION=ignore"
)

PYTHON_RECIPE=$({
    echo "python recipe v1 $SUITE $MIRROR $PY_INCLUDE"
    printf '%s\n' "${PY_ENV[@]}"
    sha256sum <"$HOST_CA_BUNDLE"
    declare -f python_sources inject_host_cas customize_python_rootfs
} | sha)
PY_TARBALL="$CACHE_DIR/python-$SUITE-$PYTHON_RECIPE.tar"

make_python_tarball() {
    local root="$WORK/python-rootfs" t0=$SECONDS
    mkdir -p "$CACHE_DIR/debs"
    log "python: debootstrap --variant=minbase --include=$PY_INCLUDE $SUITE from $MIRROR (about a minute)"
    if ! debootstrap --variant=minbase --include="$PY_INCLUDE" --cache-dir="$CACHE_DIR/debs" \
        "$SUITE" "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK/debootstrap.log" >&2
        [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (full log above; is $MIRROR reachable?)"
    fi
    customize_python_rootfs "$root"
    tar --numeric-owner -C "$root" -cf "$PY_TARBALL.partial" .
    mv -f "$PY_TARBALL.partial" "$PY_TARBALL"
    # Older recipes' tarballs are dead weight.
    find "$CACHE_DIR" -maxdepth 1 -name "python-$SUITE-*.tar" ! -name "$(basename "$PY_TARBALL")" -delete
    log "python: root filesystem cached as $PY_TARBALL ($(du -h "$PY_TARBALL" | cut -f1), $((SECONDS - t0))s)"
}

build_python() {
    local have changes=() e old
    have=$(image_recipe slipway/python:3.11)
    old=$(docker image inspect -f '{{.Id}}' slipway/python:3.11 2>/dev/null || true)
    if [ "$FORCE" != 1 ] && [ "$have" = "$PYTHON_RECIPE" ]; then
        log "python: slipway/python:3.11 is current (recipe $PYTHON_RECIPE)"
    else
        if [ "$FORCE" = 1 ] || [ ! -s "$PY_TARBALL" ]; then
            make_python_tarball
        else
            log "python: re-using cached root filesystem $PY_TARBALL"
        fi
        for e in "${PY_ENV[@]}"; do changes+=(--change "ENV $e"); done
        changes+=(--change "LABEL $LABEL_KEY=$PYTHON_RECIPE org.slipway.base=python")
        changes+=(--change 'CMD ["python3"]')
        log "python: importing into docker"
        docker import "${changes[@]}" "$PY_TARBALL" slipway/python:3.11 >/dev/null \
            || die "docker import of $PY_TARBALL failed"
        log "python: built $(docker image inspect -f '{{.Id}}' slipway/python:3.11 | cut -c1-19)"
    fi
    ensure_tags slipway/python:3.11 "${PYTHON_TAGS[@]}"
    [ "$old" = "$(docker image inspect -f '{{.Id}}' slipway/python:3.11)" ] || drop_old "$old"
}

# ====================================================================== verify

verify() {
    local out
    # (one container per image: each run costs ~0.5 s)
    out=$(docker run --rm --network none busybox:latest sh -c 'id -un; grep -q ^www-data: /etc/passwd && echo ok') \
        || die "busybox:latest does not run"
    [ "$out" = "$(printf 'root\nok')" ] || die "busybox:latest: unexpected users ($out)"
    out=$(docker run --rm --network none python:3.11-slim python -c 'print(1)') \
        || die "python:3.11-slim does not run python"
    [ "$out" = 1 ] || die "python:3.11-slim printed '$out', not 1"
    log "verified: busybox:latest runs, python:3.11-slim runs python"
}

build_busybox
build_python
verify
log "images: ${BUSYBOX_TAGS[*]} ${PYTHON_TAGS[*]}"
