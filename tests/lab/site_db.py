"""A site's KMS database as the tests and the drill reach it from the host, in either lab mode.

Stand-in mode: the site's host PostgreSQL (``state.sites.<site>.postgres``). Operator mode: the CNPG instance pod
``kms-pg-<site>-1`` at its pod IP (the host routes the site's pod network through the node's veth), as the
application user of the Secret ``kms-pg-app`` that roles/cnpg writes; CNPG's default ``pg_hba`` accepts it with
SCRAM. Nothing is cached: after a failover or a restart the pod IP may change.
"""

from __future__ import annotations

import base64

from tests.lab import postgres
from tests.lab.core import LabError
from tests.lab.kube import Api

NAMESPACE = "kms"  # install.yml's site_namespace in the lab inventory
APP_SECRET = "kms-pg-app"  # roles/cnpg: cnpg_app_secret_name
CLUSTER_PREFIX = "kms-pg-"  # roles/cnpg: cnpg_cluster_prefix


def entry(state, site):
    """{host, port, user, password, database} of ``site``'s KMS database."""
    if state.get("cnpg", {}).get("mode", "standin") == "standin":
        return state["sites"][site]["postgres"]
    api = Api.from_entry(state["sites"][site]["kube"])
    status, pod = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{CLUSTER_PREFIX}{site}-1", timeout=5)
    if status != 200 or not pod.get("status", {}).get("podIP"):
        raise LabError(f"{site}: instance pod {CLUSTER_PREFIX}{site}-1 has no IP ({status})")
    status, secret = api.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{APP_SECRET}", timeout=5)
    if status != 200:
        raise LabError(f"{site}: Secret {APP_SECRET} cannot be read ({status})")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    return {
        "host": pod["status"]["podIP"],
        "port": 5432,
        "user": data["username"],
        "password": data["password"],
        "database": "kms",
    }


def query(state, site, sql):
    """Rows of ``sql`` on ``site``'s KMS database (autocommit), as its application user."""
    return postgres.query(entry(state, site), sql)


def secret_values(state, site, prefix):
    """{name: value} of the KMS secrets named ``prefix``* in ``site``'s database (the stand-in's table)."""
    return dict(query(state, site, f"SELECT name, value FROM kms_secrets WHERE name LIKE '{prefix}%'"))


def lsn_bytes(text):
    """A PostgreSQL LSN (``16/B374D848``) as a byte position; None stays None."""
    if text is None:
        return None
    high, low = str(text).split("/")
    return (int(high, 16) << 32) + int(low, 16)
