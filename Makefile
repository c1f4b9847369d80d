# The README's two commands: `make demo` and `make test`. Both create or reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch for this kind of machine (x86_64, Python 3.11: a CUDA build that also runs on CPU).
# On a cluster, load your site's PyTorch module or set TORCH_SPEC to what fits its CUDA.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: venv horovod slurm-up slurm-down demo test lint gpu-wheels

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[train,analysis,dev]"
	touch $@

horovod: venv
	scripts/install-horovod.sh --python $(PY)

slurm-up:
	scripts/slurm-dev-cluster.sh up

slurm-down:
	scripts/slurm-dev-cluster.sh down

demo: venv horovod
	$(VENV)/bin/dnnbench sweep +sweep=quickstart

# Starts the dev Slurm cluster when this machine can (root, or Slurm already installed);
# the Slurm tests skip otherwise, and fail instead when DNNBENCH_REQUIRE_SLURM=1 (CI).
test: venv horovod
	@if [ "$$(id -u)" = 0 ] || command -v slurmctld >/dev/null; then scripts/slurm-dev-cluster.sh up; \
	else echo "not root and no Slurm installed: Slurm tests will be skipped"; fi
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check orchestrator jobs conf

# What scripts/gpu-check.sh needs on a GPU machine that has PyTorch but no internet, in one
# folder to carry: the pure-Python packages torch does not bring (benchmarks/gpu_check_preflight.py
# lists them), as wheels of the versions installed here, verified to import and plan a cell with
# nothing but the standard library beside them; and an MNIST root (.whl/mnist) made from the real
# test split when this machine has it (as the tests make theirs): `scripts/gpu-check.sh --mnist-root .whl/mnist`.
gpu-wheels: venv
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip wheel -q --no-deps -w .whl $$($(PY) -c 'from importlib.metadata import version; \
		from benchmarks.gpu_check_preflight import CARRIED; \
		print(" ".join(f"{n.distribution}=={version(n.distribution)}" for n in CARRIED))')
	$(PY) benchmarks/gpu_check_preflight.py wheels .whl
	$(PY) -c 'import sys; sys.path.insert(0, "tests"); from pathlib import Path; \
		from conftest import build_mnist_root, mnist_source; source = mnist_source(); \
		print(build_mnist_root(source, Path(".whl/mnist")) if source else "no MNIST source here")'
	ls .whl
