# The README's two commands: `make run` (the embedded default study) and `make test`.
# Both create the virtual environment first; `make venv` is idempotent and quick when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch to install when the venv has none. On this machine kind pip is capped at torch 2.14.1, whose CUDA build
# runs on CPU and matches torchvision 0.29.1 (the 2.13 CPU file + PyPI torchvision breaks `import timm`).
# On a GPU cluster, pre-install your CUDA torch in the venv (or set TORCH_SPEC): an importable torch is kept.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.repa-study-installed
PYTEST_ARGS ?=

.PHONY: venv run test faults clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch, torchvision" 2>/dev/null; then \
	  echo "venv: keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
	  echo "venv: installing $(TORCH_SPEC)"; $(PY) -m pip install -q $(TORCH_SPEC); \
	fi
	@$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

run: venv
	$(VENV)/bin/repa-study run

# The SLURM tests need a local single-node cluster: brought up when possible (root + apt), always taken down.
test: venv
	@if tests/slurm/cluster.sh install && tests/slurm/cluster.sh up; then \
	  trap 'tests/slurm/cluster.sh down' EXIT; \
	else echo "make test: no local SLURM cluster (needs root and apt): the slurm tests will skip"; fi; \
	$(PY) -m pytest $(PYTEST_ARGS)

# The fault-injection suite alone (also part of `make test`): kills, damaged and planted files, full disks (tmpfs;
# root), torn lines, locks, the queue's word, preflight. About a minute on 2 cores (docs/cluster.md, "What survives
# what").
faults: venv
	$(PY) -m pytest tests/faults $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
