#!/usr/bin/env bash
# The base image of the composed stack's own images (server, PostgreSQL, front), made without a
# container registry: what `python:3.11-slim-bookworm` gives where a registry exists.
#
#   docker/base/build-offline.sh [--force]     prints the image name (its only line on stdout)
#
# Produces assistantd-base:<hash>: a Debian bookworm rootfs made with debootstrap (minbase +
# python3, python3-venv, ca-certificates) from the mirror named in this machine's apt sources
# (docker/debian-rootfs.sh, shared with the sandbox image), with this machine's local CA
# certificates added to the system trust store (/usr/local/share/ca-certificates: a network that
# re-signs TLS needs them for pip, apt over https and the server's own upstream calls), packed with
# `tar | docker import`. <hash> covers this script, docker/debian-rootfs.sh and those certificates;
# an image of that name that exists is reused (a second call takes a second). ~3 min here (2 busy
# cores: debootstrap 2 min, the upgrade from -updates/-security 40 s), ~60 MB of downloads. Needs
# root (debootstrap, chroot) and Debian's mirror; nothing else is fetched.
#
# Environment:
#   ASSISTANTD_BASE_CACHE    work dir for the rootfs and .deb cache (default /var/cache/assistantd-base)
#   ASSISTANTD_DEBIAN_MIRROR Debian mirror URL (default: read from /etc/apt/sources*)
#   ASSISTANTD_BASE_CA_DIR   extra CA certificates (*.crt) to trust (default /usr/local/share/ca-certificates;
#                            empty: none)
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$HERE/$(basename "${BASH_SOURCE[0]}")"
LIB="$HERE/../debian-rootfs.sh"
CACHE=${ASSISTANTD_BASE_CACHE:-/var/cache/assistantd-base}
CA_DIR=${ASSISTANTD_BASE_CA_DIR-/usr/local/share/ca-certificates}
REPO=assistantd-base
LABEL_HASH=assistantd.base.hash
FORCE=0

for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-offline.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf '[base-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=../debian-rootfs.sh
. "$LIB"

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is it running, may this user use it?)"

cas=()
if [ -n "$CA_DIR" ] && [ -d "$CA_DIR" ]; then
    while IFS= read -r -d '' f; do cas+=("$f"); done < <(find "$CA_DIR" -name '*.crt' -type f -print0 | sort -z)
fi
HASH=$( { cat "$SCRIPT" "$LIB"; [ ${#cas[@]} = 0 ] || cat "${cas[@]}"; } | sha256sum | cut -c1-64)
IMAGE="$REPO:${HASH:0:16}"

label() { docker image inspect --format "{{ index .Config.Labels \"$LABEL_HASH\" }}" "$1" 2>/dev/null || true; }

if [ "$FORCE" = 0 ] && [ "$(label "$IMAGE")" = "$HASH" ]; then
    log "$IMAGE is cached"
    echo "$IMAGE"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "building the base image needs root (debootstrap, chroot): run it with sudo"
debian_mirror "${ASSISTANTD_DEBIAN_MIRROR:-}"
ensure_debootstrap

mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9
if [ "$FORCE" = 0 ] && [ "$(label "$IMAGE")" = "$HASH" ]; then   # built while this run waited
    echo "$IMAGE"
    exit 0
fi

ROOTFS="$CACHE/rootfs"
rootfs_cleanup "$ROOTFS"   # a previous run may have died half-way
trap 'rootfs_cleanup "$ROOTFS"' EXIT
rootfs_create "$ROOTFS" "$CACHE" python3,python3-venv,ca-certificates

if [ ${#cas[@]} -gt 0 ]; then
    log "trusting ${#cas[@]} local CA certificate(s) from $CA_DIR"
    install -d "$ROOTFS/usr/local/share/ca-certificates"
    install -m 0644 "${cas[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" "${ROOTFS_ENV[@]}" update-ca-certificates >/dev/null 2>&1   # (it warns about the bundle itself)
fi
rootfs_scrub "$ROOTFS"

# The system trust store is the one every client uses (pip and httpx bring their own otherwise).
rootfs_import "$ROOTFS" "$IMAGE" "assistantd base ($DEBIAN_SUITE + python3, ${HASH:0:16})" \
    "ENV LANG=C.UTF-8" \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
    "LABEL $LABEL_HASH=$HASH" \
    'CMD ["python3"]'
rootfs_cleanup "$ROOTFS"
trap - EXIT

# Older bases go unless an image built on them still exists (docker keeps a parent then anyway).
docker images --format '{{.Repository}}:{{.Tag}}' "$REPO" | while read -r old; do
    [ "$old" = "$IMAGE" ] || docker rmi "$old" >/dev/null 2>&1 || true
done
echo "$IMAGE"
