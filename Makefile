# The venv lives outside the clone, keyed by the dependency set: torch alone is several GB,
# so a fresh clone (CI) reuses it instead of reinstalling.
PYTHON ?= python3
VENV_ROOT ?= $(HOME)/.cache/ctloop
VENV := $(VENV_ROOT)/venv-$(shell $(PYTHON) tools/venv_key.py)
BIN := $(VENV)/bin
STAMP := .ctloop-installed

.PHONY: demo test lint venv render clean

demo: $(STAMP)
	$(BIN)/ctloop demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

render: $(STAMP)
	$(BIN)/ctloop render

venv: $(VENV)/.complete

$(VENV)/.complete: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The editable install points at this clone; redo it when the clone or the venv changes.
$(STAMP): $(VENV)/.complete
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	ln -sfn $(VENV) .venv
	touch $@

clean:
	rm -rf $(STAMP) .venv .ctloop .pytest_cache
