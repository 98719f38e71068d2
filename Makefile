# The two commands of the README's quick start, and what they stand on.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
DEMO_LAKE ?= demo-lake
DEMO_USERS ?= 2000
DEMO_DAYS ?= 60
DEMO_END ?= 2026-09-30

.PHONY: install demo test lock clean

install: $(VENV)/.installed

# Re-installs whenever the lock or setup.py changes; the lock pins every package.
$(VENV)/.installed: requirements.lock setup.py
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "portrait needs Python 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: install
	$(BIN)/portrait generate --users $(DEMO_USERS) --days $(DEMO_DAYS) --end $(DEMO_END) --lake $(DEMO_LAKE) --seed 7
	$(BIN)/portrait run --date $(DEMO_END) --lake $(DEMO_LAKE)
	$(BIN)/portrait show --sample --lake $(DEMO_LAKE)

test: install
	$(BIN)/python -m pytest

# Regenerate the full pinned set from the top-level pins in requirements.in.
lock: install
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.lock

clean:
	rm -rf $(VENV) $(DEMO_LAKE) .pytest_cache
