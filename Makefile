# hanzo.kms: one entry point for contributors and CI. `make setup` once, then `make test` or `make demo`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
LAB_DIR ?= $(CURDIR)/.lab
# How the labs of lab-up, demo and Molecule run CloudNativePG: the real operator in pods on each site's real node
# (operator mode, docs/lab.md). LAB_CNPG=standin: the stand-in, which the pytest session lab still uses.
LAB_CNPG ?= operator
COLLECTION_LINK := $(VENV)/collections/ansible_collections/hanzo/kms
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup system venv test style sanity lint units integration demo lab-up lab-status lab-down clean help

help:
	@echo "make setup   install everything (Debian packages, .venv, Kubernetes binaries)"
	@echo "make test    sanity + lint + unit + integration tests against the lab (what CI runs)"
	@echo "make demo    bring the lab up, install, back up, switch over to dc2 and back, print the reports"
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
	@$(MAKE) --no-print-directory style sanity lint units integration

# One code style (pyproject.toml); `$(BIN)/ruff format . && $(BIN)/ruff check --fix .` applies it.
style: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

sanity: venv
	scripts/ansible-test.sh sanity --python 3.11 --color no

lint: venv
	$(BIN)/ansible-lint --profile production --offline

units: venv
	$(PY) -m pytest -q tests/unit

# Two workers, one lab each at a time (tests/conftest.py: lab_group). The images both labs import are built first,
# so that a cold cache does not build each twice. --durations: where the suite's time goes (CI's budget).
integration: venv
	$(PY) -m tests.lab.images build
	$(PY) -m pytest -q -n 2 --durations=25 tests/integration

lab-up: venv
	HANZO_KMS_LAB_CNPG=$(LAB_CNPG) $(PY) -m tests.lab up --dir $(LAB_DIR)

lab-status: venv
	$(PY) -m tests.lab status --dir $(LAB_DIR)

lab-down: venv
	$(PY) -m tests.lab down --dir $(LAB_DIR)

# The main job on the lab: install, back up, switch over to dc2 and back (the failback), print both reports.
LAB_PLAYBOOK := HANZO_KMS_LAB_DIR=$(LAB_DIR) $(BIN)/ansible-playbook -i inventories/lab
demo: setup lab-up
	@$(PY) -m tests.lab status --dir $(LAB_DIR)
	$(LAB_PLAYBOOK) playbooks/install.yml
	$(LAB_PLAYBOOK) playbooks/backup.yml
	$(LAB_PLAYBOOK) playbooks/switchover.yml -e switchover_target_site=dc2 -e "switchover_confirm='SWITCHOVER TO dc2'"
	$(LAB_PLAYBOOK) playbooks/switchover.yml -e switchover_target_site=dc1 -e "switchover_confirm='SWITCHOVER TO dc1'"
	@for report in $$(ls -t $(LAB_DIR)/reports/switchover-dc*.md | head -2 | tac); do echo; cat $$report; done

# Molecule scenarios on the lab (LAB_DIR): install, switchover and back, failover after losing dc1, failover with dc1
# partitioned and its fence when it returns (operator mode; both leave dc1 down or fenced;
# the next lab-up rebuilds the lab), the failback after a failover (dc1 and lb1 lost, failover, both back, fence,
# rejoin, switchover back under load; ≈ 17 min, so not in make test). make test runs the default scenario inside
# test_cnpg_operator_real.py, on the operator lab that test brings up (one lab and one install for both).
.PHONY: molecule-default molecule-backup molecule-switchover molecule-failover molecule-partition molecule-failback
molecule-default molecule-backup molecule-switchover molecule-failover molecule-partition molecule-failback: venv
	@# Molecule skips prepare when its state says a scenario was prepared before (on another lab): start clean.
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/molecule reset -s $(@:molecule-%=%) >/dev/null
	PATH=$(CURDIR)/$(BIN):$$PATH HANZO_KMS_LAB_DIR=$(LAB_DIR) HANZO_KMS_LAB_CNPG=$(LAB_CNPG) \
		$(BIN)/molecule test -s $(@:molecule-%=%)

# One object store per data center (issue 18 item 1): install, Redis backup in both stores, dc1 lost with its store,
# failover to dc2 restoring from dc2's store (tests/drill/test_store_loss.py, its own operator lab; ≈ 15 min, so not
# in make test).
.PHONY: drill-store-loss
drill-store-loss: venv
	$(PY) -m pytest -q -s -p no:cacheprovider tests/drill/test_store_loss.py

# Point-in-time recovery replacing the active site's Cluster (issue 18 item 3): its own operator lab, install.yml,
# pitr.yml in replace mode (an interrupted run finished by a re-run), rejoin.yml for the passive site
# (tests/drill/test_pitr_replace.py; about 20 min, so not in make test).
.PHONY: pitr-replace-test
pitr-replace-test: venv
	$(PY) -m pytest -q -s -p no:cacheprovider tests/drill/test_pitr_replace.py

# Volume-snapshot backups (issue 18 item 4): its own operator lab with CSI volume snapshots (HANZO_KMS_LAB_SNAPSHOTS=1),
# a Cluster on the CSI StorageClass, a volumeSnapshot Backup, a Cluster recovered from it
# (tests/drill/test_volume_snapshots.py; builds the snapshot binaries first, make snapshot-bins; not in make test).
.PHONY: snapshot-lab-test
snapshot-lab-test: venv snapshot-bins
	$(PY) -m pytest -q -s -p no:cacheprovider tests/drill/test_volume_snapshots.py

clean: lab-down
	rm -rf $(VENV) tests/output .pytest_cache .ansible

-include mk/*.mk
