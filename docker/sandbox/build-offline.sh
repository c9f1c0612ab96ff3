#!/usr/bin/env bash
# Build the code-interpreter sandbox image without a container registry (the path CI uses).
#
#   docker/sandbox/build-offline.sh [--force]
#
# Produces ${ASSISTANTD_SANDBOX_IMAGE:-assistantd-sandbox:latest} in two cached stages:
#   1. base  assistantd-sandbox-base:<hash of this script + docker/debian-rootfs.sh + requirements.txt>
#            a Debian bookworm rootfs made with debootstrap (minbase) from the mirror named in this
#            machine's apt sources (docker/debian-rootfs.sh, shared with docker/base/build-offline.sh), a venv at /opt/venv with requirements.txt (binary wheels only),
#            user sandbox (uid 1000), /mnt/data; packed with `tar | docker import`.
#            Slow (~2.5 min here, ~200 MB of downloads); redone only when this script,
#            docker/debian-rootfs.sh or requirements.txt changes.
#   2. final FROM the base, COPY kernel.py to /opt/assistantd/kernel.py, labelled
#            assistantd.sandbox.hash=<hash of the base's inputs + kernel.py>.
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
LIB="$HERE/../debian-rootfs.sh"
IMAGE=${ASSISTANTD_SANDBOX_IMAGE:-assistantd-sandbox:latest}
CACHE=${ASSISTANTD_SANDBOX_CACHE:-/var/cache/assistantd-sandbox}
BASE_REPO=assistantd-sandbox-base
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
# shellcheck source=../debian-rootfs.sh
. "$LIB"

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is it running, may this user use it?)"
[ -f "$KERNEL" ] || die "missing $KERNEL"
[ -f "$REQS" ] || die "missing $REQS"

BASE_HASH=$(cat "$SCRIPT" "$LIB" "$REQS" | sha256sum | cut -c1-64)
FINAL_HASH=$(cat "$SCRIPT" "$LIB" "$REQS" "$KERNEL" | sha256sum | cut -c1-64)
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

build_base() {
    [ "$(id -u)" = 0 ] || die "building the base image needs root (debootstrap, chroot): run it with sudo"
    debian_mirror "${ASSISTANTD_SANDBOX_MIRROR:-}"
    ensure_debootstrap

    mkdir -p "$CACHE"
    exec 9>"$CACHE/lock"
    flock 9
    # Another run may have built it while this one waited for the lock.
    if [ "$FORCE" = 0 ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi

    ROOTFS="$CACHE/rootfs"
    rootfs_cleanup "$ROOTFS"   # a previous run may have died half-way
    trap 'rootfs_cleanup "$ROOTFS"' EXIT
    rootfs_create "$ROOTFS" "$CACHE" python3,python3-venv,ca-certificates

    local t0=$SECONDS
    log "pip install into /opt/venv ($(grep -c '^[^#[:space:]]' "$REQS") pinned packages, binary wheels only)"
    install -m 0644 "$REQS" "$ROOTFS/tmp/requirements.txt"
    chroot "$ROOTFS" "${ROOTFS_ENV[@]}" sh -ec '
        python3 -m venv /opt/venv
        /opt/venv/bin/pip install -q --only-binary=:all: --no-deps -r /tmp/requirements.txt
        /opt/venv/bin/pip check
        # drop the test suites that the wheels ship (~140 MB, never imported)
        find /opt/venv/lib/python3*/site-packages -type d -name tests -prune -exec rm -rf {} +
    ' >"$CACHE/pip.log" 2>&1 ||
        { tail -n 30 "$CACHE/pip.log" >&2; die "pip install in the chroot failed (log: $CACHE/pip.log)"; }
    log "pip done in $((SECONDS - t0)) s"

    # The user that runs the code, its work folder, the kernel folder; then shrink and scrub.
    chroot "$ROOTFS" "${ROOTFS_ENV[@]}" sh -ec '
        useradd --uid 1000 --user-group --create-home --home-dir /home/sandbox --shell /bin/bash sandbox
        install -d -o sandbox -g sandbox -m 0755 /mnt/data
        install -d -m 0755 /opt/assistantd
    '
    rootfs_scrub "$ROOTFS"

    rootfs_import "$ROOTFS" "$BASE_IMAGE" "assistantd sandbox base ($DEBIAN_SUITE, $(basename "$REQS") ${BASE_HASH:0:16})" \
        "USER sandbox" \
        "WORKDIR /mnt/data" \
        "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "ENV VIRTUAL_ENV=/opt/venv" \
        "ENV LANG=C.UTF-8" \
        "ENV MPLBACKEND=Agg" \
        "ENV MPLCONFIGDIR=/tmp/matplotlib" \
        "ENV PYTHONUNBUFFERED=1" \
        "LABEL $LABEL_BASE_HASH=$BASE_HASH" \
        'CMD ["python3", "-u", "/opt/assistantd/kernel.py"]'
    rootfs_cleanup "$ROOTFS"
    trap - EXIT
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
