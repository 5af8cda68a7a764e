"""The lab's services are real and behave: each one is exercised through its own protocol."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3Error, check_bucket, s3_client
from tests.lab import haproxy, postgres, redis, s3, stack
from tests.lab.core import Lab, wait_until
from tests.lab.kms import http_status


def current(lab_handle):
    """The lab as its state file says now (the CNPG stand-in restarts PostgreSQL: pids and roles change)."""
    lab = Lab(lab_handle.dir)
    lab.load()
    return lab


def test_every_service_reports_healthy(lab_handle):
    rows = stack.status(current(lab_handle))
    assert [row for row in rows if not row[1]] == []
    assert {row[0] for row in rows} >= {"s3", "dc1 redis", "dc2 postgres", "lb1 haproxy", "lb2 haproxy"}


def test_s3_round_trip_with_the_lab_credentials(lab):
    client = s3.client(lab["s3"])
    key = f"tests/{secrets.token_hex(4)}/object"
    client.put_object(Bucket=lab["s3"]["bucket"], Key=key, Body=b"payload")
    listed = client.list_objects_v2(Bucket=lab["s3"]["bucket"], Prefix="tests/")
    assert key in [obj["Key"] for obj in listed.get("Contents", [])]
    client.delete_object(Bucket=lab["s3"]["bucket"], Key=key)


def test_s3_rejects_wrong_credentials(lab):
    client = s3.client(dict(lab["s3"], secret_key="not-the-secret"))
    try:
        client.list_objects_v2(Bucket=lab["s3"]["bucket"])
    except Exception as exc:  # pylint: disable=broad-exception-caught
        assert "SignatureDoesNotMatch" in str(exc) or "AccessDenied" in str(exc) or "InvalidAccessKeyId" in str(exc)
    else:
        raise AssertionError("S3 accepted a wrong secret key")


def test_s3_serves_https_only_and_verifies_with_the_lab_ca_alone(lab):
    """The store's certificate comes from the lab's CA: a client without that CA fails, as against a private-CA
    store in production, and a plain-HTTP request is refused; the collection's S3 path says what to set."""
    entry = lab["s3"]
    assert entry["endpoint_url"].startswith("https://") and entry["ca_file"] == lab["pki"]["ca_file"]
    plain = entry["endpoint_url"].replace("https://", "http://", 1)
    try:
        urllib.request.urlopen(f"{plain}/{entry['bucket']}", timeout=5)  # pylint: disable=consider-using-with
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
    else:
        raise AssertionError("the lab's S3 answered plain HTTP")
    params = dict(
        endpoint_url=entry["endpoint_url"],
        region=entry["region"],
        access_key=entry["access_key"],
        secret_key=entry["secret_key"],
        session_token=None,
        ca_bundle=None,
        validate_certs=True,
        addressing_style="path",
    )
    with pytest.raises(S3Error) as unverified:
        check_bucket(s3_client(params, retries={"max_attempts": 1}), entry["bucket"])
    assert unverified.value.kind == "tls" and "set ca_bundle" in str(unverified.value)
    check_bucket(s3_client(dict(params, ca_bundle=entry["ca_file"])), entry["bucket"])


def test_redis_is_configured_like_bitnami(lab):
    client = redis.client(lab["sites"]["dc1"]["redis"])
    config = client.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["save"] == ""
    assert config["maxmemory-policy"] == "noeviction"
    try:
        client.execute_command("FLUSHALL")
    except Exception as exc:  # pylint: disable=broad-exception-caught
        assert "unknown command" in str(exc)
    else:
        raise AssertionError("FLUSHALL is enabled; the lab must disable it as the Bitnami chart does")


def test_redis_requires_its_password(lab):
    entry = dict(lab["sites"]["dc2"]["redis"], password="wrong")
    try:
        redis.client(entry).ping()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        assert "WRONGPASS" in str(exc) or "invalid" in str(exc).lower()
    else:
        raise AssertionError("Redis accepted a wrong password")


def test_a_write_on_dc1_appears_on_the_dc2_standby(lab):
    dc1, dc2 = lab["sites"]["dc1"]["postgres"], lab["sites"]["dc2"]["postgres"]
    marker = secrets.token_hex(8)
    postgres.query(dc1, "CREATE TABLE IF NOT EXISTS lab_replication_probe (marker text)")
    postgres.query(dc1, f"INSERT INTO lab_replication_probe VALUES ('{marker}')")
    wait_until(
        lambda: postgres.query(dc2, f"SELECT 1 FROM lab_replication_probe WHERE marker = '{marker}'"),
        10,
        "the row written on dc1 to reach dc2",
    )
    try:
        postgres.query(dc2, "INSERT INTO lab_replication_probe VALUES ('must-fail')")
    except Exception as exc:  # pylint: disable=broad-exception-caught
        assert "read-only" in str(exc)
    else:
        raise AssertionError("the dc2 standby accepted a write")


def test_kms_stand_in_status_follows_its_database(lab):
    dc1, dc2 = lab["sites"]["dc1"]["kms"], lab["sites"]["dc2"]["kms"]
    assert dc1["url"].startswith("https://")  # TLS, as the site's ingress serves it
    assert http_status(dc1["url"] + "/api/status", ca_file=dc1["ca_file"])[0] == 200
    code, body = http_status(dc2["url"] + "/api/status", ca_file=dc2["ca_file"])
    assert code == 503 and "read-only" in body


def test_haproxy_sends_traffic_to_dc1_and_stores_secrets_there(lab):
    for instance in lab["lb"]["instances"]:
        name, value = f"probe-{secrets.token_hex(4)}", secrets.token_hex(8)
        request = urllib.request.Request(
            f"{instance['frontend_url']}/api/v3/secrets/raw/{name}",
            data=json.dumps({"secretValue": value}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        tls = haproxy.frontend_context(lab)
        with urllib.request.urlopen(request, timeout=5, context=tls) as resp:
            assert resp.status == 200 and resp.headers["X-KMS-Site"] == "dc1"
        with urllib.request.urlopen(
            f"{instance['frontend_url']}/api/v3/secrets/raw/{name}", timeout=5, context=tls
        ) as resp:
            assert json.loads(resp.read())["secret"]["secretValue"] == value
        rows = postgres.query(lab["sites"]["dc1"]["postgres"], f"SELECT value FROM kms_secrets WHERE name = '{name}'")
        assert rows == [(value,)]
        states = haproxy.servers_state(instance["admin_address"], haproxy.client_tls(lab["lb"]))  # TLS, as the switch
        assert haproxy.describe(states["dc1"]) == "UP" and haproxy.describe(states["dc2"]) == "MAINT"


def test_up_is_idempotent_and_status_sees_a_killed_service(lab_handle):
    again = Lab(lab_handle.dir)
    pids_before = [p["pid"] for p in current(lab_handle).state["processes"]]
    stack.up(again, log=lambda _msg: None)
    assert [p["pid"] for p in again.state["processes"]] == pids_before
