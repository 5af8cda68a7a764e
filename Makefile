# hanzo.kms: one entry point for contributors and CI. `make setup` once, then `make test` or `make demo`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
LAB_DIR ?= $(CURDIR)/.lab
COLLECTION_LINK := $(VENV)/collections/ansible_collections/hanzo/kms
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup system venv test sanity lint units integration demo lab-up lab-status lab-down clean help

help:
	@echo "make setup   install everything (Debian packages, .venv, Kubernetes binaries)"
	@echo "make test    sanity + lint + unit + integration tests against the lab (what CI runs)"
	@echo "make demo    bring the lab up and run the main job on it"
	@echo "make lab-up | lab-status | lab-down"

setup: system venv k8s-bins

system:
	@scripts/setup-system.sh

# The venv is rebuilt only when a requirements file changes.
venv: $(VENV)/.installed $(COLLECTION_LINK)

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "setup error: $(PYTHON) not found (Debian packages python3.11 python3.11-venv)" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==26.3"
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	@touch $@

$(COLLECTION_LINK):
	@mkdir -p $(dir $@)
	@ln -sfn $(CURDIR) $@

test: setup
	@$(MAKE) --no-print-directory sanity lint units integration

sanity: venv
	scripts/ansible-test.sh sanity --python 3.11 --color no

lint: venv
	$(BIN)/ansible-lint --profile production --offline

units: venv
	$(PY) -m pytest -q tests/unit

integration: venv
	$(PY) -m pytest -q tests/integration

lab-up: venv
	$(PY) -m tests.lab up --dir $(LAB_DIR)

lab-status: venv
	$(PY) -m tests.lab status --dir $(LAB_DIR)

lab-down: venv
	$(PY) -m tests.lab down --dir $(LAB_DIR)

demo: setup lab-up
	@$(PY) -m tests.lab status --dir $(LAB_DIR)

clean: lab-down
	rm -rf $(VENV) tests/output .pytest_cache .ansible

-include mk/*.mk
