# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export GX_ANALYTICS_ENABLED := false
export MPLBACKEND := Agg

.PHONY: setup test lint format demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and explicitly: this pair installs from local disk; others download GBs.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports   # the layer rule: cscl never imports the platform (docs/ARCHITECTURE.md)
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

demo: setup
	$(BIN)/python -m cscl_platform.demo

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) dist data/demo runs .pytest_cache
