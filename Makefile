# dance: `make test` (lint, types, whole suite) and `make demo` (the main job on the embedded default).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint types unit bench soak clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "python3 -m venv is missing: installing python3-venv"; \
	      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
	    else \
	      echo "error: python3 -m venv failed; install python3-venv (apt-get install python3-venv)" >&2; exit 2; \
	    fi; }; \
	fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint types unit

demo: $(STAMP)
	$(BIN)/dance demo

bench: $(STAMP)
	$(BIN)/python bench/bench_match.py
	$(BIN)/python bench/bench_auth.py
	$(BIN)/python bench/bench_agent.py
	$(BIN)/python bench/bench_authority.py
	$(BIN)/python bench/bench_provision.py
	$(BIN)/python bench/bench_message.py
	$(BIN)/python bench/bench_tls.py
	$(BIN)/python bench/bench_ssh.py

soak: $(STAMP)
	$(BIN)/python bench/soak_tls.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build src/*.egg-info
