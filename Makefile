# The two set-up commands: `make demo` and `make test` create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU torch wheel lies on disk here; a loose index lookup would pull a CUDA build.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: demo demo-finetune demo-faults demo-grpo test lint venv clean chromium postgresql systemd nginx tinyproxy

$(BIN)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(FIND_LINKS) -c requirements.lock -e '.[test]'
	touch $@

venv: $(BIN)/.installed

# `make demo DEMO_FLAGS=--keep-serving` keeps the federation up and prints a site console login link.
DEMO_FLAGS ?=
demo: venv
	$(BIN)/hub demo --out out/demo $(DEMO_FLAGS)

demo-finetune: venv
	$(BIN)/hub demo --mode finetune --out out/demo-finetune

# The demo study clean, then with a site engine and `hub serve` killed mid-study; the tables must be equal.
demo-faults: venv
	$(BIN)/hub demo --faults --out out/demo-faults

demo-grpo: venv
	$(BIN)/hub demo --mode grpo --out out/demo-grpo

# The report test renders report.html in Debian's headless Chromium; install it when it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The store tests start a throwaway PostgreSQL server (initdb/pg_ctl in a temp dir); install it when it is missing.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# The deploy tests run `systemd-analyze verify` on deploy/systemd/ and Debian's nginx with deploy/nginx/.
systemd:
	@command -v systemd-analyze >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; }

nginx:
	@test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }

# The proxy test routes a site through a real forward proxy on 127.0.0.1; install it when it is missing.
tinyproxy:
	@command -v tinyproxy >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tinyproxy >/dev/null; }

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv chromium postgresql systemd nginx tinyproxy
	$(BIN)/python tests/prepare.py
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --durations=30 tests

clean:
	rm -rf out .cache
