# The commands of the README (demo, test, test-fast), and what they stand on.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
DEMO_LAKE ?= demo-lake
DEMO_USERS ?= 2000
DEMO_START ?= 2026-09-01
DEMO_END ?= 2026-09-30
DEMO_DAYS ?= 30
# DEMO_DAYS days end at DEMO_END; the history is cleaned up to the day before.
DEMO_HISTORY_END ?= 2026-09-29

.PHONY: install jars demo lint test test-fast lock clean

install: $(VENV)/.installed jars

# Re-installs whenever the lock or pyproject.toml changes; the lock pins every package.
# Editable in compat mode: plain paths in .pth files (the checkout for jobs/, lib/
# for portrait), which editors and type checkers follow, unlike an import finder.
# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on
# these machines) every process would otherwise compile Great Expectations,
# pyspark and Airflow from source again (5-12 s of each task's start).
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "portrait needs Python 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --config-settings editable_mode=compat -e .
	printf '%s\n' $(CURDIR)/lib > $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/portrait-lib.pth
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null
	touch $@

# The JVM engines' jars (Delta Lake, ...), pinned in jvm-jars.txt, copied from Maven
# Central into a folder this Makefile owns; fetched again only when the list changes.
# The library finds them there (or wherever PORTRAIT_JARS points).
JARS_DIR := .cache/jars
jars: $(JARS_DIR)/.fetched

$(JARS_DIR)/.fetched: jvm-jars.txt
	rm -rf $(JARS_DIR) && mkdir -p $(JARS_DIR)
	grep -Ev '^[[:space:]]*(#|$$)' jvm-jars.txt | while read -r coordinate; do \
		mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy -Dartifact="$$coordinate" -DoutputDirectory=$(JARS_DIR) || exit 1; \
	done
	touch $@

# A month of landing data; the days before the last are cleaned and summed (the history a
# daily run finds), then the Airflow DAG runs the whole pipeline for the last
# day (`airflow dags test`: real Airflow, SQLite metadata DB under the lake).
DEMO_AIRFLOW = AIRFLOW_HOME=$(abspath $(DEMO_LAKE))/airflow AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags PORTRAIT_LAKE=$(abspath $(DEMO_LAKE))

demo: install
	$(BIN)/portrait generate --users $(DEMO_USERS) --days $(DEMO_DAYS) --end $(DEMO_END) --lake $(DEMO_LAKE) --seed 7
	$(BIN)/portrait run --date $(DEMO_START) --until $(DEMO_HISTORY_END) --to aggregate --lake $(DEMO_LAKE)
	$(DEMO_AIRFLOW) $(BIN)/airflow db migrate > /dev/null
	$(DEMO_AIRFLOW) PATH=$(abspath $(BIN)):$$PATH $(BIN)/airflow dags test portrait_daily $(DEMO_END) > $(DEMO_LAKE)/airflow-dags-test.log 2>&1 \
		|| (tail -40 $(DEMO_LAKE)/airflow-dags-test.log; exit 1)
	@grep -E "DagRun Finished|state=" $(DEMO_LAKE)/airflow-dags-test.log | tail -1
	$(BIN)/portrait show --sample --lake $(DEMO_LAKE)
	@echo "explore it: $(BIN)/portrait users add me --role operator --lake $(DEMO_LAKE)  (prints a token), then $(BIN)/portrait serve --lake $(DEMO_LAKE) --port 8765 and log in at http://127.0.0.1:8765/"

# Lint and format check first: a style slip fails in seconds, not after the suite.
lint: install
	$(BIN)/ruff check lib jobs dags tests
	$(BIN)/ruff format --check lib jobs dags tests

# Test files run on TEST_WORKERS processes (pytest-xdist; a file stays on one worker, its
# module fixtures built once). Two fit CI's two cores: the engine keeps about one busy per run.
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Everything (CI): unit tests, the JVM, real Airflow, clusters, object store, browser.
test: lint
	$(PYTEST)

# The loop while editing: no JVM, no Airflow, no cluster, no browser (under 3 minutes).
FAST_TESTS = not jvm and not airflow and not cluster and not s3 and not browser and not slow
test-fast: lint
	$(PYTEST) -m "$(FAST_TESTS)"

# Regenerate the full pinned set from the top-level pins in requirements.in.
lock: install
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.lock

clean:
	rm -rf $(VENV) $(DEMO_LAKE) .pytest_cache $(JARS_DIR)
