# The two user-facing commands are `make demo` and `make test`; each creates .venv when missing.
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Pinned for this stack: torch 2.14 CPU/CUDA wheels, setuptools < 82 keeps pkg_resources for OpenMMLab.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1 setuptools==80.9.0

.PHONY: demo test test-slow lint bench venv clean

$(VENV)/.core: pyproject.toml
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[wandb]'
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(PIP) install -q -e '.[dev]'
	# NATTEN's sdist needs the installed torch at build time, hence no build isolation.
	$(PIP) install -q --no-build-isolation 'natten==0.21.7'
	touch $@

venv: $(VENV)/.dev

demo: $(VENV)/.core
	$(VENV)/bin/vitzoo list
	$(VENV)/bin/vitzoo bench vitzoo_van_b0 vitzoo_biformer_t --batch-size 8 --iters 5 --warmup 2 \
		--out benchmarks/results/demo.json

test: $(VENV)/.dev
	$(PY) -m pytest -q tests

test-slow: $(VENV)/.dev
	$(PY) -m pytest -q -m slow tests

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check vitzoo tests tools benchmarks
	$(VENV)/bin/ruff format --check vitzoo tests tools benchmarks

bench: $(VENV)/.core
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_resolution.py

clean:
	rm -rf $(VENV) build *.egg-info
