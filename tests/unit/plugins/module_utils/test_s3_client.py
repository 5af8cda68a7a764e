"""How s3_client verifies TLS: ca_bundle, then AWS_CA_BUNDLE, then the system store; never off unless asked."""

from __future__ import annotations

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3_ARGUMENT_SPEC, s3_client


def params(**overrides):
    values = {name: spec.get("default") for name, spec in S3_ARGUMENT_SPEC.items()}
    values.update(endpoint_url="https://s3.example.net", access_key="a", secret_key="b")
    values.update(overrides)
    return values


def verify_of(client):
    return client._endpoint.http_session._verify  # pylint: disable=protected-access


@pytest.fixture(autouse=True)
def no_ca_env(monkeypatch):
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_ca_bundle_is_used(tmp_path):
    ca = tmp_path / "ca.crt"
    assert verify_of(s3_client(params(ca_bundle=str(ca)))) == str(ca)


def test_aws_ca_bundle_is_honoured_without_ca_bundle(tmp_path, monkeypatch):
    ca = tmp_path / "env-ca.crt"
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))
    assert verify_of(s3_client(params())) == str(ca)
    assert verify_of(s3_client(params(ca_bundle=str(tmp_path / "mine.crt")))) == str(tmp_path / "mine.crt")


def test_system_store_by_default_and_off_only_when_asked():
    assert verify_of(s3_client(params())) is True
    assert verify_of(s3_client(params(validate_certs=False))) is False
