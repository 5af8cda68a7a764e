"""The lab's certificates: a CA (ECDSA P-256, ten years) and leaf certificates it signs.

Two users: each site's Kubernetes control plane has its own CA (tests/lab/kube.py, as each production cluster has),
and the lab has one service CA, made at ``lab up`` in ``<lab dir>/pki`` and never committed, for every service that
production reaches over TLS with a private CA (the S3 store first; issue 16). Verification is always on: clients are
given ``ca.crt``.

    ca = pki.new_ca("hanzo-kms-lab-ca")
    cert_pem, key_pem = ca.leaf("s3", server=True, dns=("localhost",), ips=("127.0.0.1",))
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

LAB_CA_NAME = "hanzo-kms-lab-service-ca"
# kube_build imports the lab without the venv: cryptography is imported where it is used.
# pylint: disable=import-outside-toplevel


def key_pem(key):
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CA:
    """A certificate authority held in memory: ``cert_pem``/``key_pem`` to write it, ``leaf`` to sign."""

    def __init__(self, cert, key):
        self.cert, self.key = cert, key
        self._not_before = cert.not_valid_before_utc
        self._not_after = cert.not_valid_after_utc

    @property
    def cert_pem(self):
        from cryptography.hazmat.primitives import serialization

        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self):
        return key_pem(self.key)

    def leaf(self, common_name, orgs=(), server=False, dns=(), ips=()):
        """(certificate PEM, key PEM): a server certificate (SANs ``dns`` and ``ips``) or a client certificate
        (``orgs`` become its O= groups, as Kubernetes reads them)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(name) for name in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
                ),
                critical=False,
            )
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def new_ca(common_name):
    """A fresh self-signed CA, valid from five minutes ago (clock steps between processes) for ten years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CA(cert, key)


def write(directory, files, mode=0o600):
    """Write ``{name: bytes}`` under ``directory`` (created) with ``mode``; return ``{name: Path}``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        os.chmod(path, mode)
        paths[name] = path
    return paths


def lab_ca(lab):
    """The lab's service CA: made at the first call of a ``lab up`` and kept in ``<lab dir>/pki``; its state entry
    ``{"ca_file": ...}``. The CA certificate is world-readable (pods and the 'postgres' user read copies of it)."""
    directory = lab.path("pki")
    ca = new_ca(LAB_CA_NAME)
    write(directory, {"ca.key": ca.key_pem})
    paths = write(directory, {"ca.crt": ca.cert_pem}, mode=0o644)
    return ca, {"ca_file": str(paths["ca.crt"])}


def issue_server(lab, ca, name, dns=("localhost",), ips=("127.0.0.1",)):
    """A server certificate of the lab's service CA for ``name``: ``{"cert_file", "key_file"}`` under the lab's pki
    directory (key mode 0600: the service runs as the lab's user)."""
    cert, key = ca.leaf(name, server=True, dns=dns, ips=ips)
    paths = write(lab.path("pki"), {f"{name}.crt": cert, f"{name}.key": key})
    return {"cert_file": str(paths[f"{name}.crt"]), "key_file": str(paths[f"{name}.key"])}
