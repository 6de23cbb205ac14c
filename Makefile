# Two commands for a new user: `make run` (the service) and `make test` (the test suite).
# Each installs what is missing first and is quick when everything is there.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Both cores: the conversions dominate and parallelise well. A file's tests stay on one
# worker (--dist loadfile): its module fixtures (a real LLM's conversions, minutes each) are
# then built once, not once per worker. Files go out longest first (tests/conftest.py; xdist's
# own reorder, by number of tests, would send the few-test, minutes-long files last). The
# slowest tests are listed at the end. Override: make test PYTEST_ARGS=.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder --durations=25
# apt-get needs root: use sudo when not already root (CI and containers run as root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench clean system-deps test-deps

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: a bare `torch` requirement would pull CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

# Debian packages the service and its tests run (CI and new machines start bare).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The browser tests drive Debian's chromium (Playwright's own browser download needs internet).
test-deps: system-deps
	@command -v chromium >/dev/null || { echo "Installing Debian packages: chromium"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: $(STAMP) test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: $(STAMP) system-deps
	$(BIN)/python app.py

bench: $(STAMP) system-deps
	$(BIN)/python bench/convert.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/queue.py

clean:
	rm -rf $(VENV) .pytest_cache state
