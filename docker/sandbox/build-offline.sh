#!/usr/bin/env bash
# Build the code-interpreter sandbox image without a container registry (the path CI uses).
#
#   docker/sandbox/build-offline.sh [--force]
#
# Produces ${ASSISTANTD_SANDBOX_IMAGE:-assistantd-sandbox:latest} in two cached stages:
#   1. base  assistantd-sandbox-base:<hash of this script + requirements.txt>
#            a Debian bookworm rootfs made with debootstrap (minbase) from the mirror named in this
#            machine's apt sources, a venv at /opt/venv with requirements.txt (binary wheels only),
#            user sandbox (uid 1000), /mnt/data; packed with `tar | docker import`.
#            Slow (~2.5 min here, ~200 MB of downloads); redone only when this script or
#            requirements.txt changes.
#   2. final FROM the base, COPY kernel.py to /opt/assistantd/kernel.py, labelled
#            assistantd.sandbox.hash=<hash of this script + requirements.txt + kernel.py>.
#            A few seconds; `docker build` needs no registry because the base is local.
# A run whose final hash matches the existing image's label does nothing (no root needed for that).
# Stage 1 needs root (debootstrap, chroot), Debian's mirror and PyPI; nothing else is fetched.
#
# Environment:
#   ASSISTANTD_SANDBOX_IMAGE   image to produce               (default assistantd-sandbox:latest)
#   ASSISTANTD_SANDBOX_CACHE   work dir for the rootfs and .deb cache (default /var/cache/assistantd-sandbox)
#   ASSISTANTD_SANDBOX_MIRROR  Debian mirror URL               (default: read from /etc/apt/sources*)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST, PIP_DEFAULT_TIMEOUT, http(s)_proxy,
#   no_proxy: passed through to pip inside the chroot.
# Output: progress lines on stderr; exit status 0 when the image is up to date.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$HERE/$(basename "${BASH_SOURCE[0]}")"
REQS="$HERE/requirements.txt"
KERNEL="$HERE/kernel.py"
IMAGE=${ASSISTANTD_SANDBOX_IMAGE:-assistantd-sandbox:latest}
CACHE=${ASSISTANTD_SANDBOX_CACHE:-/var/cache/assistantd-sandbox}
BASE_REPO=assistantd-sandbox-base
SUITE=bookworm
LABEL_HASH=assistantd.sandbox.hash
LABEL_BASE_HASH=assistantd.sandbox.base-hash
FORCE=0

for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-offline.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf '[sandbox-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is it running, may this user use it?)"
[ -f "$KERNEL" ] || die "missing $KERNEL"
[ -f "$REQS" ] || die "missing $REQS"

BASE_HASH=$(cat "$SCRIPT" "$REQS" | sha256sum | cut -c1-64)
FINAL_HASH=$(cat "$SCRIPT" "$REQS" "$KERNEL" | sha256sum | cut -c1-64)
BASE_IMAGE="$BASE_REPO:${BASE_HASH:0:16}"

image_label() {  # image label → value, empty when the image or the label is missing
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

if [ "$FORCE" = 0 ] && [ "$(image_label "$IMAGE" "$LABEL_HASH")" = "$FINAL_HASH" ]; then
    log "$IMAGE is up to date (${FINAL_HASH:0:16})"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# stage 1: the base image (rootfs + Python packages), cached by BASE_HASH
# ---------------------------------------------------------------------------------------------

# The Debian mirror: the first URI of an apt source (deb822 *.sources or one-line *.list) that
# carries "$SUITE" with component main. Prints "URI<TAB>signed-by-keyring-or-empty".
find_source() {  # suite
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v want="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") &&
                    (" " comps " ") ~ / main / && uris != "") {
                    split(uris, u, " "); print u[1] "\t" signed; found = 1; exit
                }
                types = uris = suites = comps = signed = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = $1; sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "Types") types = val
                else if (key == "URIs") uris = val
                else if (key == "Suites") suites = val
                else if (key == "Components") comps = val
                else if (key == "Signed-By") signed = val
            }
            END { if (!found) flush() }
        ' "$f" | head -n1 | grep . && return 0
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v want="$suite" '
            $1 != "deb" { next }
            {
                i = 2; signed = ""
                if ($i ~ /^\[/) {
                    while (i <= NF) {
                        if ($i ~ /^\[?signed-by=/) { s = $i; sub(/^\[?signed-by=/, "", s); sub(/\]$/, "", s); signed = s }
                        if ($i ~ /\]$/) { i++; break }
                        i++
                    }
                }
                uri = $i; s = $(i + 1)
                comps = ""; for (j = i + 2; j <= NF; j++) comps = comps " " $j
                if (s == want && (comps " ") ~ / main /) { print uri "\t" signed; exit }
            }
        ' "$f" | head -n1 | grep . && return 0
    done
    return 1
}

build_base() {
    [ "$(id -u)" = 0 ] || die "building the base image needs root (debootstrap, chroot): run it with sudo"

    local mirror keyring src
    if [ -n "${ASSISTANTD_SANDBOX_MIRROR:-}" ]; then
        mirror=$ASSISTANTD_SANDBOX_MIRROR; keyring=""
    else
        src=$(find_source "$SUITE") || die "no apt source for Debian $SUITE main in /etc/apt/sources*; set ASSISTANTD_SANDBOX_MIRROR"
        mirror=${src%%$'\t'*}; keyring=${src#*$'\t'}
    fi
    local updates_src security_src
    updates_src=$(find_source "$SUITE-updates" || true)
    security_src=$(find_source "$SUITE-security" || true)
    log "mirror $mirror"

    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q debootstrap >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
    fi

    mkdir -p "$CACHE/debs"
    exec 9>"$CACHE/lock"
    flock 9
    # Another run may have built it while this one waited for the lock.
    if [ "$FORCE" = 0 ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi

    ROOTFS="$CACHE/rootfs"
    cleanup_rootfs   # a previous run may have died half-way
    trap cleanup_rootfs EXIT

    local t0=$SECONDS
    log "debootstrap $SUITE (minbase) into $ROOTFS"
    local -a dbopts=(--variant=minbase --include=python3,python3-venv,ca-certificates
                     --components=main --cache-dir="$CACHE/debs")
    [ -n "$keyring" ] && [ -f "$keyring" ] && dbopts+=(--keyring="$keyring")
    debootstrap "${dbopts[@]}" "$SUITE" "$ROOTFS" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    log "debootstrap done in $((SECONDS - t0)) s"

    # Chroot plumbing for the build only: /proc, DNS and the host's CA bundle (the network here may
    # re-sign TLS). All of it is removed again before the rootfs is packed.
    mount -t proc proc "$ROOTFS/proc"
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/tmp/host-ca.crt"

    # apt sources of the image: the same mirror, plus updates/security when this machine has them.
    {
        echo "deb $mirror $SUITE main"
        [ -n "$updates_src" ] && echo "deb ${updates_src%%$'\t'*} $SUITE-updates main"
        [ -n "$security_src" ] && echo "deb ${security_src%%$'\t'*} $SUITE-security main"
    } >"$ROOTFS/etc/apt/sources.list"

    local -a cenv=(env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
                   PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                   PIP_CERT=/tmp/host-ca.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
                   PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-120}")
    local v
    for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST http_proxy https_proxy no_proxy \
             HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!v:-}" ] && cenv+=("$v=${!v}")
    done

    if [ -n "$updates_src$security_src" ]; then
        t0=$SECONDS
        log "apt upgrade ($SUITE-updates, $SUITE-security)"
        chroot "$ROOTFS" "${cenv[@]}" sh -ec 'apt-get update -q; apt-get -y -q -o Dpkg::Options::=--force-confold upgrade' \
            >"$CACHE/apt.log" 2>&1 ||
            { tail -n 30 "$CACHE/apt.log" >&2; die "apt upgrade in the chroot failed (log: $CACHE/apt.log)"; }
        log "apt upgrade done in $((SECONDS - t0)) s"
    fi

    t0=$SECONDS
    log "pip install into /opt/venv ($(grep -c '^[^#[:space:]]' "$REQS") pinned packages, binary wheels only)"
    install -m 0644 "$REQS" "$ROOTFS/tmp/requirements.txt"
    chroot "$ROOTFS" "${cenv[@]}" sh -ec '
        python3 -m venv /opt/venv
        /opt/venv/bin/pip install -q --only-binary=:all: --no-deps -r /tmp/requirements.txt
        /opt/venv/bin/pip check
        # drop the test suites that the wheels ship (~140 MB, never imported)
        find /opt/venv/lib/python3*/site-packages -type d -name tests -prune -exec rm -rf {} +
    ' >"$CACHE/pip.log" 2>&1 ||
        { tail -n 30 "$CACHE/pip.log" >&2; die "pip install in the chroot failed (log: $CACHE/pip.log)"; }
    log "pip done in $((SECONDS - t0)) s"

    # The user that runs the code, its work folder, the kernel folder; then shrink and scrub.
    chroot "$ROOTFS" "${cenv[@]}" sh -ec '
        useradd --uid 1000 --user-group --create-home --home-dir /home/sandbox --shell /bin/bash sandbox
        install -d -o sandbox -g sandbox -m 0755 /mnt/data
        install -d -m 0755 /opt/assistantd
        apt-get clean
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old \
               /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log /var/log/bootstrap.log \
               /usr/share/man/* /usr/share/info/* /usr/share/lintian /root/.cache
        find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
        find /usr/share/doc -mindepth 1 -type d -empty -delete
    '
    umount "$ROOTFS/proc"
    rm -f "$ROOTFS/tmp/host-ca.crt" "$ROOTFS/tmp/requirements.txt"
    : >"$ROOTFS/etc/resolv.conf"   # Docker provides its own at run time
    : >"$ROOTFS/etc/hostname"
    rm -rf --one-file-system "${ROOTFS:?}"/tmp/* "${ROOTFS:?}"/var/tmp/*

    t0=$SECONDS
    log "docker import $BASE_IMAGE ($(du -sh --one-file-system "$ROOTFS" | cut -f1))"
    tar --numeric-owner --xattrs -C "$ROOTFS" \
        --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . |
        docker import \
            --change "USER sandbox" \
            --change "WORKDIR /mnt/data" \
            --change "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            --change "ENV VIRTUAL_ENV=/opt/venv" \
            --change "ENV LANG=C.UTF-8" \
            --change "ENV MPLBACKEND=Agg" \
            --change "ENV MPLCONFIGDIR=/tmp/matplotlib" \
            --change "ENV PYTHONUNBUFFERED=1" \
            --change "LABEL $LABEL_BASE_HASH=$BASE_HASH" \
            --change 'CMD ["python3", "-u", "/opt/assistantd/kernel.py"]' \
            --message "assistantd sandbox base ($SUITE, $(basename "$REQS") ${BASE_HASH:0:16})" \
            - "$BASE_IMAGE" >/dev/null
    log "import done in $((SECONDS - t0)) s"
    cleanup_rootfs
    trap - EXIT
}

cleanup_rootfs() {
    [ -n "${ROOTFS:-}" ] || return 0
    local m
    for m in proc dev/pts dev sys; do
        if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then umount -l "$ROOTFS/$m" || true; fi
    done
    # --one-file-system: never follow a mount that is somehow still there into the host.
    [ -e "$ROOTFS" ] && rm -rf --one-file-system "$ROOTFS"
    return 0
}

if [ "$FORCE" = 1 ] || [ "$(image_label "$BASE_IMAGE" "$LABEL_BASE_HASH")" != "$BASE_HASH" ]; then
    build_base
else
    log "base $BASE_IMAGE is cached"
fi

# ---------------------------------------------------------------------------------------------
# stage 2: the final image, FROM the local base, with the kernel
# ---------------------------------------------------------------------------------------------
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
install -m 0644 "$KERNEL" "$CTX/kernel.py"
cat >"$CTX/Dockerfile" <<EOF
FROM $BASE_IMAGE
COPY kernel.py /opt/assistantd/kernel.py
LABEL $LABEL_HASH=$FINAL_HASH
EOF
log "docker build $IMAGE FROM $BASE_IMAGE"
out=$(docker build --pull=false -q -t "$IMAGE" "$CTX" 2>&1) || { printf '%s\n' "$out" >&2; die "docker build failed"; }
rm -rf "$CTX"
trap - EXIT

# Drop what earlier runs replaced: final images left untagged, older bases. One that a container
# (e.g. a warm sandbox) still uses stays; a later run tries again.
docker images -q --filter dangling=true --filter "label=$LABEL_HASH" | sort -u | while read -r old; do
    docker rmi "$old" >/dev/null 2>&1 || true
done
docker images --format '{{.Repository}}:{{.Tag}}' "$BASE_REPO" | while read -r old; do
    [ "$old" = "$BASE_IMAGE" ] || docker rmi "$old" >/dev/null 2>&1 || true
done

log "$IMAGE ready (${FINAL_HASH:0:16}, $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
