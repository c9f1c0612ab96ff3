# Shared by the offline image builds (docker/base/build-offline.sh, docker/sandbox/build-offline.sh):
# a Debian rootfs made with debootstrap from the mirror this machine's apt sources name, a chroot
# to finish it in, and `tar | docker import` to turn it into an image. No registry is used.
#
# Source it from bash (set -euo pipefail), after defining:
#   log MESSAGE...      progress on stderr
#   die MESSAGE...      log, then exit 1
# Functions (each documented below): find_source, debian_mirror, ensure_debootstrap,
# rootfs_create, rootfs_chroot, rootfs_scrub, rootfs_import, rootfs_cleanup.
# The caller's hash of its inputs should include this file: it decides what the rootfs holds.

DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}

# The Debian mirror: the first URI of an apt source (deb822 *.sources or one-line *.list) that
# carries SUITE with component main. Prints "URI<TAB>signed-by-keyring-or-empty".
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

# Sets DEBIAN_MIRROR, DEBIAN_KEYRING (may be empty), DEBIAN_UPDATES and DEBIAN_SECURITY (URIs of
# $DEBIAN_SUITE-updates / -security, empty when this machine has none). An explicit mirror URL
# (the first argument, e.g. from an environment variable) wins over the apt sources.
debian_mirror() {  # [mirror-url]
    local src
    if [ -n "${1:-}" ]; then
        DEBIAN_MIRROR=$1; DEBIAN_KEYRING=""
    else
        src=$(find_source "$DEBIAN_SUITE") ||
            die "no apt source for Debian $DEBIAN_SUITE main in /etc/apt/sources*; name a mirror (see --help)"
        DEBIAN_MIRROR=${src%%$'\t'*}; DEBIAN_KEYRING=${src#*$'\t'}
    fi
    src=$(find_source "$DEBIAN_SUITE-updates" || true); DEBIAN_UPDATES=${src%%$'\t'*}
    src=$(find_source "$DEBIAN_SUITE-security" || true); DEBIAN_SECURITY=${src%%$'\t'*}
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q debootstrap >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
}

# The environment of commands run in the chroot: a clean one, plus pip's settings and the proxies
# of this machine. Use as: chroot "$ROOTFS" "${ROOTFS_ENV[@]}" sh -ec '...'
rootfs_env() {
    ROOTFS_ENV=(env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
                PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                PIP_CERT=/tmp/host-ca.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
                PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-120}")
    local v
    for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST http_proxy https_proxy no_proxy \
             HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!v:-}" ] && ROOTFS_ENV+=("$v=${!v}")
    done
    return 0
}

# debootstrap (minbase) $DEBIAN_SUITE into ROOTFS with the packages INCLUDE (comma-separated),
# .debs cached in CACHE/debs, logs in CACHE; then, for the caller's own steps: /proc mounted,
# DNS, the host's CA bundle at /tmp/host-ca.crt (the network here may re-sign TLS), apt sources
# naming the same mirror, and an upgrade from -updates/-security when this machine has them.
# Call debian_mirror first. Undo with rootfs_scrub (or rootfs_cleanup on failure).
rootfs_create() {  # rootfs cache include
    local rootfs=$1 cache=$2 include=$3 t0=$SECONDS
    mkdir -p "$cache/debs"
    log "debootstrap $DEBIAN_SUITE (minbase + $include) from $DEBIAN_MIRROR"
    local -a dbopts=(--variant=minbase --include="$include" --components=main --cache-dir="$cache/debs")
    [ -n "$DEBIAN_KEYRING" ] && [ -f "$DEBIAN_KEYRING" ] && dbopts+=(--keyring="$DEBIAN_KEYRING")
    debootstrap "${dbopts[@]}" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$cache/debootstrap.log" 2>&1 ||
        { tail -n 30 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
    log "debootstrap done in $((SECONDS - t0)) s"

    mount -t proc proc "$rootfs/proc"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/tmp/host-ca.crt"
    {
        echo "deb $DEBIAN_MIRROR $DEBIAN_SUITE main"
        [ -n "$DEBIAN_UPDATES" ] && echo "deb $DEBIAN_UPDATES $DEBIAN_SUITE-updates main"
        [ -n "$DEBIAN_SECURITY" ] && echo "deb $DEBIAN_SECURITY $DEBIAN_SUITE-security main"
    } >"$rootfs/etc/apt/sources.list"

    rootfs_env
    if [ -n "$DEBIAN_UPDATES$DEBIAN_SECURITY" ]; then
        t0=$SECONDS
        log "apt upgrade ($DEBIAN_SUITE-updates, $DEBIAN_SUITE-security)"
        chroot "$rootfs" "${ROOTFS_ENV[@]}" sh -ec 'apt-get update -q; apt-get -y -q -o Dpkg::Options::=--force-confold upgrade' \
            >"$cache/apt.log" 2>&1 ||
            { tail -n 30 "$cache/apt.log" >&2; die "apt upgrade in the chroot failed (log: $cache/apt.log)"; }
        log "apt upgrade done in $((SECONDS - t0)) s"
    fi
}

# Shrink and scrub the rootfs for packing: apt lists and caches, docs (copyright files kept),
# logs, the build-time /proc, DNS, CA bundle, hostname and temporary files.
rootfs_scrub() {  # rootfs
    local rootfs=$1
    rootfs_env
    chroot "$rootfs" "${ROOTFS_ENV[@]}" sh -ec '
        apt-get clean
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old \
               /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log /var/log/bootstrap.log \
               /usr/share/man/* /usr/share/info/* /usr/share/lintian /root/.cache
        find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
        find /usr/share/doc -mindepth 1 -type d -empty -delete
    '
    umount "$rootfs/proc"
    rm -f "$rootfs/tmp/host-ca.crt"
    : >"$rootfs/etc/resolv.conf"   # Docker provides its own at run time
    : >"$rootfs/etc/hostname"
    rm -rf --one-file-system "${rootfs:?}"/tmp/* "${rootfs:?}"/var/tmp/*
}

# Pack ROOTFS as IMAGE: `tar | docker import`, each further argument a --change (Dockerfile line).
rootfs_import() {  # rootfs image message change...
    local rootfs=$1 image=$2 message=$3 t0=$SECONDS c
    shift 3
    local -a changes=()
    for c in "$@"; do changes+=(--change "$c"); done
    log "docker import $image ($(du -sh --one-file-system "$rootfs" | cut -f1))"
    tar --numeric-owner --xattrs -C "$rootfs" \
        --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . |
        docker import "${changes[@]}" --message "$message" - "$image" >/dev/null
    log "import done in $((SECONDS - t0)) s"
}

# Unmount what the build mounted and remove ROOTFS (safe to call twice, or after a failure).
rootfs_cleanup() {  # rootfs
    local rootfs=${1:-} m
    [ -n "$rootfs" ] || return 0
    for m in proc dev/pts dev sys; do
        if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount -l "$rootfs/$m" || true; fi
    done
    # --one-file-system: never follow a mount that is somehow still there into the host.
    [ -e "$rootfs" ] && rm -rf --one-file-system "$rootfs"
    return 0
}
