# The two commands of the README contract: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

.PHONY: run logs test test-unit test-integration demo bench check-env install browser compose-tools postgres-server jvm-deps compose-env clean-state

check-env:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null || \
	  { echo "Python 3.11 is required (found: $$($(PYTHON) --version 2>&1)); install python3.11 or run 'make PYTHON=/path/to/python3.11 ...'."; exit 1; }
	@java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])' || \
	  { echo "Java 17 or newer is required by Spark; install it (Debian: apt-get install openjdk-17-jre-headless) and make sure 'java' is on PATH."; exit 1; }

$(STAMP): pyproject.toml constraints.txt | check-env
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@# The Spark provider pulls pyspark-client (no JVM, older version) into the same
	@# package directory; reinstall pyspark last so its files are the ones on disk.
	$(PIP) install -q --force-reinstall --no-deps "$$(grep '^pyspark==' constraints.txt)"
	@touch $(STAMP)

# Apache Kafka's broker (the embedded one) and Spark's own Kafka connector (jvm/*.ivy.xml,
# pinned by jvm/*.lock), resolved from Maven Central once into .cache/jvm by the Ivy jar
# inside pyspark: Java and the venv are all it needs.
JVM_DEPS := .cache/jvm/.resolved
$(JVM_DEPS): $(wildcard jvm/*.ivy.xml jvm/*.lock) | $(STAMP)
	$(PY) -m marketstream.jvm_deps
	@touch $@

jvm-deps: $(JVM_DEPS)

# The Spark driver's class-data-sharing archive (marketstream/spark/class_archive.py): a
# restart after a crash loads Spark's classes from it, seconds sooner. Built by running
# the job for a minute; without it the job only starts slower, so a failure is a warning.
CLASS_ARCHIVE := var/spark/orderbook-classes.jsa
$(CLASS_ARCHIVE): $(STAMP) $(JVM_DEPS)
	-SPARK_CLASS_ARCHIVE="$(abspath $@)" $(PY) -m marketstream.embedded.class_archive

install: check-env $(STAMP) $(JVM_DEPS) $(CLASS_ARCHIVE)


# Debian's Chromium for the dashboard's browser test (no browser download).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "The dashboard browser test needs Debian's chromium: sudo apt-get install chromium"; exit 1; fi; }

# The energy tests' PostgreSQL: tests/postgres_server.py starts a throwaway cluster of
# Debian's server binaries for each test session (TEST_POSTGRES_URL points elsewhere).
postgres-server:
	@test -n "$$TEST_POSTGRES_URL" || command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "The energy tests need PostgreSQL's server binaries: sudo apt-get install postgresql (or set TEST_POSTGRES_URL)"; exit 1; fi; }

# The compose checks of the unit tier (tests/unit/test_compose*.py) need no Docker engine:
# Debian's docker-compose (v1, whose `config` interpolates and validates offline) and
# promtool, taken out of Debian's prometheus package (no service is installed or started).
compose-tools: $(VENV)/bin/promtool
	@command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; \
	  else echo "The compose tests need Debian's docker-compose: sudo apt-get install docker-compose"; exit 1; fi; }

$(VENV)/bin/promtool: | $(STAMP)
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; cd "$$tmp" && \
	  { apt-get download -qq prometheus 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; } && \
	  dpkg-deb -x prometheus_*.deb root && install -m 755 root/usr/bin/promtool "$(abspath $@)" || \
	  { echo "The monitoring config test needs promtool from Debian's prometheus package (apt-get download prometheus failed)"; exit 1; }

# docker-compose.yml's secrets: writes .env (generated values, mode 600). An existing .env
# keeps its values; FORCE=1 replaces them. Standard library only: runs before `make install`.
compose-env:
	@$(PYTHON) docker/compose_env.py $(if $(FORCE),--force)

run: install
	@# Everything the stack writes (state, database, exports, Airflow's password) is its
	@# user's alone: a 077 umask for every process, and the existing directories closed.
	@umask 077 && mkdir -p var exports && chmod 700 var exports $$(test -d .airflow && echo .airflow)
	@# honcho supervises every process of the Procfile (marketstream/embedded/run.py): their
	@# logs go to var/log/, the terminal shows warnings, errors and a status line; Ctrl-C
	@# stops them all (exit status 130, the normal way to stop: not a make error).
	umask 077 && PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m marketstream.embedded.run --procfile Procfile || [ $$? -eq 130 ]

# One process's whole log from `make run` (SERVICE: a Procfile name), followed as it grows.
logs:
	@test -n "$(SERVICE)" || { echo "Usage: make logs SERVICE=<name>; logs in $${LOG_DIR:-var/log}/: $$(cd "$${LOG_DIR:-var/log}" 2>/dev/null && ls *.log | sed 's/\.log$$//' | tr '\n' ' ')"; exit 2; }
	tail -n 200 -F "$${LOG_DIR:-var/log}/$(SERVICE).log"

demo: install
	$(PY) -m marketstream.embedded.demo

test: install browser compose-tools postgres-server
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-unit: install compose-tools
	$(VENV)/bin/pytest -q -m "not integration" $(PYTEST_ARGS)

bench: install
	$(PIP) install -q -c constraints.txt -e ".[bench]"
	$(PY) -m bench

clean-state:
	rm -rf var .airflow
