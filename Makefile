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

.PHONY: demo demo-finetune demo-grpo test lint venv clean chromium postgresql

$(BIN)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(FIND_LINKS) -c requirements.lock -e '.[test]'
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/hub demo --out out/demo

demo-finetune: venv
	$(BIN)/hub demo --mode finetune --out out/demo-finetune

demo-grpo: venv
	$(BIN)/hub demo --mode grpo --out out/demo-grpo

# The report test renders report.html in Debian's headless Chromium; install it when it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The store tests start a throwaway PostgreSQL server (initdb/pg_ctl in a temp dir); install it when it is missing.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv chromium postgresql
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf out .cache
