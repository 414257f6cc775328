# medvol — set-up and test entry points. Each target creates/refreshes .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# extras installed into .venv: tests, Prefect flows, registration training data. The ASTRA
# backend is GPL-3 and only installed when asked: `make test ASTRA=1`.
ASTRA  ?= 0
comma  := ,
EXTRAS := test,flows,learned,ssp$(if $(filter 1 yes true,$(ASTRA)),$(comma)astra)
# re-install when pyproject.toml or the extras change
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-12)-$(subst $(comma),-,$(EXTRAS))
PYTEST_ARGS ?=
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.cache/prefect
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba
export MPLBACKEND := Agg

.PHONY: all venv test test-fast demo bench clean help

help:
	@echo "make demo       - ingest + reconstruct the bundled sample data into demo_out/"
	@echo "make test       - run the test suite (GPU tests skip without CUDA; ASTRA tests skip"
	@echo "                  unless installed: make test ASTRA=1 adds the GPL astra-toolbox extra)"
	@echo "make test-fast  - tests without the ones marked slow"
	@echo "make bench      - print the benchmark tables (benchmarks/*.py)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python sample_data/demo.py --out demo_out

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/projectors.py
	$(BIN)/python benchmarks/recon_quality.py

clean:
	rm -rf demo_out .pytest_cache .cache
