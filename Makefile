# Every target builds the virtualenv .venv/ from pyproject.toml + requirements.lock first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCENARIO ?= all

.PHONY: help install lint format typecheck test test-fast docs demo bench chaos lock clean

help:
	@echo "make demo      start the sandbox, import samples/, print the summary"
	@echo "make test      ruff, import-linter, mypy --strict, pytest (every test)"
	@echo "make test-fast the same checks and the tests not marked slow"
	@echo "make docs      build the docs site (mkdocs --strict) into site/"
	@echo "make format    ruff format and the fixable ruff rules"
	@echo "make bench     benchmarks (SCENARIO=validate|throughput|rate|latency|sequential|memory|references|shared|report-html|spreadsheet|first-import; rate60 and own-cost only by name)"
	@echo "make chaos     fault drill: SIGKILLs, sandbox restarts, hostile files"

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev,bench,docs]'
	@# An editable install leaves worker/ uncompiled: every run would compile it again.
	$(BIN)/python -m compileall -q worker
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench
	$(BIN)/ruff format --check worker tests bench
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix worker tests bench
	$(BIN)/ruff format worker tests bench

typecheck: $(STAMP)
	$(BIN)/mypy worker tests bench

test: lint typecheck
	$(BIN)/pytest

test-fast: lint typecheck
	$(BIN)/pytest -m "not slow"

# Not --quiet: it hides warnings, so --strict would pass a broken link.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

demo: $(STAMP)
	$(BIN)/python -m worker.commands.demo

bench: $(STAMP)
	$(BIN)/python -m bench.run --scenario $(SCENARIO) $(BENCH_FLAGS)

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos

# Re-pin requirements.lock from the bounds in pyproject.toml (needs the package registry).
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet -e '.[dev,bench,docs]'
	.lockvenv/bin/pip freeze --exclude-editable | grep -v '^flextell-worker' > requirements.lock
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) site .mypy_cache .ruff_cache .pytest_cache build *.egg-info
