# The venv lives outside the clone so a fresh clone (CI) reuses it: torch alone is several GB.
# It is updated in place when the dependency set changes (its key names a marker file), so a new
# dependency costs one small install, not a fresh download of everything.
PYTHON ?= python3
VENV_ROOT ?= $(HOME)/.cache/ctloop
VENV := $(VENV_ROOT)/venv-py$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
DEPS := $(VENV)/.deps-$(shell $(PYTHON) tools/venv_key.py)
BIN := $(VENV)/bin
# Which clone the editable install points at; another clone's `make` takes it over.
STAMP := $(VENV)/.editable-$(shell printf '%s' "$(CURDIR)" | sha256sum | cut -c1-12)

.PHONY: demo test lint venv render clean image image-kafka image-base

demo: $(STAMP) .venv
	$(BIN)/ctloop demo

test: $(STAMP) .venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP) .venv
	$(BIN)/ruff check .

render: $(STAMP) .venv
	$(BIN)/ctloop render

venv: $(DEPS)

$(DEPS):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.deps-*
	touch $@

$(STAMP): $(DEPS)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.editable-*
	touch $@

# Images, built with Docker's BuildKit (docker/build.sh says which base it uses and why): the runtime image
# ghcr.io/ctloop/ctloop:<version> and the control image ghcr.io/ctloop/ctloop-control:<version>.
image:
	docker/build.sh runtime control

# The Kafka broker image the test suite starts through testcontainers (Settings.kafka_image).
image-kafka:
	docker/build.sh kafka

# A Debian bookworm base built from Debian packages, for machines that cannot pull debian:bookworm-slim.
image-base:
	docker/build.sh base

# A convenience link in the clone, so `.venv/bin/ctloop` works after either command.
.venv:
	ln -sfn $(VENV) .venv

clean:
	rm -rf .venv .ctloop .pytest_cache
