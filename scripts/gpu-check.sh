#!/usr/bin/env bash
# Prove dnnbench's GPU paths on one GPU in a few minutes (nccl, CUDA memory peaks, synchronised
# timing, AMP, harness overhead); on a CPU it runs a small subset and skips the GPU-only checks.
#   [PYTHON=python3] scripts/gpu-check.sh [--out DIR] [--steps N] [--pairs N] [--mnist-root DIR]
# PYTHON: the interpreter (default .venv/bin/python when there is one, else python3).
# A GPU machine with PyTorch but without hydra-core/omegaconf/PyYAML/packaging (and no internet):
# run `make gpu-wheels` where pip works, carry .whl/ along (or name the folder in
# DNNBENCH_WHEELS), and the wheels are used from there. Every module the check imports is
# checked before anything runs (again after installing the wheels), and torchvision against
# this torch; what is missing is listed, then it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
wheels=${DNNBENCH_WHEELS:-.whl}
preflight=benchmarks/gpu_check_preflight.py
if ! missing=$("$py" "$preflight" imports 2>&1); then
    if compgen -G "$wheels/*.whl" >/dev/null; then
        site=${TMPDIR:-/tmp}/dnnbench-site
        for wheel in "$wheels"/*.whl; do  # one by one: a wheel for another Python must not stop the others
            "$py" -m pip install -q --upgrade --no-index --no-deps --no-compile --target "$site" "$wheel" ||
                echo "gpu-check: $(basename "$wheel") does not install on $("$py" -V 2>&1)" >&2
        done
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        "$py" "$preflight" imports || exit 2  # again: what the wheels did not bring
    else
        printf '%s\n' "$missing" >&2
        echo "gpu-check: no wheels in $wheels/ to install from (run \`make gpu-wheels\` where pip works)" >&2
        exit 2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
# The tests that need a GPU (marked gpu) run here, where one is: CI has none. Named files
# only, so that collecting the other test modules cannot fail on what this machine lacks.
if "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    if "$py" -c 'import pytest' 2>/dev/null; then
        "$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_measure.py tests/test_gpu_validity.py || status=1
    else
        echo "gpu-check: pytest is not installed here: the gpu-marked tests did not run" >&2
    fi
fi
"$py" benchmarks/gpu_check.py "$@" || status=$?  # 1: a check failed; 2: bad input, nothing ran
exit $status
