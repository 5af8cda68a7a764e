"""Point-in-time recovery replacing the active site's Cluster (issue 18 item 3, ``pitr.yml -e pitr_mode=replace``).

Not in ``make test`` (its own operator lab and install, about 20 min): ``make pitr-replace-test``. On a lab started
with HANZO_KMS_LAB_CNPG=operator: ``install.yml``, marker rows around a noted time and an accidental DELETE in dc1,
then ``pitr.yml`` in replace mode (a wrong confirmation refused; a first run interrupted after the old Cluster is
deleted, finished by a re-run), the re-runs refused, and ``rejoin.yml`` rebuilding dc2 on the new history.

``HANZO_KMS_TEST_LAB_DIR`` may name a lab already up in operator mode (it is reused and left running). Figures are
printed with ``pytest -s`` (docs/benchmarks.md).
"""

# pylint: disable=redefined-outer-name
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from tests.ansible_run import run_playbook
from tests.integration.test_cnpg_operator_real import (
    NAMESPACE,
    archive_current_wal,
    archive_server,
    available_volumes,
    bucket_keys,
    cluster,
    get,
    healthy_replica,
    kubectl,
    lb_client,
    lost_writes,
    marker_batches,
    newest_report,
    psql,
    rejoin,
    report,
)
from tests.integration.test_cnpg_operator_real import playbook as run_lab_playbook
from tests.lab import node, stack
from tests.lab.core import Lab, wait_until
from tests.lab.fixtures import up_with

FIGURES = {}


@pytest.fixture(scope="module")
def operator_lab():
    reuse = os.environ.get("HANZO_KMS_TEST_LAB_DIR")
    lab = Lab(reuse or tempfile.mkdtemp(prefix="hanzo-kms-lab-replace-"))
    FIGURES["lab up, operator mode (s)"] = up_with(lab, HANZO_KMS_LAB_CNPG="operator")
    yield lab
    print("\npitr replace: " + ", ".join(f"{k} {v}" for k, v in FIGURES.items()))
    if not reuse:
        stack.down(lab, log=lambda _msg: None)
        assert node.leftovers(lab.dir) == []


def replace(lab, target, confirm, *args):
    """pitr.yml in replace mode to ``target`` with the confirmation ``confirm``; the run (not required to succeed)."""
    return run_playbook(
        "playbooks/pitr.yml",
        "-e",
        "pitr_mode=replace",
        "-e",
        f"pitr_target_time={target}",
        "-e",
        f"pitr_confirm='{confirm}'",
        *args,
        lab_dir=lab.dir,
        timeout=2400,
    )


@pytest.mark.timeout(3600)  # lab up, install, a replacement, its re-runs and a rejoin: far beyond pytest.ini's 900 s
def test_pitr_replace_rewinds_the_active_site_and_the_rejoined_passive_follows_it(operator_lab):
    """Logical damage on dc1 (rows deleted and written after a time noted between two batches of markers) is undone by
    pitr.yml in replace mode: a wrong confirmation changes nothing; then dc1's KMS is stopped, its Cluster's volume
    kept aside (Retain, its data on disk), the Cluster re-created recovering its own archive to the time and archiving
    under a new serverName (the old archive untouched), with a first base backup there, the ScheduledBackup resumed
    and the KMS serving again through the LB: dc1 holds exactly the markers written before the time. The report sends
    the operator to rejoin.yml for dc2, still a replica on the old history; after it, dc2 replays what dc1 writes.
    A first run whose wait for the new Cluster times out (after the old one is deleted) is finished by a re-run.
    The retained volumes are released at the end (the runbook's clean-up)."""
    lab = operator_lab
    _run, FIGURES["install.yml (s)"] = run_lab_playbook(lab, "playbooks/install.yml", timeout=1800)
    table = f"replace_probe_{time.time_ns() % 10**9}"
    target = marker_batches(lab, table, 5, 9)
    psql(lab, "dc1", f"delete from {table} where n <= 3", "kms")  # the accidental DELETE
    archive_current_wal(lab)
    before = cluster(lab, "dc1")
    old_server = archive_server(before)
    old_archive = bucket_keys(lab, f"cnpg/dc1/{old_server}/base/")
    replicas = get(lab, "dc1", "-n", NAMESPACE, "deployment", "kms")["spec"]["replicas"]
    assert replicas > 0

    wrong = replace(lab, target, f"REPLACE kms-pg-dc2 WITH {target}")
    assert wrong.returncode != 0 and f"pitr_confirm must be exactly 'REPLACE kms-pg-dc1 WITH {target}'" in wrong.stdout
    assert cluster(lab, "dc1")["metadata"]["uid"] == before["metadata"]["uid"], "nothing changed"

    # interrupted after the old Cluster is gone: the wait for the new one gives up at once
    cut = replace(lab, target, f"REPLACE kms-pg-dc1 WITH {target}", "-e", "pitr_wait_timeout=5")
    assert cut.returncode != 0, cut.stdout[-6000:]
    FIGURES["pitr.yml replace, interrupted at the wait for the new Cluster (s)"] = round(cut.seconds, 1)
    record = get(lab, "dc1", "-n", NAMESPACE, "configmap", "kms-pg-dc1-replace")["data"]
    assert "finished" not in json.loads(record["plan"]) and record["kms_replicas"] == str(replicas), record
    assert cluster(lab, "dc1")["metadata"]["uid"] != before["metadata"]["uid"], "the old Cluster was deleted"
    assert get(lab, "dc1", "-n", NAMESPACE, "deployment", "kms")["spec"]["replicas"] == 0, "the KMS stays stopped"

    run = replace(lab, target, f"REPLACE kms-pg-dc1 WITH {target}")
    assert run.returncode == 0, run.stdout[-6000:]
    FIGURES["pitr.yml replace re-run: the replacement finished, KMS back (s)"] = round(run.seconds, 1)
    done = newest_report(lab, "pitr")
    replaced = cluster(lab, "dc1")
    assert done["ok"] is True and done["mode"] == "replace" and done["action"] == "wait", done
    assert replaced["metadata"]["uid"] != before["metadata"]["uid"]
    timeline = replaced["status"]["timelineID"]
    assert timeline > before["status"]["timelineID"]
    assert done["new_server_name"] == archive_server(replaced) == f"kms-pg-dc1-tl{timeline}", done
    assert (done["old_server_name"], done["server_name"]) == (old_server, old_server)
    # read as the application owner (a site's Cluster has no superuser access): the timeline, not its history file,
    # and its own tables (the probe table is the superuser's: read below)
    assert done["recovery_end"]["timeline"] == timeline, done["recovery_end"]
    assert "public.kms_secrets" in done["tables"], done["tables"]
    assert psql(lab, "dc1", f"select string_agg(n::text, ',' order by n) from {table}", "kms") == "1,2,3,4,5"
    assert psql(lab, "dc1", "select pg_is_in_recovery()") == "f"
    # install.yml renders the same Cluster: its own external cluster reads the archive it writes
    ext = {e["name"]: e for e in replaced["spec"]["externalClusters"]}
    assert ext["kms-pg-dc1"]["plugin"]["parameters"]["serverName"] == done["new_server_name"]
    # the damaged history stays readable under the old name; the new archive has its first base backup
    assert set(old_archive) <= set(bucket_keys(lab, f"cnpg/dc1/{old_server}/base/"))
    assert bucket_keys(lab, f"cnpg/dc1/{done['new_server_name']}/base/"), "the first base backup in the new archive"
    assert get(lab, "dc1", "-n", NAMESPACE, "backup", "kms-pg-dc1-initial")["status"]["phase"] == "completed"
    scheduled = get(lab, "dc1", "-n", NAMESPACE, "scheduledbackup", "kms-pg-dc1-scheduled")
    assert scheduled["spec"].get("suspend") is False
    assert done["retained_volumes"], done
    for name in done["retained_volumes"]:
        pv = get(lab, "dc1", "pv", name)
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert pv["metadata"]["labels"]["hanzo.kms/retained-from"] == "kms-pg-dc1"
        assert pv["status"]["phase"] == "Released"
        assert any(Path(pv["spec"]["hostPath"]["path"]).glob("**/PG_VERSION")), "the damaged data is still on disk"
    # the KMS serves again, through the LB, on the replaced database
    assert done["kms_replicas"] == replicas
    assert get(lab, "dc1", "-n", NAMESPACE, "deployment", "kms")["status"].get("readyReplicas", 0) == replicas
    client = lb_client(lab, "replaced")

    def served():
        client.write_once()
        return client.records[-1]["ok"]

    wait_until(served, 60, "the LB to send a write to dc1's KMS again", interval=1)  # its health checks see it up
    assert client.records[-1]["site"] == "dc1", client.records[-1]
    assert lost_writes(lab, client, "dc1") == []
    markdown = max((lab.dir / "reports").glob("pitr-*.md"), key=lambda path: path.stat().st_mtime)
    assert "rejoin.yml -e rejoin_site=dc2" in markdown.read_text(encoding="utf-8")

    # the same command again would rewind once more: refused, nothing changed (the new archive does not reach back
    # to the target; the old one, named, does: the recorded plan refuses)
    rerun = replace(lab, target, f"REPLACE kms-pg-dc1 WITH {target}")
    assert rerun.returncode != 0 and "is before the earliest recoverable point" in rerun.stdout, rerun.stdout[-3000:]
    rerun = replace(lab, target, f"REPLACE kms-pg-dc1 WITH {target}", "-e", f"pitr_server_name={old_server}")
    assert rerun.returncode != 0 and "was already replaced by its recovery to" in rerun.stdout, rerun.stdout[-3000:]
    assert cluster(lab, "dc1")["metadata"]["uid"] == replaced["metadata"]["uid"]

    # dc2 still reads the old archive; rejoin.yml rebuilds it on the new history
    dc2_before = cluster(lab, "dc2")
    rejoined = rejoin(lab, "dc2", "REJOIN dc2")
    assert rejoined.returncode == 0, rejoined.stdout[-6000:]
    FIGURES["pitr replace: rejoin.yml rebuilding dc2 on the new history (s)"] = round(rejoined.seconds, 1)
    again = report(lab, "rejoin")
    rebuilt = cluster(lab, "dc2")
    assert rebuilt["metadata"]["uid"] != dc2_before["metadata"]["uid"]
    assert again["server_name"] == archive_server(rebuilt) == f"kms-pg-dc2-tl{timeline}", again
    assert {e["name"]: e for e in rebuilt["spec"]["externalClusters"]}["kms-pg-dc1"]["plugin"]["parameters"][
        "serverName"
    ] == done["new_server_name"]
    assert healthy_replica(lab, "dc2")
    psql(lab, "dc1", f"insert into {table} values (100)", "kms")
    psql(lab, "dc1", "select pg_switch_wal()")
    wait_until(
        lambda: psql(lab, "dc2", f"select string_agg(n::text, ',' order by n) from {table}", "kms") == "1,2,3,4,5,100",
        300,
        "dc2 to replay the replaced history and a row written after it",
        interval=2,
    )
    # the retained volumes of both sites are released for the module's later tests (the runbook's clean-up), one at
    # a time: kube-controller-manager's recycler mixes up two recycler pods at once ("Recycle failed")
    body = json.dumps({"spec": {"persistentVolumeReclaimPolicy": "Recycle"}})
    for site, names in (("dc1", done["retained_volumes"]), ("dc2", again["retained_volumes"])):
        for name in names:
            assert kubectl(lab, site, "patch", "pv", name, "-p", body).returncode == 0
            wait_until(lambda: name in available_volumes(lab, site), 120, f"{name} to be recycled", interval=1)
