# Each target bootstraps .venv itself, so a fresh clone needs exactly one command.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-status bench-tui bench-log clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m immich_tui.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/status_bench.py
	$(BIN)/python bench/tui_bench.py
	$(BIN)/python bench/log_bench.py

bench-status: $(STAMP)
	$(BIN)/python bench/status_bench.py

bench-tui: $(STAMP)
	$(BIN)/python bench/tui_bench.py

bench-log: $(STAMP)
	$(BIN)/python bench/log_bench.py

clean:
	rm -rf $(VENV) .demo bench/.work
