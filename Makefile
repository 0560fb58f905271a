# The two commands of a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint up clean chromium rabbitmq

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "imagequeue needs Python 3.11 or newer")'
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install the venv module (Debian/Ubuntu: sudo apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/imgq demo

up: install
	$(VENV)/bin/imgq up

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

# The /status page test drives Debian's Chromium (never a downloaded browser build). Installed
# here when missing and possible (root with apt-get); otherwise that test skips, naming the
# command (under CI=1 it fails).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the /status page test: apt-get install -y chromium"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
	  || echo "could not install chromium: the /status page test will say so"; \
	fi

# The RabbitMQ broker tests need RabbitMQ on 127.0.0.1:5672: started here (as root) when it is
# installed and not running; otherwise those tests skip, naming the command (under CI=1 they fail).
AMQP_ANSWERS = $(PY) -c 'import socket; socket.create_connection(("127.0.0.1", 5672), 1)' 2>/dev/null
rabbitmq: install
	@if $(AMQP_ANSWERS); then :; \
	elif command -v rabbitmq-server >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "starting RabbitMQ for the broker tests: rabbitmq-server -detached"; \
	  rabbitmq-server -detached >/dev/null 2>&1; \
	  for i in $$(seq 60); do $(AMQP_ANSWERS) && break; sleep 1; done; \
	  $(AMQP_ANSWERS) || echo "RabbitMQ did not answer on 5672: the broker tests will say so"; \
	elif command -v rabbitmq-server >/dev/null; then echo "RabbitMQ is not running (sudo rabbitmq-server -detached): the broker tests will skip"; \
	else echo "RabbitMQ is not installed (sudo apt-get install rabbitmq-server): the broker tests will skip"; fi

# The suite runs in PYTEST_WORKERS processes at once (pytest-xdist; 0 runs it in pytest's own),
# each with its own Redis, PostgreSQL database and RabbitMQ vhost (tests/conftest.py); one process
# where IMGQ_TEST_REDIS_URL names a Redis they would share. A file's tests stay in one process, so
# a module's stack starts once; files go out in collection order.
PYTEST_WORKERS ?= $(if $(IMGQ_TEST_REDIS_URL),0,2)
test: install lint chromium rabbitmq
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
