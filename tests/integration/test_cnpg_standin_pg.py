"""The CNPG operator stand-in drives the lab's REAL PostgreSQL (issue 10, part 1).

The lab's own Clusters ``kms/kms-pg-dc1`` (dc1) and ``kms/kms-pg-dc2`` (dc2), shaped as roles/cnpg creates them
(reused when install.yml already made them), map to the lab's PostgreSQL of their site. ``hanzo.kms.cnpg_promote``
(run through ansible-playbook) switches over and back, then fails over after dc1's PostgreSQL is killed; the tests
check the databases themselves: rows, pg_is_in_recovery(), timelines, replay on the new standby, the demotion token
against the WAL (pg_waldump finds the shutdown checkpoint at the token's REDO location), and the KMS stand-ins'
/api/status following the writable database. The module ends with dc1 primary again (dc1 re-cloned after the failover),
so later tests find the lab as it started.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg
from tests.ansible_run import run_play
from tests.lab import cnpg_state, kms, postgres
from tests.lab.core import wait_until
from tests.lab.kube_fixtures import kube_clients, kube_sites, kubeconfig  # noqa: F401  pylint: disable=unused-import

try:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
except ImportError:  # pragma: no cover
    client = None

GROUP, VERSION = "postgresql.cnpg.io", "v1"
NAMESPACE = "kms"
NAMES = {"dc1": "kms-pg-dc1", "dc2": "kms-pg-dc2"}
WAIT = 120
TABLE = "standin_pg_probe"


def cluster_body(site, primary_site):
    """A Cluster as roles/cnpg/templates/cluster.yml.j2 renders it for the lab inventory."""
    name = NAMES[site]
    other = "dc2" if site == "dc1" else "dc1"
    barman = cnpg_state.BARMAN_PLUGIN
    bootstrap = (
        {"initdb": {"database": "kms", "owner": "kms", "secret": {"name": "kms-pg-app"}}}
        if site == primary_site
        else {
            "recovery": {
                "source": NAMES[primary_site],
                "database": "kms",
                "owner": "kms",
                "secret": {"name": "kms-pg-app"},
            }
        }
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Cluster",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "hanzo-kms", "hanzo.kms/site": site},
        },
        "spec": {
            "instances": 3,
            "storage": {"size": "1Gi"},
            "bootstrap": bootstrap,
            "replica": {
                "self": name,
                "primary": NAMES[primary_site],
                "source": NAMES[other] if site == primary_site else NAMES[primary_site],
            },
            "plugins": [
                {
                    "name": barman,
                    "isWALArchiver": True,
                    "parameters": {"barmanObjectName": f"{name}-store", "serverName": name},
                }
            ],
            "externalClusters": [
                {
                    "name": NAMES[s],
                    "plugin": {
                        "name": barman,
                        "parameters": {"barmanObjectName": f"{NAMES[s]}-store", "serverName": NAMES[s]},
                    },
                }
                for s in ("dc1", "dc2")
            ],
        },
    }


def custom(api_client):
    return client.CustomObjectsApi(api_client)


def get(clients, site):
    return custom(clients[site]).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "clusters", NAMES[site])


def patch(clients, site, body):
    return custom(clients[site]).patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "clusters", NAMES[site], body
    )


def pg(lab_dir, site, sql, dbname="kms"):
    return postgres.query(postgres.site_entry(lab_dir, site), sql, superuser=True, dbname=dbname)


def in_recovery(lab_dir, site):
    return pg(lab_dir, site, "SELECT pg_is_in_recovery()")[0][0]


def kms_status(lab, site):
    entry = lab["sites"][site]["kms"]
    return kms.http_status(entry["url"] + "/api/status", ca_file=entry["ca_file"])[0]


def run_module(tmp_path, kubeconfig_path, mode, old, new, **options):
    """hanzo.kms.cnpg_promote through ansible-playbook (JSON callback); returns the task result."""
    args = {
        "mode": mode,
        "kubeconfig": kubeconfig_path,
        "poll_interval": 0.1,
        "old_cluster": {"name": NAMES[old], "namespace": NAMESPACE, "context": old},
        "new_cluster": {"name": NAMES[new], "namespace": NAMESPACE, "context": new},
    }
    args.update(options)
    run = run_play(
        tmp_path / f"promote-{mode}-{uuid.uuid4().hex[:6]}.yml",
        [{"name": "Run cnpg_promote", "hanzo.kms.cnpg_promote": args}],
        name="Promote",
        timeout=600,
    )
    result = run.result()
    assert result.get("failed") is not True, result
    print(f"\ncnpg_promote {mode} {old}->{new}: {run.seconds:.1f}s wall, module timings {result.get('timings')}")
    return result


@pytest.fixture(scope="module", name="clusters")
def fixture_clusters(lab_handle, kube_clients):  # noqa: F811  pylint: disable=redefined-outer-name
    """The lab's two kms-pg Clusters (created if install.yml did not), healthy, dc1 the primary; {site: client}."""
    for site in ("dc1", "dc2"):
        core = client.CoreV1Api(kube_clients[site])
        try:
            core.create_namespace({"metadata": {"name": NAMESPACE}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        try:
            custom(kube_clients[site]).create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "clusters", cluster_body(site, "dc1")
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
    for site in ("dc1", "dc2"):
        wait_until(lambda s=site: cnpg.condition_true(get(kube_clients, s), "Ready"), WAIT, f"{site} Cluster healthy")
    assert cnpg.promotion_done(get(kube_clients, "dc1")), "the lab's dc1 Cluster must start as the primary"
    assert not in_recovery(lab_handle.dir, "dc1") and in_recovery(lab_handle.dir, "dc2")
    pg(lab_handle.dir, "dc1", f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, site text)")
    return kube_clients


def write_rows(lab_dir, site, first, count):
    pg(lab_dir, site, f"INSERT INTO {TABLE} SELECT g, '{site}' FROM generate_series({first}, {first + count - 1}) g")
    return set(range(first, first + count))


def ids(lab_dir, site):
    return {row[0] for row in pg(lab_dir, site, f"SELECT id FROM {TABLE}")}


def wal_record_at(lab_dir, site, lsn, wal_file):
    """pg_waldump's description of the WAL record starting at ``lsn`` in ``site``'s pg_wal (as root or postgres)."""
    entry = postgres.site_entry(lab_dir, site)
    proc = subprocess.run(
        [
            str(postgres.bindir() / "pg_waldump"),
            "-p",
            str(Path(entry["data_dir"]) / "pg_wal"),
            "-s",
            lsn,
            "-n",
            "1",
            wal_file,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout + proc.stderr


def check_switched(lab, lab_dir, clients, primary, standby, rows):
    """``primary`` holds every row and accepts writes; ``standby`` replays new writes; Clusters and KMS agree."""
    assert not in_recovery(lab_dir, primary) and in_recovery(lab_dir, standby)
    assert ids(lab_dir, primary) >= rows
    new_rows = write_rows(lab_dir, primary, max(rows) + 1, 50)
    wait_until(lambda: ids(lab_dir, standby) >= rows | new_rows, WAIT, f"{standby} to replay writes made on {primary}")
    timeline = int(pg(lab_dir, primary, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0][:8], 16)
    system_id = pg(lab_dir, primary, "SELECT system_identifier::text FROM pg_control_system()")[0][0]
    status = get(clients, primary)["status"]
    assert status["timelineID"] == timeline and status["systemID"] == system_id
    wait_until(
        lambda: kms_status(lab, primary) == 200 and kms_status(lab, standby) == 503,
        WAIT,
        f"the KMS stand-ins to follow: {primary} 200, {standby} 503",
    )
    return rows | new_rows, timeline


def check_token(lab_dir, token, old, new, timeline):
    """The token holds the old primary's real pg_controldata: its REDO location is the shutdown checkpoint."""
    content = json.loads(base64.b64decode(token))
    system_id = pg(lab_dir, new, "SELECT system_identifier::text FROM pg_control_system()")[0][0]
    assert content["databaseSystemIdentifier"] == system_id
    assert int(content["latestCheckpointTimelineID"]) == timeline
    redo = cnpg_state.parse_lsn(content["latestCheckpointREDOLocation"])
    assert content["redoWalFile"] == cnpg_state.wal_file(timeline, redo)
    assert content["operatorVersion"] == cnpg_state.OPERATOR_VERSION and content["timeOfLatestCheckpoint"]
    record = wal_record_at(lab_dir, new, content["latestCheckpointREDOLocation"], content["redoWalFile"])
    assert "CHECKPOINT_SHUTDOWN" in record and f"tli {timeline};" in record, record
    print(f"\ndemotion token of {old}: {content}")


def test_switchover_and_back_move_the_real_database(clusters, lab, lab_handle, tmp_path, kubeconfig):  # noqa: F811  pylint: disable=redefined-outer-name
    lab_dir = lab_handle.dir
    rows = write_rows(lab_dir, "dc1", 1, 200)
    timeline = get(clusters, "dc2")["status"]["timelineID"]

    result = run_module(tmp_path, kubeconfig, "switchover", "dc1", "dc2")
    assert result["steps"] == ["demote", "record_token", "promote"] and result["data_loss_possible"] is False
    check_token(lab_dir, result["token"], "dc1", "dc2", timeline)
    rows, new_timeline = check_switched(lab, lab_dir, clusters, "dc2", "dc1", rows)
    assert new_timeline == timeline + 1 == result["after"]["new_cluster"]["timeline"]
    wait_until(
        lambda: get(clusters, "dc1")["status"]["timelineID"] == new_timeline,
        WAIT,
        "dc1's Cluster to report the timeline it follows",
    )

    back = run_module(tmp_path, kubeconfig, "switchover", "dc2", "dc1")
    assert back["steps"] == ["demote", "record_token", "promote"] and back["token"] != result["token"]
    check_token(lab_dir, back["token"], "dc2", "dc1", new_timeline)
    rows, final_timeline = check_switched(lab, lab_dir, clusters, "dc1", "dc2", rows)
    assert final_timeline == new_timeline + 1


def test_failover_after_dc1_postgres_is_killed(clusters, lab, lab_handle, tmp_path, kubeconfig):  # noqa: F811  pylint: disable=redefined-outer-name
    lab_dir = lab_handle.dir
    rows = write_rows(lab_dir, "dc1", 100_000, 100)
    # the rows are on dc2 before dc1 dies, so none may be missing (asynchronous streaming loses only unsent WAL)
    lsn = pg(lab_dir, "dc1", "SELECT pg_current_wal_lsn()")[0][0]
    wait_until(
        lambda: pg(lab_dir, "dc2", f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'")[0][0],
        WAIT,
        "dc2 to replay dc1's last write",
    )
    timeline = get(clusters, "dc2")["status"]["timelineID"]
    lab_handle.load()  # the stand-in restarted PostgreSQL: its pid changed
    os.killpg(lab_handle.process("dc1-postgres")["pid"], signal.SIGKILL)

    result = run_module(tmp_path, kubeconfig, "failover", "dc1", "dc2", old_cluster_fencing="fence")
    assert result["steps"] == ["fence", "promote"] and result["token"] is None
    assert not in_recovery(lab_dir, "dc2") and ids(lab_dir, "dc2") >= rows
    new_timeline = int(pg(lab_dir, "dc2", "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0][:8], 16)
    assert new_timeline > timeline and get(clusters, "dc2")["status"]["timelineID"] == new_timeline
    wait_until(
        lambda: kms_status(lab, "dc2") == 200 and kms_status(lab, "dc1") != 200,
        WAIT,
        "dc2's KMS stand-in to become ready, dc1's not",
    )

    # Rejoin as CNPG requires after a failover: dc1's Cluster is re-created as a replica of dc2, and its bootstrap
    # re-clones dc1's PostgreSQL from dc2; then a switchover with a token makes dc1 the primary again.
    custom(clusters["dc1"]).delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "clusters", NAMES["dc1"])
    wait_until(
        lambda: (
            not [
                c
                for c in custom(clusters["dc1"]).list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "clusters")[
                    "items"
                ]
                if c["metadata"]["name"] == NAMES["dc1"]
            ]
        ),
        WAIT,
        "dc1's Cluster to be deleted",
    )
    custom(clusters["dc1"]).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "clusters", cluster_body("dc1", "dc2")
    )
    wait_until(lambda: cnpg.condition_true(get(clusters, "dc1"), "Ready"), WAIT, "dc1's new replica Cluster")
    assert in_recovery(lab_dir, "dc1") and ids(lab_dir, "dc1") >= rows
    back = run_module(tmp_path, kubeconfig, "switchover", "dc2", "dc1")
    assert back["steps"] == ["demote", "record_token", "promote"]
    check_switched(lab, lab_dir, clusters, "dc1", "dc2", rows)


def test_fencing_stops_the_real_instance(clusters, lab_handle):
    lab_dir = lab_handle.dir
    entry = postgres.site_entry(lab_dir, "dc2")
    patch(clusters, "dc2", {"metadata": {"annotations": {cnpg.FENCE_ANNOTATION: '["*"]'}}})
    wait_until(lambda: not postgres.is_running(entry), WAIT, "fencing to stop dc2's PostgreSQL")
    rows = write_rows(lab_dir, "dc1", 200_000, 10)
    patch(clusters, "dc2", {"metadata": {"annotations": {cnpg.FENCE_ANNOTATION: None}}})
    wait_until(
        lambda: postgres.is_running(entry) and ids(lab_dir, "dc2") >= rows,
        WAIT,
        "unfencing to start dc2's PostgreSQL, which catches up with dc1",
    )
    assert in_recovery(lab_dir, "dc2")
