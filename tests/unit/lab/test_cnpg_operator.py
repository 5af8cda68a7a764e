"""Pure logic of tests/lab/cnpg_operator.py (the lab's changes to the upstream manifests) and cnpg_plugin_tls.py.

The rendering itself (kustomize on the pinned modules) is proven in tests/integration/test_cnpg_operator_manifests.py.
"""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.lab import cnpg_operator, cnpg_plugin_tls
from tests.lab.core import LabError

# The plugin's objects as its v0.14.0 kubernetes/ kustomization renders them (trimmed to what matters here).
PLUGIN_DOCS = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "barman-cloud",
            "namespace": "cnpg-system",
            "labels": {"app": "barman-cloud", "cnpg.io/pluginName": "barman-cloud.cloudnative-pg.io"},
            "annotations": {
                "cnpg.io/pluginClientSecret": "barman-cloud-client-tls",
                "cnpg.io/pluginServerSecret": "barman-cloud-server-tls",
                "cnpg.io/pluginPort": "9090",
            },
        },
        "spec": {"ports": [{"port": 9090}], "selector": {"app": "barman-cloud"}},
    },
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "barman-cloud", "namespace": "cnpg-system"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "barman-cloud",
                            "image": "ghcr.io/cloudnative-pg/plugin-barman-cloud:v0.14.0",
                            "args": ["operator", "--server-cert=/server/tls.crt", "--client-cert=/client/tls.crt"],
                        }
                    ],
                    "volumes": [
                        {"name": "server", "secret": {"secretName": "barman-cloud-server-tls"}},
                        {"name": "client", "secret": {"secretName": "barman-cloud-client-tls"}},
                    ],
                }
            }
        },
    },
    {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Issuer",
        "metadata": {"name": "selfsigned-issuer"},
        "spec": {"selfSigned": {}},
    },
    {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "barman-cloud-server"},
        "spec": {"secretName": "barman-cloud-server-tls", "dnsNames": ["barman-cloud"]},
    },
]
OPERATOR_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "cnpg-controller-manager"},
    "spec": {
        "template": {
            "spec": {
                "initContainers": [{"name": "init", "image": "ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0"}],
                "containers": [
                    {
                        "name": "manager",
                        "image": "ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0",
                        "imagePullPolicy": "Always",
                    }
                ],
            }
        }
    },
}


def test_every_container_gets_if_not_present_and_cert_manager_objects_are_left_out():
    docs = PLUGIN_DOCS + [OPERATOR_DEPLOYMENT]
    adapted = cnpg_operator.adapt_for_lab(docs)
    assert [d["kind"] for d in adapted] == ["Service", "Deployment", "Deployment"]
    policies = [c["imagePullPolicy"] for d in adapted for c in cnpg_operator.containers(d)]
    assert policies == ["IfNotPresent"] * 3
    # the upstream documents are untouched (they are compared with the releases)
    assert OPERATOR_DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    assert adapted[0] is PLUGIN_DOCS[0]


def test_cronjob_containers_are_found_too():
    cronjob = {
        "kind": "CronJob",
        "spec": {
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "backup", "image": "tools:1"}]}}}}
        },
    }
    assert (
        cnpg_operator.adapt_for_lab([cronjob])[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
            "imagePullPolicy"
        ]
        == "IfNotPresent"
    )


def test_the_plugin_release_images_come_from_its_kustomization_names():
    kustomization = {
        "images": [
            {
                "name": "plugin-barman-cloud",
                "newName": "ghcr.io/cloudnative-pg/plugin-barman-cloud-testing",
                "newTag": "main",
            }
        ],
        "secretGenerator": [
            {
                "name": "plugin-barman-cloud",
                "literals": ["SIDECAR_IMAGE=ghcr.io/cloudnative-pg/plugin-barman-cloud-sidecar-testing:main"],
            }
        ],
    }
    assert cnpg_operator.plugin_images(kustomization, "v0.14.0") == (
        "ghcr.io/cloudnative-pg/plugin-barman-cloud:v0.14.0",
        "ghcr.io/cloudnative-pg/plugin-barman-cloud-sidecar:v0.14.0",
    )
    with pytest.raises(LabError, match="no longer names the image"):
        cnpg_operator.plugin_images({"images": []}, "v0.14.0")


def test_the_operator_image_is_the_one_cnpg_release_script_writes(tmp_path):
    versions = tmp_path / "pkg" / "versions"
    versions.mkdir(parents=True)
    source = 'const (\n\tDefaultOperatorImageName = "ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0"\n)\n'
    (versions / "versions.go").write_text(source, encoding="utf-8")
    assert cnpg_operator.operator_image(tmp_path) == "ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0"
    (versions / "versions.go").write_text("package versions\n", encoding="utf-8")
    with pytest.raises(LabError, match="no DefaultOperatorImageName"):
        cnpg_operator.operator_image(tmp_path)


def _cert(secret, key="tls.crt"):
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def test_plugin_tls_secrets_have_the_names_sans_and_usages_cnpg_and_the_plugin_expect():
    server, client = cnpg_plugin_tls.plugin_tls_secrets(PLUGIN_DOCS)
    assert (server["metadata"]["name"], client["metadata"]["name"]) == (
        "barman-cloud-server-tls",
        "barman-cloud-client-tls",
    )
    assert {server["metadata"]["namespace"], client["metadata"]["namespace"]} == {"cnpg-system"}
    assert {server["type"], client["type"]} == {"kubernetes.io/tls"}
    for secret, usage in ((server, ExtendedKeyUsageOID.SERVER_AUTH), (client, ExtendedKeyUsageOID.CLIENT_AUTH)):
        cert = _cert(secret)
        assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
        assert _cert(secret, "ca.crt") == cert  # as cert-manager writes a self-signed certificate
        # self-signed (the operator's Go client sends its certificate only then), valid now, one purpose each
        cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        assert cert.issuer == cert.subject
        assert cert.not_valid_before_utc <= datetime.datetime.now(datetime.timezone.utc) <= cert.not_valid_after_utc
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]
        # tls.crt is the leaf alone: CNPG (RootCAs) and the plugin (ClientCAs) pin exactly it
        assert base64.b64decode(secret["data"]["tls.crt"]).count(b"BEGIN CERTIFICATE") == 1
    sans = _cert(server).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # CNPG dials <service>.<namespace>.svc:<pluginPort> with ServerName = the Service name
    assert sans.get_values_for_type(x509.DNSName)[:4] == [
        "barman-cloud",
        "barman-cloud.cnpg-system",
        "barman-cloud.cnpg-system.svc",
        "barman-cloud.cnpg-system.svc.cluster.local",
    ]
    assert _cert(client).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "barman-cloud-client"


def test_a_server_name_annotation_becomes_the_first_san():
    meta = PLUGIN_DOCS[0]["metadata"]
    annotations = dict(meta["annotations"], **{"cnpg.io/pluginServerName": "barman.example"})
    docs = [dict(PLUGIN_DOCS[0], metadata=dict(meta, annotations=annotations))] + PLUGIN_DOCS[1:]
    assert cnpg_plugin_tls.plugin_tls_requirements(docs)["server_dns_names"][:2] == ["barman.example", "barman-cloud"]


def test_secrets_that_the_deployment_does_not_mount_are_a_clear_error():
    deployment = {
        **PLUGIN_DOCS[1],
        "spec": {
            "template": {
                "spec": {
                    "containers": [],
                    "volumes": [{"name": "server", "secret": {"secretName": "other-server-tls"}}],
                }
            }
        },
    }
    with pytest.raises(LabError, match="mounts no Secret barman-cloud-client-tls, barman-cloud-server-tls"):
        cnpg_plugin_tls.plugin_tls_requirements([PLUGIN_DOCS[0], deployment])
    service = {**PLUGIN_DOCS[0], "metadata": {**PLUGIN_DOCS[0]["metadata"], "annotations": {}}}
    with pytest.raises(LabError, match="lacks the annotations cnpg.io/pluginServerSecret"):
        cnpg_plugin_tls.plugin_tls_requirements([service, PLUGIN_DOCS[1]])
