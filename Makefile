# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the suite).
# Both create .venv and install anychip into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test check bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# MovieLens-100k for anychip.rec's tests: RecBole ships it; its own deps are not needed
	$(BIN)/pip install -q --no-deps recbole==1.2.1
	touch $@

demo: $(BIN)/.installed
	$(BIN)/anychip demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 -q

check: $(BIN)/.installed
	PATH=$(BIN):$$PATH scripts/check

bench: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
