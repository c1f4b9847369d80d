#!/usr/bin/env bash
# Build Horovod from source against the venv's torch, cache the wheel, install it.
#
# Usage: scripts/install-horovod.sh [--python PATH/TO/venv/bin/python]
#                                   [--cache-dir DIR] [--force-rebuild]
#
# Why this script exists (details in docs/horovod.md):
#   * Horovod 0.28.1 (the last release) ships only an sdist on PyPI, and its C++
#     extension links against the *installed* torch, so every torch upgrade
#     needs a rebuild (~2 min on 2 cores).  We cache the built wheel keyed by
#     (horovod version, torch version, python ABI, hash of build flags) so that
#     re-running is a seconds-long `pip install` of the cached wheel.
#   * Horovod's CMake forces -std=c++14 but torch >= 2.10 headers need C++20;
#     we interpose a generated CXX wrapper that rewrites the -std flag.
#   * The torch wheel is a CUDA build; if a CUDA toolkit is present Horovod
#     insists on compiling its CUDA parts and must be told where the toolkit is.
#
# Build flags: any HOROVOD_* variable in the environment (HOROVOD_GPU_OPERATIONS=NCCL,
# HOROVOD_WITH_MPI=1, HOROVOD_BUILD_CUDA_CC_LIST=80,90, ...) is passed through to
# the build and becomes part of the cache key.  Defaults fill only what is unset.
set -euo pipefail

HOROVOD_VERSION=0.28.1
# Bump when the build recipe (wrapper, defaults) changes in a way that changes
# the produced wheel; it is hashed into the cache key so old wheels are not reused.
RECIPE_VERSION=1
# Horovod's runtime deps (install_requires + cffi, which the torch extension
# needs).  They are also its build deps because we build without isolation.
DEPS=(packaging cffi psutil pyyaml cloudpickle)

log() { printf '[install-horovod] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2; }

PY="${VENV:-.venv}/bin/python"
CACHE_DIR="${DNNBENCH_CACHE:-$HOME/.cache/dnnbench}/wheels"
FORCE_REBUILD=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) PY="${2:?--python needs a path}"; shift 2 ;;
        --python=*) PY="${1#*=}"; shift ;;
        --cache-dir) CACHE_DIR="${2:?--cache-dir needs a path}"; shift 2 ;;
        --cache-dir=*) CACHE_DIR="${1#*=}"; shift ;;
        --force-rebuild) FORCE_REBUILD=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown argument: $1" ;;
    esac
done

[[ -x "$PY" ]] || die "python not found or not executable: $PY (create the venv first, or pass --python)"
# Absolute paths: we cd nowhere, but pip/CMake run in temp dirs and must still find them.
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
VENV_BIN="$(dirname "$PY")"
mkdir -p "$CACHE_DIR"
CACHE_DIR="$(cd "$CACHE_DIR" && pwd)"

# --- what we build against ---------------------------------------------------
# Read torch/version.py rather than `import torch` (ms instead of seconds).  Its
# __version__ keeps the local tag (2.14.1+cu130 vs +cpu), which the wheel's
# metadata version may lack; git_version pins the exact build for the key.
read -r TORCH_VERSION TORCH_GIT < <("$PY" - 2>/dev/null <<'PYEOF'
import importlib.metadata, importlib.util, os
spec = importlib.util.find_spec("torch")
ns = {}
try:
    with open(os.path.join(spec.submodule_search_locations[0], "version.py")) as f:
        exec(f.read(), ns)
except Exception:
    ns = {"__version__": importlib.metadata.version("torch")}
print(ns["__version__"], ns.get("git_version") or "unknown")
PYEOF
) || true
[[ -n "${TORCH_VERSION:-}" ]] \
    || die "torch is not installed in $PY's environment; install torch first (horovod compiles against it)"
PY_TAG="$("$PY" -c 'import sys, sysconfig; print(sysconfig.get_config_var("SOABI") or "cp%d%d" % sys.version_info[:2])')"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/install-horovod.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# --- build environment -------------------------------------------------------
# Framework selection: PyTorch + Gloo always; TF/MXNet never (not used by dnnbench,
# and their absence would otherwise only be detected at import time).
: "${HOROVOD_WITH_PYTORCH:=1}"
: "${HOROVOD_WITHOUT_TENSORFLOW:=1}"
: "${HOROVOD_WITHOUT_MXNET:=1}"
[[ -z "${HOROVOD_WITHOUT_GLOO:-}" ]] && : "${HOROVOD_WITH_GLOO:=1}"
export HOROVOD_WITH_PYTORCH HOROVOD_WITHOUT_TENSORFLOW HOROVOD_WITHOUT_MXNET
[[ -n "${HOROVOD_WITH_GLOO:-}" ]] && export HOROVOD_WITH_GLOO

# MPI only when the machine has an MPI compiler wrapper (e.g. a cluster's
# OpenMPI module).  Otherwise disable it explicitly, so that a half-installed
# MPI (runtime without headers) can't silently change what gets built.
if [[ -z "${HOROVOD_WITH_MPI:-}${HOROVOD_WITHOUT_MPI:-}" ]]; then
    if command -v mpicxx >/dev/null 2>&1 || command -v mpicc >/dev/null 2>&1; then
        export HOROVOD_WITH_MPI=1
    else
        export HOROVOD_WITHOUT_MPI=1
    fi
fi
# Without MPI, make Gloo the default CPU ops explicitly.  (CMake compares
# case-sensitively against "GLOO"; lowercase would be silently ignored.)
if [[ "${HOROVOD_WITHOUT_MPI:-}" == 1 && -z "${HOROVOD_CPU_OPERATIONS:-}" && -z "${HOROVOD_WITHOUT_GLOO:-}" ]]; then
    export HOROVOD_CPU_OPERATIONS=GLOO
fi

# CUDA: torch is a CUDA build, so if a toolkit is present Horovod's CMake
# compiles its CUDA parts, and then fails to locate the toolkit ("Could NOT find
# CUDAToolkit", "FOUND_LIB_cudart NOTFOUND") unless pointed at it.  With no
# toolkit it builds a CPU-only extension, which is what we want there.
CUDA_DIR="${HOROVOD_CUDA_HOME:-${CUDA_HOME:-/usr/local/cuda}}"
HAVE_CUDA=0
if [[ -x "$CUDA_DIR/bin/nvcc" ]]; then
    HAVE_CUDA=1
    export CUDA_HOME="$CUDA_DIR" HOROVOD_CUDA_HOME="$CUDA_DIR" CUDAToolkit_ROOT="$CUDA_DIR"
    if [[ -z "${HOROVOD_BUILD_CUDA_CC_LIST:-}" ]]; then
        # Build kernels only for this machine's GPU if there is one (faster build);
        # else sm_75, the oldest arch CUDA 13 supports; its PTX JITs on newer GPUs.
        cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)"
        export HOROVOD_BUILD_CUDA_CC_LIST="${cc:-75}"
    fi
    # NCCL only when asked for, or when the machine has a NCCL installation
    # we can name (EasyBuild's NCCL module sets EBROOTNCCL).  The nvidia-nccl pip
    # wheel that torch pulls in has no libnccl.so link, so CMake can't use it.
    if [[ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_LIB:-}" ]]; then
        for d in "${EBROOTNCCL:-}" "${NCCL_HOME:-}" "${NCCL_ROOT:-}"; do
            if [[ -n "$d" && -f "$d/include/nccl.h" ]]; then export HOROVOD_NCCL_HOME="$d"; break; fi
        done
    fi
    if [[ -z "${HOROVOD_GPU_OPERATIONS:-}${HOROVOD_GPU_ALLREDUCE:-}" ]] && [[ -n "${HOROVOD_NCCL_HOME:-}" ]]; then
        export HOROVOD_GPU_OPERATIONS=NCCL
    fi
fi
if [[ "${HOROVOD_GPU_OPERATIONS:-}${HOROVOD_GPU_ALLREDUCE:-}" == *NCCL* && "$HAVE_CUDA" == 0 ]]; then
    die "HOROVOD_GPU_OPERATIONS=NCCL needs a CUDA toolkit (set CUDA_HOME or load a CUDA module)"
fi

# The real C++ compiler that the wrapper forwards to.
REAL_CXX="$(command -v "${CXX:-g++}" 2>/dev/null)" || die "C++ compiler not found: ${CXX:-g++}"
# GCC < 10 knows C++20 only as c++2a.
if echo 'int main(){}' | "$REAL_CXX" -std=c++20 -x c++ -fsyntax-only - >/dev/null 2>&1; then CXX_STD=20; else CXX_STD=2a; fi
CXX_ID="$("$REAL_CXX" --version 2>/dev/null | head -1)"

# cmake >= 3.13 is required by Horovod; fall back to the pip package if missing.
NEED_CMAKE=0
command -v cmake >/dev/null 2>&1 || [[ -x "$VENV_BIN/cmake" ]] || NEED_CMAKE=1

# Parallelism: setup.py uses -j8 unless MAKEFLAGS is set; match the core count.
: "${MAKEFLAGS:=-j$(nproc 2>/dev/null || echo 2)}"
export MAKEFLAGS

# --- cache key ---------------------------------------------------------------
# Everything that changes the produced binary: the HOROVOD_* flags (after the
# defaults above), the toolchain, CUDA/MPI/NCCL presence, python ABI, torch.
flag_inputs() {
    echo "recipe=$RECIPE_VERSION"
    echo "torch_git=$TORCH_GIT"
    echo "arch=$(uname -m)"
    echo "cxx=$CXX_ID std=c++$CXX_STD"
    env | LC_ALL=C grep -E '^(HOROVOD_|CUDA_HOME=|CUDAToolkit_ROOT=)' | LC_ALL=C sort
    if [[ "$HAVE_CUDA" == 1 ]]; then echo "nvcc=$("$CUDA_DIR/bin/nvcc" --version | tail -1)"; fi
    if [[ "${HOROVOD_WITH_MPI:-}" == 1 ]]; then echo "mpi=$( (mpirun --version 2>&1 || true) | head -1)"; fi
}
FLAGS_HASH="$(flag_inputs | sha256sum | cut -c1-12)"
KEY="torch-${TORCH_VERSION}-${PY_TAG}-${FLAGS_HASH}"
# The key lives in the folder name: the wheel file keeps the name pip gave it,
# because pip refuses wheels whose filename isn't a valid wheel name.
KEY_DIR="$CACHE_DIR/horovod-$HOROVOD_VERSION/$KEY"
mkdir -p "$KEY_DIR"

find_cached_wheel() {
    local w
    for w in "$KEY_DIR"/horovod-"$HOROVOD_VERSION"-*.whl; do
        # A zip check catches truncated files left by older/foreign writers.
        if [[ -f "$w" ]] && "$PY" -c 'import sys, zipfile; sys.exit(not zipfile.is_zipfile(sys.argv[1]))' "$w"; then
            echo "$w"; return 0
        fi
    done
    return 1
}

pip_() { "$PY" -m pip --disable-pip-version-check "$@"; }

# Runtime deps are needed either way and are no-ops once satisfied.
extra=()
"$PY" -c 'import setuptools' 2>/dev/null || extra+=(setuptools)
[[ "$NEED_CMAKE" == 1 ]] && extra+=(cmake)
pip_ install -q "${DEPS[@]}" "${extra[@]}" >&2

# Serialise concurrent runs for the same key: the second waits and then hits the cache.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$KEY_DIR/.lock"
    flock 9
fi

WHEEL=""
if [[ "$FORCE_REBUILD" == 0 ]] && WHEEL="$(find_cached_wheel)"; then
    log "cache hit: $WHEEL"
else
    [[ "$FORCE_REBUILD" == 1 ]] && log "--force-rebuild: ignoring cache entry $KEY"
    # The CXX wrapper.  Horovod's CMake sets CMAKE_CXX_STANDARD 14 (and Gloo 11/17),
    # which CXXFLAGS can't override, but torch's headers #error below C++20.  nvcc
    # also uses CMAKE_CXX_COMPILER as its host compiler; its internal calls must
    # pass unchanged (rewriting them breaks nvcc: "identifier char8_t is undefined").
    WRAP="$TMP/cxx-std-wrapper"
    cat >"$WRAP" <<EOF
#!/usr/bin/env bash
# Generated by scripts/install-horovod.sh: forwards to $REAL_CXX with -std=c++XX -> c++$CXX_STD.
for a in "\$@"; do
    case "\$a" in
        *__CUDACC__*|*__NVCC__*|*.cudafe*|*.cpp1.ii|*.cpp4.ii) exec "$REAL_CXX" "\$@" ;;
    esac
done
args=()
for a in "\$@"; do
    case "\$a" in
        -std=c++11|-std=c++0x|-std=c++14|-std=c++1y|-std=c++17|-std=c++1z) args+=("-std=c++$CXX_STD") ;;
        -std=gnu++11|-std=gnu++0x|-std=gnu++14|-std=gnu++1y|-std=gnu++17|-std=gnu++1z) args+=("-std=gnu++$CXX_STD") ;;
        *) args+=("\$a") ;;
    esac
done
exec "$REAL_CXX" "\${args[@]}"
EOF
    chmod +x "$WRAP"
    export CXX="$WRAP"

    flag_inputs >"$TMP/build-flags.txt"
    BUILD_LOG="$KEY_DIR/build.log"
    log "building horovod $HOROVOD_VERSION against torch $TORCH_VERSION (≈2 min on 2 cores; $(nproc) here, CUDA=$HAVE_CUDA, ${HOROVOD_WITH_MPI:+MPI=1, }${HOROVOD_GPU_OPERATIONS:+GPU ops=$HOROVOD_GPU_OPERATIONS, }log: $BUILD_LOG)…"
    start=$SECONDS
    # --no-build-isolation: compile against *this* torch, not a fresh one from PyPI.
    # --no-cache-dir: pip's own wheel cache keys only on the sdist, so it could hand
    # back a wheel built against another torch; our cache replaces it.
    if ! PATH="$VENV_BIN:$PATH" pip_ wheel --no-build-isolation --no-deps --no-cache-dir \
            -v "horovod==$HOROVOD_VERSION" -w "$TMP/dist" >"$BUILD_LOG" 2>&1; then
        # pip's own epilogue hides the cause; show the first compiler/CMake errors.
        grep -m 8 -A 3 -E 'CMake Error|error:|#error|Could NOT find' "$BUILD_LOG" | grep -v -E '^\s*(ERROR: |error: subprocess-exited)' >&2 \
            || tail -n 40 "$BUILD_LOG" >&2
        die "build failed after $((SECONDS - start))s; full log: $BUILD_LOG"
    fi
    built=("$TMP"/dist/horovod-"$HOROVOD_VERSION"-*.whl)
    [[ -f "${built[0]}" ]] || die "pip wheel produced no horovod wheel; see $BUILD_LOG"
    log "built $(basename "${built[0]}") in $((SECONDS - start))s"
    # Atomic publish: copy next to the destination, then rename (same filesystem),
    # so a reader never sees a half-written wheel.
    WHEEL="$KEY_DIR/$(basename "${built[0]}")"
    cp "${built[0]}" "$KEY_DIR/.incoming.$$"
    mv -f "$KEY_DIR/.incoming.$$" "$WHEEL"
    cp "$TMP/build-flags.txt" "$KEY_DIR/build-flags.txt"
    log "cached: $WHEEL"
fi

# --force-reinstall: an installed horovod 0.28.1 may have been built against another
# torch (same version string), so pip's "already satisfied" would be wrong.
pip_ install -q --no-deps --force-reinstall "$WHEEL" >&2
log "installed $(basename "$WHEEL") into $(dirname "$VENV_BIN")"

# --- verify ------------------------------------------------------------------
# horovodrun spawns `python`/`horovodrun` by name, so the venv's bin must lead PATH.
out="$(PATH="$VENV_BIN:$PATH" "$VENV_BIN/horovodrun" --check-build 2>&1)" \
    || { printf '%s\n' "$out" >&2; die "horovodrun --check-build failed"; }
printf '%s\n' "$out" >&2
grep -q '\[X\] PyTorch' <<<"$out" || die "horovod was built without PyTorch support"
if [[ -z "${HOROVOD_WITHOUT_GLOO:-}" ]]; then
    [[ "$(grep -c '\[X\] Gloo' <<<"$out")" -ge 2 ]] || die "horovod was built without the Gloo controller/ops"
fi
if [[ "${HOROVOD_WITH_MPI:-}" == 1 ]]; then
    grep -q '\[X\] MPI' <<<"$out" || die "HOROVOD_WITH_MPI=1 but MPI is not built"
fi
if [[ "${HOROVOD_GPU_OPERATIONS:-}" == NCCL ]]; then
    grep -q '\[X\] NCCL' <<<"$out" || die "HOROVOD_GPU_OPERATIONS=NCCL but NCCL ops are not built"
fi
log "ok: horovod $HOROVOD_VERSION for torch $TORCH_VERSION ($KEY)"
