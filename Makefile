# The two user-facing commands are `make demo` and `make test`; each creates .venv when missing.
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Pinned for this stack: torch 2.14 CPU/CUDA wheels, setuptools < 82 keeps pkg_resources for OpenMMLab.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1 setuptools==80.9.0

.PHONY: demo test test-slow lint bench gpu-check venv mmcv-full clean

$(VENV)/.core: pyproject.toml
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[wandb]'
	touch $@

$(VENV)/.mm: $(VENV)/.core
	$(PIP) install -q -e '.[mm]'
	touch $@

$(VENV)/.dev: $(VENV)/.mm
	$(PIP) install -q -e '.[dev,mm,export]'
	# NATTEN's sdist needs the installed torch at build time, hence no build isolation.
	$(PIP) install -q --no-build-isolation 'natten==0.21.7'
	touch $@

venv: $(VENV)/.dev

# Trains VWFormer + BiFormer-T on the generated ADE20K-layout demo set (a few minutes on a 2-core CPU), evaluates
# mIoU, and draws prediction overlays.
DEMO_CFG := configs/ade20k/vwformer_biformer-t_demo.py
DEMO_DIR := work_dirs/vwformer_biformer-t_demo
demo: $(VENV)/.mm
	$(PY) tools/make_demo_data.py --out data/demo --which ade20k
	$(PY) tools/train.py $(DEMO_CFG) --work-dir $(DEMO_DIR)
	$(PY) tools/visualize.py $(DEMO_CFG) $(DEMO_DIR)/iter_120.pth --num 2 --out $(DEMO_DIR)/overlays
	@echo "checkpoint: $(DEMO_DIR)/iter_120.pth"
	@echo "overlays:   $(DEMO_DIR)/overlays/"
	@$(PY) tools/final_metric.py $(DEMO_DIR) --key mIoU

# Two pytest-xdist workers, a test file each at a time (a file's fixtures are built once), one core each.
XDIST := -n 2 --dist loadfile
test: $(VENV)/.dev
	$(PY) -m pytest -q $(XDIST) tests

test-slow: $(VENV)/.dev
	$(PY) -m pytest -q $(XDIST) -m slow tests

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check vitzoo tests tools benchmarks
	$(VENV)/bin/ruff format --check vitzoo tests tools benchmarks

bench: $(VENV)/.core
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_resolution.py

# One bounded (under 8 minutes) check on a lent GPU machine: GPU tests, op benchmark, model matrix, results in $$OUT.
# No venv prerequisite: that machine runs its image's python3 on a copy of the working tree; see benchmarks/README.md.
# PY is passed explicitly because this Makefile's own PY (the venv's) would otherwise reach the script's environment.
GPU_PY ?= python3
gpu-check:
	PY=$(GPU_PY) bash benchmarks/gpu_check.sh

# Full mmcv 2.1.0 with its compiled CPU ops, replacing mmcv-lite (about 10-17 minutes on 2 cores). torch 2.14's
# headers need C++20 where mmcv's setup.py asks for C++17; vitzoo.mm then uses mmcv's kernels instead of its stand-ins.
MMCV_SRC := build/mmcv-src
mmcv-full: $(VENV)/.dev
	rm -rf $(MMCV_SRC) && mkdir -p $(MMCV_SRC)
	# --no-build-isolation: the isolated build env would bring a setuptools without pkg_resources, which setup.py needs
	$(PIP) download -q --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0 -d $(MMCV_SRC)
	tar -xzf $(MMCV_SRC)/mmcv-2.1.0.tar.gz -C $(MMCV_SRC)
	sed -i 's/-std=c++17/-std=c++20/g' $(MMCV_SRC)/mmcv-2.1.0/setup.py
	$(PIP) uninstall -q -y mmcv-lite
	cd $(MMCV_SRC)/mmcv-2.1.0 && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 $(abspath $(PY)) -m pip install -q --no-build-isolation .

clean:
	rm -rf $(VENV) build *.egg-info
