#!/usr/bin/env bash
# Build a Charliecloud directory image for running dnnbench cells in a container, without an
# image registry: a Debian minbase root from Debian's apt mirror (debootstrap).
#
# Usage: scripts/container-image.sh IMAGE_DIR [--suite SUITE] [--mirror URL] [--mount-point DIR]...
#
# The image holds only a C library and the shared libraries a CPython 3.11 build and torch's
# wheels load (libssl, libffi, sqlite, libstdc++ ...). The interpreter and the venv (torch
# included) come from the host, bind-mounted at the same paths (ch-run --bind), so one venv
# serves the host and the container and a cell measures the same packages in both; what
# differs is the root file system: its C library, its system libraries, its /etc.
#
# ch-run mounts the image read-only and cannot create a --bind destination in it, so each folder
# bound at run time needs its mount point in the image: --mount-point DIR (repeatable); without
# one, this checkout and the prefix of its .venv's interpreter. Mount points are added to a
# finished image too, so running again with another --mount-point extends it.
#
# Idempotent: a finished image holds .dnnbench-image; running again with one there does nothing.
# A build is made beside IMAGE_DIR and renamed into place only when complete, so an interrupted
# build never leaves a half image where a test or a sweep would take it for one.
#
# Needs root (debootstrap) and: apt-get install -y debootstrap charliecloud-runtime
set -euo pipefail

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# Shared libraries of the interpreter's extension modules and of torch's wheel beyond minbase.
LIBRARIES=libssl3,libffi8,libsqlite3-0,libreadline8,libexpat1,libncursesw6,libbz2-1.0,liblzma5,zlib1g,libuuid1,libtirpc3,libnsl2,libgomp1,libstdc++6,ca-certificates
MARKER=.dnnbench-image

log() { printf '[container-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '5p' "$0" | sed 's/^# \{0,1\}//' >&2; }

IMAGE=""
MOUNT_POINTS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --suite) SUITE="${2:?--suite needs a value}"; shift 2 ;;
        --mirror) MIRROR="${2:?--mirror needs a value}"; shift 2 ;;
        --mount-point) MOUNT_POINTS+=("$(realpath -m -- "${2:?--mount-point needs a folder}")"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) usage; die "unknown option $1" ;;
        *) [[ -z "$IMAGE" ]] || die "one IMAGE_DIR only (got $IMAGE and $1)"; IMAGE="$1"; shift ;;
    esac
done
[[ -n "$IMAGE" ]] || { usage; die "IMAGE_DIR is required"; }
IMAGE="$(realpath -m -- "$IMAGE")"

default_mount_points() {
    local repo home
    repo="$(realpath -- "$(dirname -- "$0")/..")"
    printf '%s\n' "$repo"
    # The venv's interpreter lives outside it (pyvenv.cfg: home = PREFIX/bin).
    home="$(sed -n 's/^home *= *//p' "$repo/.venv/pyvenv.cfg" 2>/dev/null || true)"
    [[ -z "$home" ]] || realpath -m -- "$home/.."
}
if [[ ${#MOUNT_POINTS[@]} -eq 0 ]]; then
    mapfile -t MOUNT_POINTS < <(default_mount_points)
fi

add_mount_points() {
    local dir
    # ch-run binds the host's /etc/hosts and /etc/resolv.conf only over files the image has; minbase
    # has no /etc/hosts, and without one `localhost` (torchrun's rendezvous) does not resolve inside.
    [[ -e "$1/etc/hosts" ]] || : >"$1/etc/hosts"
    [[ -e "$1/etc/resolv.conf" ]] || : >"$1/etc/resolv.conf"
    for dir in "${MOUNT_POINTS[@]}"; do
        [[ "$dir" == /* && "$dir" != / ]] || die "mount point $dir is not an absolute folder below /"
        mkdir -p -- "$1$dir"
        log "mount point: $dir"
    done
}

if [[ -f "$IMAGE/$MARKER" ]]; then
    log "image already built: $IMAGE ($(cat "$IMAGE/$MARKER"))"
    add_mount_points "$IMAGE"
    exit 0
fi
[[ ! -e "$IMAGE" ]] || die "$IMAGE exists but is not a finished image (no $MARKER): move it away first"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install -y debootstrap"
[[ "$(id -u)" == 0 ]] || die "debootstrap needs root (it creates device nodes and owns files as root)"
command -v ch-run >/dev/null || log "warning: ch-run not found (apt-get install -y charliecloud-runtime): the image builds but cannot run here"

PARTIAL="$IMAGE.partial"
# A partial build of an earlier, interrupted run is never resumed: its state is unknown.
rm -rf -- "$PARTIAL"
mkdir -p -- "$(dirname -- "$IMAGE")"
log "debootstrap $SUITE (minbase + $LIBRARIES) from $MIRROR into $PARTIAL"
started=$SECONDS
if ! debootstrap --variant=minbase --include="$LIBRARIES" "$SUITE" "$PARTIAL" "$MIRROR" >"$PARTIAL.log" 2>&1; then
    tail -n 20 "$PARTIAL.log" >&2
    die "debootstrap failed (full log: $PARTIAL.log)"
fi
log "debootstrap done in $((SECONDS - started)) s"

# What the image does not need and would only make it larger.
rm -rf -- "$PARTIAL"/var/cache/apt/archives/*.deb "$PARTIAL"/var/lib/apt/lists/* "$PARTIAL"/usr/share/doc/* \
    "$PARTIAL"/usr/share/man/* "$PARTIAL"/usr/share/locale/*
add_mount_points "$PARTIAL"
printf '%s minbase built %s\n' "$SUITE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$PARTIAL/$MARKER"
mv -T -- "$PARTIAL" "$IMAGE"
rm -f -- "$PARTIAL.log"
log "image ready: $IMAGE ($(du -sh -- "$IMAGE" | cut -f1))"
if command -v ch-run >/dev/null; then
    USER="${USER:-$(id -un)}" ch-run "$IMAGE" -- cat /etc/os-release | sed -n 's/^PRETTY_NAME=/[container-image] inside: /p' >&2
fi
