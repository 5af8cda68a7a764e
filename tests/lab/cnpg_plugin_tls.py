"""The Barman Cloud plugin's TLS Secrets for a cluster without cert-manager, as a test fixture (self-signed pairs).

Upstream, the plugin's manifest has cert-manager issue them (an Issuer and two Certificates, which
tests/lab/cnpg_operator.py leaves out of the lab's manifest). Names and server names are read from the rendered
plugin manifest; see docs/lab.md ("The plugin's TLS secrets") for which Secrets and why.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re

from tests.lab.cnpg_operator import find, pod_specs
from tests.lab.core import LabError

# CNPG's annotations on a plugin's Service (pkg/utils/labels_annotations.go) and its TLS server name default.
PLUGIN_CLIENT_SECRET_ANNOTATION = "cnpg.io/pluginClientSecret"
PLUGIN_SERVER_SECRET_ANNOTATION = "cnpg.io/pluginServerSecret"
PLUGIN_SERVER_NAME_ANNOTATION = "cnpg.io/pluginServerName"
PLUGIN_PORT_ANNOTATION = "cnpg.io/pluginPort"
PLUGIN_NAME_LABEL = "cnpg.io/pluginName"
TLS_DAYS = 365


def _key_pem(key):
    # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _self_signed(common_name, dns_names, server):
    # cryptography is imported here (kube_build also runs without the venv); the imports count as locals
    # pylint: disable=import-outside-toplevel,too-many-locals
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=TLS_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if dns_names:
        sans = [
            x509.IPAddress(ipaddress.ip_address(n)) if re.fullmatch(r"[\d.]+", n) else x509.DNSName(n)
            for n in dns_names
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _tls_secret(name, namespace, cert_pem, key_pem):
    def b64(data):
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "hanzo-kms-lab"}},
        "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem), "ca.crt": b64(cert_pem)},
    }


def plugin_tls_requirements(plugin_docs):
    """What the plugin's Service and Deployment expect of its TLS secrets (names, namespace, server name).

    CNPG's operator finds a plugin by the ``cnpg.io/pluginName`` label of a Service in its namespace, reads both
    secrets named by its annotations, dials ``<service>.<namespace>.svc:<pluginPort>`` with the client secret's
    certificate and trusts exactly the server secret's ``tls.crt`` (``ServerName``: the ``cnpg.io/pluginServerName``
    annotation or the Service name). The plugin serves the server secret (mounted at /server) and accepts exactly
    the client secret's ``tls.crt`` (mounted at /client). The mounts must name the same secrets as the annotations.
    """
    services = [d for d in find(plugin_docs, "Service") if PLUGIN_NAME_LABEL in (d["metadata"].get("labels") or {})]
    if len(services) != 1:
        raise LabError(
            f"expected one plugin Service (label {PLUGIN_NAME_LABEL}) in the plugin manifest, found {len(services)}"
        )
    service = services[0]
    meta = service["metadata"]
    annotations = meta.get("annotations") or {}
    missing = [
        a
        for a in (PLUGIN_SERVER_SECRET_ANNOTATION, PLUGIN_CLIENT_SECRET_ANNOTATION, PLUGIN_PORT_ANNOTATION)
        if not annotations.get(a)
    ]
    if missing:
        raise LabError(f"the plugin Service {meta['name']} lacks the annotations {', '.join(missing)}")
    server_secret = annotations[PLUGIN_SERVER_SECRET_ANNOTATION]
    client_secret = annotations[PLUGIN_CLIENT_SECRET_ANNOTATION]
    mounted = {
        v["secret"]["secretName"]
        for d in find(plugin_docs, "Deployment")
        for pod in pod_specs(d)
        for v in pod.get("volumes") or []
        if "secret" in v
    }
    unmounted = sorted({server_secret, client_secret} - mounted)
    if unmounted:
        raise LabError(f"the plugin Deployment mounts no Secret {', '.join(unmounted)} named by its Service")
    namespace = meta.get("namespace", "default")
    name = meta["name"]
    server_name = annotations.get(PLUGIN_SERVER_NAME_ANNOTATION) or name
    return {
        "namespace": namespace,
        "service": name,
        "port": int(annotations[PLUGIN_PORT_ANNOTATION]),
        "plugin": meta["labels"][PLUGIN_NAME_LABEL],
        "server_secret": server_secret,
        "client_secret": client_secret,
        "server_dns_names": list(
            dict.fromkeys(
                [
                    server_name,
                    name,
                    f"{name}.{namespace}",
                    f"{name}.{namespace}.svc",
                    f"{name}.{namespace}.svc.cluster.local",
                ]
            )
        ),
    }


def plugin_tls_secrets(plugin_docs):
    """The plugin's two ``kubernetes.io/tls`` Secrets (server and client), shaped as roles/cnpg creates them (the
    collection's source of this knowledge: roles/cnpg/tasks/plugin_tls.yml, which also creates them only when absent);
    this test fixture serves the tests that run the plugin binary without Ansible.

    Replaces the manifest's cert-manager Issuer/Certificates: the server certificate carries the Service's names
    (the TLS server name CNPG checks, and the in-cluster FQDNs), the client certificate ``client auth`` only. Each is
    **self-signed**, as upstream's selfSigned Issuer makes them: the plugin's client CA pool is the client Secret's
    ``tls.crt``, so its CertificateRequest names that certificate's subject, and the operator's Go TLS client sends its
    certificate only when the certificate's issuer is one of the names asked for; a leaf signed by a separate CA is
    never sent ("tls: certificate required", seen with the real operator). ``ca.crt`` is the certificate itself, as
    cert-manager writes it for a self-signed certificate.
    """
    need = plugin_tls_requirements(plugin_docs)
    server_cert, server_key = _self_signed(need["service"], need["server_dns_names"], server=True)
    client_cert, client_key = _self_signed(f"{need['service']}-client", [], server=False)
    return [
        _tls_secret(need["server_secret"], need["namespace"], server_cert, server_key),
        _tls_secret(need["client_secret"], need["namespace"], client_cert, client_key),
    ]
