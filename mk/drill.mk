# The DR drill (issue 10): a fresh lab in .lab-drill, install, load through the global LB, switchover and back,
# failover after losing dc1, then the report (docs/drill.md explains it). The lab is left running for inspection.
# It runs on the real CNPG operator (the lab's operator mode); DRILL_CNPG=standin runs it on the stand-in.
DRILL_DIR ?= $(CURDIR)/.lab-drill
DRILL_CNPG ?= operator

.PHONY: drill drill-down
drill: setup
	-$(PY) -m tests.lab down --dir $(DRILL_DIR) >/dev/null 2>&1
	HANZO_KMS_LAB_CNPG=$(DRILL_CNPG) $(PY) -m tests.drill --dir $(DRILL_DIR)

# The partition drill (issue 16): dc1 cut off from the lab network while everything in it keeps running, failover to
# dc2, dc1 plugged back and fenced, status; report in $(PARTITION_DIR)-report/partition.md (docs/drill.md).
PARTITION_DIR ?= $(CURDIR)/.lab-partition

.PHONY: drill-partition
drill-partition: setup
	-$(PY) -m tests.lab down --dir $(PARTITION_DIR) >/dev/null 2>&1
	HANZO_KMS_LAB_CNPG=operator $(PY) -m tests.drill.partition --dir $(PARTITION_DIR)

drill-down: venv
	$(PY) -m tests.lab down --dir $(DRILL_DIR)

# Crash tests (issue 10): switchover.yml and failover.yml killed at each step, then re-run; compares the end state
# with an uninterrupted run's. About 40 minutes on 2 cores (a fresh lab per failover step). Report in .lab-crash-report/.
CRASH_DIR ?= $(CURDIR)/.lab-crash

.PHONY: crash-test
crash-test: setup
	$(PY) -m tests.drill.crash --dir $(CRASH_DIR)
