#!/usr/bin/env bash
# Prove dnnbench's GPU paths on one GPU in a few minutes (nccl, CUDA memory peaks, synchronised
# timing, AMP, harness overhead); on a CPU it runs a small subset and skips the GPU-only checks.
#   scripts/gpu-check.sh [--out DIR] [--steps N] [--mnist-root DIR]
# A GPU machine with PyTorch but without hydra-core/omegaconf (and no internet): run
# `make gpu-wheels` where pip works, carry .whl/ along, and the wheels are used from there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=${PYTHON:-python3}; fi
if ! "$py" -c 'import hydra, omegaconf' 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        site=${TMPDIR:-/tmp}/dnnbench-site
        "$py" -m pip install -q --upgrade --no-index --no-deps --no-compile --target "$site" .whl/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu-check: hydra-core/omegaconf missing and no wheels in .whl/ (see the header of this script)" >&2
        exit 2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
# The tests that need a GPU (marked gpu) run here, where one is: CI has none. Named files
# only, so that collecting the other test modules cannot fail on what this machine lacks.
if "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    if "$py" -c 'import pytest' 2>/dev/null; then
        "$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_measure.py || status=1
    else
        echo "gpu-check: pytest is not installed here: the gpu-marked tests did not run" >&2
    fi
fi
"$py" benchmarks/gpu_check.py "$@" || status=1
exit $status
