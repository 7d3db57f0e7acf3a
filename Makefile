# dance: `make test` (lint, types, whole suite) and `make demo` (the main job on the embedded default).
# Development and CI install the exact versions in requirements/dev.lock (hashes checked);
# `make lock` regenerates it from pyproject.toml; `make test-latest` runs the suite on the newest
# versions pyproject.toml allows, in a separate venv, to find breakage before users do.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements/dev.lock
PIP    := PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/python -m pip

.PHONY: test demo lint types unit bench bench-quick bench-report soak clean venv lock test-latest wheel

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
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
	$(PIP) install -q --require-hashes -r $(LOCK)
	$(PIP) install -q --no-deps -e .
	@touch $(STAMP)

# Regenerate the lock from pyproject.toml (newest versions the ranges allow, with hashes).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --universal \
	  --python-version 3.11 -o $(LOCK) -q
	@echo "wrote $(LOCK); run 'make test' to try it"

# The suite on the newest allowed versions, without touching .venv or the lock.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q --upgrade -e '.[dev]'
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	@echo "installed: $$(grep -Ei '^(cryptography|dnspython|idna)==' .venv-latest/versions.txt | tr '\n' ' ')"
	.venv-latest/bin/ruff check src tests bench
	.venv-latest/bin/mypy
	.venv-latest/bin/pytest

# A wheel and an sdist in dist/.
wheel: $(STAMP)
	$(BIN)/python -m build --outdir dist .

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
	$(BIN)/python bench/bench_proxy_http.py
	$(BIN)/python bench/bench_workers.py
	$(BIN)/python bench/report.py

# Each bench script with --quick (at most about 30 s each), then docs/performance.md from the
# results they wrote under bench/results/.
BENCH_QUICK := bench_match bench_auth bench_ssh bench_workers bench_authority bench_dns bench_tls bench_proxy_http bench_agent
bench-quick: $(STAMP)
	@for b in $(BENCH_QUICK); do echo "== $$b"; $(BIN)/python bench/$$b.py --quick || exit 1; done
	$(BIN)/python bench/report.py

bench-report: $(STAMP)
	$(BIN)/python bench/report.py

# The long load-and-abuse runs (issue 13), several minutes each: `dance proxy` (floods, holders,
# backend and DNS faults and restarts, 3 rounds with a leak check), then `dance agent`,
# `dance ssh-keys-daemon` and `dance authority`. SOAK_ARGS passes options to both scripts.
soak: $(STAMP)
	$(BIN)/python bench/soak_tls.py $(SOAK_ARGS)
	$(BIN)/python bench/soak_servers.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .venv-latest dist .mypy_cache .pytest_cache .ruff_cache .hypothesis build src/*.egg-info

# The long fuzz run (issue 12): tests/fuzz with a large hypothesis budget, then the plain
# mutation loops of bench/fuzz_long.py over every front door; prints inputs per door and the
# total (about 2.8 million by default). FUZZ_ARGS passes options, e.g. FUZZ_ARGS="--scale 0.1".
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz_long.py $(FUZZ_ARGS)
