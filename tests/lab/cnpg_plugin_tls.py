"""The Barman Cloud plugin's TLS Secrets for a cluster without cert-manager (the lab), signed by a lab CA.

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
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def lab_ca(common_name="hanzo-kms-lab-cnpg-plugin-ca"):
    """A new CA (ECDSA P-256, PEM cert and key) for the plugin's certificates."""
    # pylint: disable=import-outside-toplevel
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=TLS_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _leaf(ca_cert_pem, ca_key_pem, common_name, dns_names, server):
    # cryptography is imported here (kube_build also runs without the venv); the imports count as locals
    # pylint: disable=import-outside-toplevel,too-many-locals
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if ca_cert_pem is None:  # self-signed: the certificate is its own issuer
        issuer, ca_key = subject, key
    else:
        issuer = x509.load_pem_x509_certificate(ca_cert_pem).subject
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=TLS_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                            crl_sign=False, content_commitment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if dns_names:
        sans = [x509.IPAddress(ipaddress.ip_address(n)) if re.fullmatch(r"[\d.]+", n) else x509.DNSName(n)
                for n in dns_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _tls_secret(name, namespace, cert_pem, key_pem, ca_cert_pem):
    def b64(data):
        return base64.b64encode(data).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "hanzo-kms-lab"}},
            "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem), "ca.crt": b64(ca_cert_pem)}}


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
        raise LabError(f"expected one plugin Service (label {PLUGIN_NAME_LABEL}) in the plugin manifest, "
                       f"found {len(services)}")
    service = services[0]
    meta = service["metadata"]
    annotations = meta.get("annotations") or {}
    missing = [a for a in (PLUGIN_SERVER_SECRET_ANNOTATION, PLUGIN_CLIENT_SECRET_ANNOTATION, PLUGIN_PORT_ANNOTATION)
               if not annotations.get(a)]
    if missing:
        raise LabError(f"the plugin Service {meta['name']} lacks the annotations {', '.join(missing)}")
    server_secret = annotations[PLUGIN_SERVER_SECRET_ANNOTATION]
    client_secret = annotations[PLUGIN_CLIENT_SECRET_ANNOTATION]
    mounted = {v["secret"]["secretName"] for d in find(plugin_docs, "Deployment") for pod in pod_specs(d)
               for v in pod.get("volumes") or [] if "secret" in v}
    unmounted = sorted({server_secret, client_secret} - mounted)
    if unmounted:
        raise LabError(f"the plugin Deployment mounts no Secret {', '.join(unmounted)} named by its Service")
    namespace = meta.get("namespace", "default")
    name = meta["name"]
    server_name = annotations.get(PLUGIN_SERVER_NAME_ANNOTATION) or name
    return {"namespace": namespace, "service": name, "port": int(annotations[PLUGIN_PORT_ANNOTATION]),
            "plugin": meta["labels"][PLUGIN_NAME_LABEL], "server_secret": server_secret,
            "client_secret": client_secret,
            "server_dns_names": list(dict.fromkeys([server_name, name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                                                    f"{name}.{namespace}.svc.cluster.local"]))}


def plugin_tls_secrets(plugin_docs, ca_cert_pem=None, ca_key_pem=None):
    """The plugin's two ``kubernetes.io/tls`` Secrets (server and client), as roles/cnpg creates them (the collection's
    source of this knowledge: roles/cnpg/tasks/plugin_tls.yml; this copy serves the tests that run the plugin binary
    without Ansible).

    Replaces the manifest's cert-manager Issuer/Certificates: the server certificate carries the Service's names
    (the TLS server name CNPG checks, and the in-cluster FQDNs), the client certificate ``client auth`` only. Each is
    **self-signed**, as upstream's selfSigned Issuer makes them: the plugin's client CA pool is the client Secret's
    ``tls.crt``, so its CertificateRequest names that certificate's subject, and the operator's Go TLS client sends its
    certificate only when the certificate's issuer is one of the names asked for; a leaf signed by a separate CA is
    never sent ("tls: certificate required", seen with the real operator). ``ca.crt`` is the certificate itself, as
    cert-manager writes it for a self-signed certificate. With ``ca_cert_pem``/``ca_key_pem`` the leaves are signed by
    that CA instead (only for tests of that failure). Apply them in the plugin's namespace before the Deployment.
    """
    need = plugin_tls_requirements(plugin_docs)
    server_cert, server_key = _leaf(ca_cert_pem, ca_key_pem, need["service"], need["server_dns_names"], server=True)
    client_cert, client_key = _leaf(ca_cert_pem, ca_key_pem, f"{need['service']}-client", [], server=False)
    return [_tls_secret(need["server_secret"], need["namespace"], server_cert, server_key, ca_cert_pem or server_cert),
            _tls_secret(need["client_secret"], need["namespace"], client_cert, client_key, ca_cert_pem or client_cert)]


def create_plugin_tls_secrets(api, plugin_docs, ca_cert_pem=None, ca_key_pem=None):
    """Create the plugin's TLS Secrets on one apiserver (a ``tests.lab.kube.Api``) unless they exist already.

    Existing Secrets are kept, never replaced: a running plugin and CNPG's registration of it hold the old pair, and
    a new pair would fail their handshakes until both restart. Returns {secret name: "created" | "kept"}. The
    namespace must exist (the operator manifest creates it).
    """
    done = {}
    for secret in plugin_tls_secrets(plugin_docs, ca_cert_pem, ca_key_pem):
        namespace, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
        status, body = api.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body=secret)
        if status == 409:
            done[name] = "kept"
        elif status == 404:
            raise LabError(f"cannot create Secret {name}: namespace {namespace} does not exist (apply the CNPG "
                           "operator manifest first, it creates the namespace)")
        elif status >= 300:
            message = body.get("message") if isinstance(body, dict) else body
            raise LabError(f"creating Secret {namespace}/{name} failed ({status}): {message}")
        else:
            done[name] = "created"
    return done
