"""hanzo.kms.site_data_info's Kubernetes part (module_utils/site_status.py) with a fake reader."""

from __future__ import annotations

import base64
import socket
import threading

import pytest
import urllib3

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_sql, site_status

PARAMS = {
    "site": "dc2",
    "inventory_role": "passive",
    "namespace": "kms",
    "cluster_name": "kms-pg-dc2",
    "object_store_name": "kms-pg-dc2-store",
    "kms_name": "kms",
    "redis_secret_name": "redis-auth",
    "redis_secret_key": "redis-password",
    "probe_redis": True,
    "host": "10.0.0.5",
    "port": 30379,
    "password": None,
    "kubeconfig": "/k/dc2",
    "context": "dc2",
    "tls": True,
    "tls_ca_cert": "/ca/redis.crt",
}
CLUSTER = {"metadata": {"name": "kms-pg-dc2"}, "status": {"currentPrimary": "kms-pg-dc2-1"}}
REPLICATION = {
    "in_recovery": True,
    "replay_lsn": "0/5000060",
    "replay_lag_seconds": 3.5,
    "replay_time": "2026-12-02T15:14:31Z",
}


class Refused(Exception):
    status = None


class FakeReader:
    """Answers from ``objects``; a missing key is a 404; ``down`` makes every call fail like a dead API server."""

    def __init__(self, objects=None, down=False):
        self.objects = (
            objects
            if objects is not None
            else {
                "cluster": CLUSTER,
                "deployment": {
                    "spec": {"replicas": 0},
                    "status": {"conditions": [{"type": "Available", "status": "True"}]},
                },
                "backups": [{"spec": {"cluster": {"name": "kms-pg-dc2"}}}, {"spec": {"cluster": {"name": "other"}}}],
                "object_store": {"spec": {"configuration": {"destinationPath": "s3://b/cnpg/dc2/"}}},
                "secret": {"redis-password": base64.b64encode(b"s3cret").decode()},
            }
        )
        self.down = down
        self.calls = []

    def _get(self, what):
        self.calls.append(what)
        if self.down:
            raise Refused("connection refused")
        if what not in self.objects:
            raise site_status.NotFound(what)
        return self.objects[what]

    def cluster(self, namespace, name):
        return self._get("cluster")

    def deployment(self, namespace, name):
        return self._get("deployment")

    def backups(self, namespace):
        return self._get("backups")

    def object_store(self, namespace, name):
        return self._get("object_store")

    def secret_data(self, namespace, name):
        return self._get("secret")

    def replication_state(self, namespace, cluster):
        self.calls.append(("sql", cluster["metadata"]["name"]))
        state = self.objects.get("sql", REPLICATION)
        if isinstance(state, Exception):
            raise state
        return state


def redis_up(host, port, timeout):
    return None


def collect(seen):
    def run(params):
        seen.append(params)
        return {"site": params["site"], "cnpg": {}, "redis": {"server": None}}

    return run


def test_a_reachable_replica_site_is_read_in_one_pass():
    seen = []
    reader = FakeReader()
    status, access = site_status.gather(dict(PARAMS), reader, collect(seen), connect_check=redis_up)
    assert status["kube_reachable"] and status["kube_error"] is None and status["cluster"] == CLUSTER
    assert status["replayed_commit_time"] == "2026-12-02T15:14:31Z"
    assert ("sql", "kms-pg-dc2") in reader.calls
    assert status["kms"] == {"replicas": 0, "ready_replicas": 0, "available": True}
    assert [b["spec"]["cluster"]["name"] for b in status["backups"]] == ["kms-pg-dc2"]
    # the ObjectStore's path is listed and the Secret's password probes Redis (and reaches the access)
    assert seen[0]["cnpg_destination_path"] == "s3://b/cnpg/dc2/" and seen[0]["password"] == "s3cret"
    assert seen[0]["probe_redis"] is True
    assert access == {
        "site": "dc2",
        "context": "dc2",
        "namespace": "kms",
        "cluster_name": "kms-pg-dc2",
        "kms_name": "kms",
        "redis_host": "10.0.0.5",
        "redis_port": 30379,
        "redis_password": "s3cret",
        "redis_tls": True,
        "redis_tls_ca_cert": "/ca/redis.crt",
    }  # how the failover reaches the same Redis
    assert status["data"]["site"] == "dc2" and status["inventory_role"] == "passive"


def test_an_unreachable_site_still_lists_its_object_store_and_reads_nothing_else():
    seen = []
    reader = FakeReader(down=True)
    status, access = site_status.gather(dict(PARAMS), reader, collect(seen), connect_check=redis_up)
    assert not status["kube_reachable"] and status["kube_error"] == "connection refused"
    assert status["cluster_error"] == "connection refused" and status["cluster"] is None and status["kms"] is None
    assert reader.calls == ["cluster"], "nothing else is tried against a dead API server"
    assert seen[0]["cnpg_destination_path"] is None and seen[0]["password"] is None
    assert access["redis_password"] == ""


def test_a_missing_cluster_is_reachable_and_says_not_found():
    status, _access = site_status.gather(dict(PARAMS), FakeReader(objects={}), collect([]), connect_check=redis_up)
    assert status["kube_reachable"] and status["cluster"] is None
    assert status["cluster_error"] == "Cluster kms/kms-pg-dc2 not found"
    assert status["kms"] is None and status["backups"] == [] and status["replayed_commit_time"] == ""


def test_no_client_configured_is_reported_as_unreachable():
    status, _access = site_status.gather(
        dict(PARAMS, reader_error="no kubeconfig"), None, collect([]), connect_check=redis_up
    )
    assert not status["kube_reachable"] and status["kube_error"] == "no kubeconfig"


@pytest.mark.parametrize(
    "sql, read_sql",
    [
        (dict(REPLICATION, replay_time=None), True),  # nothing replayed since the instance started, or a primary
        (cnpg_sql.SqlError("authentication failed at kms/kms-pg-dc2-1"), True),  # the SQL could not be read
        (REPLICATION, False),  # not asked (pods that do not run)
    ],
)
def test_the_replayed_commit_is_empty_unless_read(sql, read_sql):
    objects = dict(FakeReader().objects, sql=sql)
    status, _access = site_status.gather(
        dict(PARAMS, read_sql=read_sql), FakeReader(objects=objects), collect([]), connect_check=redis_up
    )
    assert status["replayed_commit_time"] == ""


def test_the_instance_s_replication_state_is_read_over_sql():
    reader = FakeReader()
    status, _access = site_status.gather(dict(PARAMS), reader, collect([]), connect_check=redis_up)
    assert status["sql"] == {"error": None, "state": REPLICATION}
    assert ("sql", "kms-pg-dc2") in reader.calls


@pytest.mark.parametrize(
    "failure, error",
    [
        (
            cnpg_sql.SqlError("authentication failed at kms/kms-pg-dc2-1: ..."),
            "authentication failed at kms/kms-pg-dc2-1: ...",
        ),
        (Refused("connection refused"), "connection refused"),
    ],
)
def test_sql_that_cannot_be_reached_is_the_finding_not_a_failure(failure, error):
    objects = dict(FakeReader().objects, sql=failure)
    status, _access = site_status.gather(dict(PARAMS), FakeReader(objects=objects), collect([]), connect_check=redis_up)
    assert status["sql"] == {"error": error}
    assert status["kms"] is not None, "the other reads go on"


def test_sql_is_not_read_when_disabled_nor_without_a_cluster():
    reader = FakeReader()
    status, _access = site_status.gather(dict(PARAMS, read_sql=False), reader, collect([]), connect_check=redis_up)
    assert status["sql"] is None and not [c for c in reader.calls if c[0] == "sql"]
    status, _access = site_status.gather(dict(PARAMS), FakeReader(objects={}), collect([]), connect_check=redis_up)
    assert status["sql"] is None


def test_a_given_password_is_used_and_no_secret_is_read():
    seen = []
    reader = FakeReader()
    _status, access = site_status.gather(dict(PARAMS, password="given"), reader, collect(seen), connect_check=redis_up)
    assert "secret" not in reader.calls and seen[0]["password"] == "given" and access["redis_password"] == "given"


def test_a_redis_that_does_not_accept_connections_is_not_probed_and_its_error_is_the_finding():
    seen, tried = [], []

    def refused(host, port, timeout):
        tried.append((host, port, timeout))
        return f"cannot connect to Redis at {host}:{port}: timed out"

    site_status.gather(dict(PARAMS, connect_timeout=3), FakeReader(), collect(seen), connect_check=refused)
    assert tried == [("10.0.0.5", 30379, 3.0)]
    assert seen[0]["probe_redis"] is False
    assert seen[0]["redis_error"] == "cannot connect to Redis at 10.0.0.5:30379: timed out"


def test_redis_is_tried_while_the_kubernetes_api_is_read():
    """A partitioned site drops packets: its API server and its Redis must not cost two connect timeouts in a row.
    The reader's first call waits for the Redis check to have started; read one after the other, it would wait in
    vain and the site would read as unreachable."""
    started = threading.Event()

    class WaitsForTheRedisCheck(FakeReader):
        def cluster(self, namespace, name):
            if not started.wait(5):
                raise Refused("the Redis check did not run meanwhile")
            return super().cluster(namespace, name)

    def check(host, port, timeout):
        started.set()
        return None

    status, _access = site_status.gather(dict(PARAMS), WaitsForTheRedisCheck(), collect([]), connect_check=check)
    assert status["kube_reachable"], status["kube_error"]


def test_the_redis_connect_check_reports_a_refused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        error = site_status.redis_connect_error("127.0.0.1", port, 1.0)
    assert error.startswith(f"cannot connect to Redis at 127.0.0.1:{port}: ") and "refused" in error
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert site_status.redis_connect_error("127.0.0.1", server.getsockname()[1], 1.0) is None


def test_without_a_redis_host_redis_is_not_probed():
    seen = []
    reader = FakeReader()
    site_status.gather(dict(PARAMS, host=""), reader, collect(seen), connect_check=redis_up)
    assert seen[0]["probe_redis"] is False and "secret" not in reader.calls


def test_a_connection_error_is_described_in_one_short_line():
    pool = urllib3.HTTPSConnectionPool("10.250.40.2", 6443)
    inner = urllib3.exceptions.NewConnectionError(
        pool, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    exc = urllib3.exceptions.MaxRetryError(pool, "/apis/x", inner)
    assert site_status.describe_error(exc) == "cannot connect to 10.250.40.2:6443: [Errno 111] Connection refused"
