# Two commands for a new user: `make run` (the service) and `make test` (the test suite).
# Each installs what is missing first and is quick when everything is there.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test bench convert-bench clean system-deps

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
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: $(STAMP) system-deps
	$(BIN)/python app.py

bench: $(STAMP)
	$(BIN)/python bench/convert.py

clean:
	rm -rf $(VENV) .pytest_cache state
