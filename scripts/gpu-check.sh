#!/usr/bin/env bash
# Prove dnnbench's GPU paths on one GPU in a few minutes (nccl, CUDA memory peaks, synchronised
# timing, AMP, harness overhead); on a CPU it runs a small subset and skips the GPU-only checks.
#   scripts/gpu-check.sh [--out DIR] [--steps N] [--mnist-root DIR]
# A GPU machine with PyTorch but without hydra-core/omegaconf: put their wheels in .whl/
# (pure Python: hydra-core, omegaconf, antlr4-python3-runtime) and they are used from there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=${PYTHON:-python3}; fi
if ! "$py" -c 'import hydra, omegaconf' 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        site=${TMPDIR:-/tmp}/dnnbench-site
        "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu-check: hydra-core/omegaconf missing and no wheels in .whl/ (see the header of this script)" >&2
        exit 2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" benchmarks/gpu_check.py "$@"
