# The project's commands. Everything sets itself up: virtual environments, pinned dependencies.
#   make test-fast  lint, type check and unit tests (under 2 minutes: the loop while you work)
#   make test    lint, type check, unit and integration tests (the jobs console's in headless Chromium: make browser
#                installs it where missing), template checks (cfn-lint, checkov, sam validate, sam build), a 50-job
#                make stress
#   make demo    the whole pipeline offline on real photos (see README)
#   make up      start the local stack and keep it running; make down stops it; then .venv/bin/faceswap console
#   make build   sam build (no container)       make deploy ENV=dev   sam build + sam deploy
#   make smoke [STACK=name]  one real job, the jobs API and an alarm on a deployed stack (or on make up)

SHELL := /bin/bash
.DEFAULT_GOAL := help

# A Python 3.13 interpreter (the Lambda runtime's version): on PATH, or from pyenv.
PYTHON ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 \
	/usr/bin/python3.13; do "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 \
	&& { command -v "$$p" 2>/dev/null || echo "$$p"; } && break; done)
VENV := .venv
SAM_VENV := .venv-sam
CHECKOV_VENV := .venv-checkov
BIN := $(VENV)/bin
SAM := SAM_CLI_TELEMETRY=0 PATH="$(dir $(PYTHON)):$$PATH" $(SAM_VENV)/bin/sam
# Offline (no policy metadata from the Prisma Cloud platform, no PyPI update check); a template it cannot parse fails.
CHECKOV := CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE CKV_PARSE_ERROR_FAIL=true $(CHECKOV_VENV)/bin/checkov
PIP_QUIET := --quiet --disable-pip-version-check --no-warn-script-location
ENV ?= dev

.PHONY: help browser venv lint typecheck unit integration template checkov build test test-fast schemas demo bench stress up down deploy lock clean redrive smoke

help:
	@echo "make test-fast | make test | make demo | make up | make down | make build | make deploy ENV=dev | make clean"

$(VENV)/.installed: requirements/dev.txt engine/requirements.txt
	@test -n "$(PYTHON)" || { echo "Python 3.13 is needed (python3.13 on PATH or pyenv)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_QUIET) -r requirements/dev.txt -r engine/requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip install $(PIP_QUIET) --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import faceswap, faceswap_local, boto3, httpx, moto, PIL, aws_lambda_powertools" && touch $@

$(SAM_VENV)/.installed: requirements/sam.txt
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install $(PIP_QUIET) -r requirements/sam.txt 2>&1 | grep -v "^WARNING: Location" || true
	@$(SAM_VENV)/bin/sam --version >/dev/null && touch $@

$(CHECKOV_VENV)/.installed: requirements/checkov.txt
	@test -n "$(PYTHON)" || { echo "Python 3.13 is needed (python3.13 on PATH or pyenv)"; exit 1; }
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install $(PIP_QUIET) -r requirements/checkov.txt 2>&1 | grep -v "^WARNING: Location" || true
	@$(CHECKOV) --version >/dev/null && touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check layers functions local tests bench engine cli

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

# Each function's IAM statements, SAM policy templates expanded (samtranslator lives in the SAM CLI's environment):
# the integration tests check every AWS request a function makes against them (tests/integration/iam.py).
.local/sam-policies.json: template.yaml tests/integration/sam_policies.py $(SAM_VENV)/.installed
	@mkdir -p .local
	$(SAM_VENV)/bin/python tests/integration/sam_policies.py template.yaml > $@.tmp && mv $@.tmp $@

# Chromium from the system's packages (Debian's chromium), for the console's browser tests: Playwright drives it and
# never downloads a browser of its own. Installed only where it is missing (as root, or with sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Chromium from the system's packages"; \
		$(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 \
		|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }; }
	@chromium --version 2>/dev/null

integration: venv .local/sam-policies.json browser
	$(BIN)/pytest tests/integration -q --durations=12

template: venv $(SAM_VENV)/.installed checkov
	$(BIN)/cfn-lint template.yaml
	$(SAM) validate --lint

# Security checks of the template; fails on any failed check. Each accepted one is skipped in the template itself
# (Metadata: checkov: skip, with the reason), so a new resource or a new release's check fails until decided.
checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV) -f template.yaml --framework cloudformation --quiet --compact --skip-download

build: $(SAM_VENV)/.installed
	$(SAM) build

test-fast: lint typecheck unit

# The JSON Schemas under events/schemas/ and the jobs API's OpenAPI document, from faceswap/schema.py and the API's
# routes (a unit test fails when a committed copy is stale).
schemas: venv
	$(BIN)/python -m faceswap_local.schemas

# Two at a time (the integration tests wait on HTTP and queues about half the time, so the checks that only need a
# core run beside them), each one's output printed whole when it ends; then the stress run on its own.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target integration unit template typecheck lint build
	$(MAKE) --no-print-directory stress N=50
	@echo "make test: all checks passed"

demo: venv
	$(BIN)/python -m faceswap_local demo $(if $(FACE),--face "$(FACE)") $(if $(TARGET),--target "$(TARGET)") \
		$(if $(REFERENCE),--reference "$(REFERENCE)") $(if $(PROVIDER),--provider "$(PROVIDER)") $(if $(OUT),--out "$(OUT)")

# Sets up what it measures with: the SAM CLI (the size step runs sam build, whose layer the cold-start step imports).
bench: venv $(SAM_VENV)/.installed
	$(BIN)/python bench/run.py

# N uploads at once while the PiAPI emulator injects faults; fails on lost or duplicated work: make stress [N=100]
N ?= 500
stress: venv
	$(BIN)/python -m faceswap_local stress --jobs $(N)

up: venv
	$(BIN)/python -m faceswap_local up

down:
	@if [ -f .local/stack.pid ]; then kill "$$(cat .local/stack.pid)" 2>/dev/null && echo "local stack stopped" \
		|| echo "local stack was not running"; rm -f .local/stack.pid; else echo "local stack is not running"; fi

deploy: build
	$(SAM) deploy --config-env $(ENV)

lock: venv
	$(BIN)/pip freeze --all --exclude-editable | grep -v "^pip==" | sed "1i # Exact pins of the development environment. Python 3.13. Regenerate: make lock" > requirements/dev.txt

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .ruff_cache .mypy_cache .local out

# One real job end to end, the jobs API, an alarm: after every deploy, make smoke STACK=faceswap-prod; without STACK
# against `make up` (README, "Deploy to AWS")
smoke: venv
	$(BIN)/python -m faceswap_local.smoke $(if $(STACK),--stack-name "$(STACK)")

# Dead-letter queue → its queue, after the fix: make redrive QUEUE=submit|check|media [STACK=faceswap-prod] (README)
redrive: venv
	@test -n "$(QUEUE)" || { echo "usage: make redrive QUEUE=submit|check|media [STACK=stack-name]"; exit 2; }
	$(BIN)/python -m faceswap_local.redrive --queue "$(QUEUE)" $(if $(STACK),--stack-name "$(STACK)")
