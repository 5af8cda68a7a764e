# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared S3 connection code for the hanzo.kms modules (plain Python, importable without Ansible).

* ``S3_ARGUMENT_SPEC``: the connection options (documented by the ``hanzo.kms.s3`` doc fragment);
* ``s3_client(params)``: a boto3 S3 client configured for S3-compatible servers;
* ``S3Error`` / ``translate_error()`` / ``wrap_errors()``: clear messages for a missing bucket, bad credentials,
  an unreachable endpoint or TLS problems;
* ``check_bucket(client, bucket)``: fail early with those messages.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import traceback

try:
    import boto3
    import botocore.exceptions
    import botocore.session
    from botocore.config import Config
    from botocore.utils import parse_timestamp as _botocore_parse_timestamp
except ImportError:  # pragma: no cover - reported by the modules through missing_required_lib()
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None

from ansible_collections.hanzo.kms.plugins.module_utils.times import parse_iso_z

S3_ARGUMENT_SPEC = dict(
    endpoint_url=dict(type="str"),
    region=dict(type="str", default="us-east-1"),
    access_key=dict(type="str", aliases=["aws_access_key_id"], no_log=True),
    secret_key=dict(type="str", aliases=["aws_secret_access_key"], no_log=True),
    session_token=dict(type="str", no_log=True),
    ca_bundle=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    addressing_style=dict(type="str", choices=["auto", "path", "virtual"], default="auto"),
)

S3_PARAM_NAMES = tuple(S3_ARGUMENT_SPEC)


def s3_argument_spec():
    """A deep copy of ``S3_ARGUMENT_SPEC`` to merge into a module's argument_spec."""
    return copy.deepcopy(S3_ARGUMENT_SPEC)


class S3Error(Exception):
    """An S3 failure with a message meant for the user.

    ``code`` is the S3 error code (``NoSuchBucket``, ``InvalidAccessKeyId``, ...) or a local kind
    (``EndpointConnectionError``, ``SSLError``, ``NoCredentials``); ``kind`` is one of ``missing_bucket``,
    ``credentials``, ``access_denied``, ``unreachable``, ``tls``, ``other``.
    """

    def __init__(self, message, code=None, kind="other"):
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = kind

    def __str__(self):
        return self.message


_CREDENTIAL_CODES = {
    "InvalidAccessKeyId": "the access key is not known to the server (check access_key)",
    "SignatureDoesNotMatch": "the request signature does not match (check secret_key for this access_key)",
    "InvalidToken": "the session token is invalid (check session_token)",
    "ExpiredToken": "the session token has expired (renew session_token)",
    "InvalidSecurity": "the security credentials are invalid",
    "AuthorizationHeaderMalformed": "the authorization header is malformed (check region and credentials)",
}


def _where(bucket, endpoint_url):
    target = f"s3://{bucket}" if bucket else "S3"
    return "{} at {}".format(target, endpoint_url or "the default AWS endpoint")


def translate_error(exc, bucket=None, endpoint_url=None, action=None):
    """Return an ``S3Error`` with a clear message for a boto3/botocore exception (``S3Error`` passes through)."""
    if isinstance(exc, S3Error):
        return exc
    prefix = f"{action}: " if action else ""
    where = _where(bucket, endpoint_url)
    if not HAS_BOTO3:  # pragma: no cover
        return S3Error(f"{prefix}{where}: {exc}")
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = err.get("Message") or ""
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and bucket and action in (None, "check bucket")):
            return S3Error(
                "{}bucket {!r} does not exist at {}".format(prefix, bucket, endpoint_url or "the default AWS endpoint"),
                code="NoSuchBucket",
                kind="missing_bucket",
            )
        if code in _CREDENTIAL_CODES:
            return S3Error(
                f"{prefix}{where} rejected the credentials: {_CREDENTIAL_CODES[code]} ({code}: {detail})",
                code=code,
                kind="credentials",
            )
        if code in ("AccessDenied", "403", "Forbidden") or status == 403:
            return S3Error(
                "{}access denied by {} (check the credentials and their permissions on the bucket){}".format(
                    prefix, where, f" ({detail})" if detail else ""
                ),
                code=code or "403",
                kind="access_denied",
            )
        return S3Error(
            "{}{} failed: {}{}".format(prefix, where, code or status, f": {detail}" if detail else ""), code=code
        )
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return S3Error(
            f"{prefix}no S3 credentials found: set access_key and secret_key (or the AWS_* environment variables)",
            code="NoCredentials",
            kind="credentials",
        )
    if isinstance(exc, botocore.exceptions.SSLError):
        return S3Error(
            f"{prefix}TLS error talking to {where}: {exc} (set ca_bundle to the CA that signed its certificate, or AWS_CA_BUNDLE)",
            code="SSLError",
            kind="tls",
        )
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)):
        return S3Error(
            "{}cannot reach the S3 endpoint {}: {}".format(prefix, endpoint_url or "of AWS", exc),
            code="EndpointConnectionError",
            kind="unreachable",
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return S3Error(f"{prefix}{where}: {exc}", code=type(exc).__name__)
    return S3Error(f"{prefix}{where}: {exc}")


@contextlib.contextmanager
def wrap_errors(action=None, bucket=None, endpoint_url=None):
    """Context manager turning boto3/botocore exceptions into ``S3Error`` (see ``translate_error``)."""
    try:
        yield
    except S3Error:
        raise
    except Exception as exc:  # pylint: disable=broad-exception-caught
        if HAS_BOTO3 and isinstance(exc, (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)):
            raise translate_error(exc, bucket=bucket, endpoint_url=endpoint_url, action=action) from exc
        raise


def s3_client(params, max_pool_connections=None, retries=None):
    """A boto3 S3 client from module params (keys of ``S3_ARGUMENT_SPEC``; missing keys take their defaults).

    Checksums are only computed/validated when the API requires them (``when_required``): S3-compatible servers
    reject boto3's default CRC32 flexible checksums. ``max_pool_connections`` sizes the HTTP pool for callers that
    issue requests from several threads (boto3 clients are thread-safe).
    """
    if not HAS_BOTO3:
        raise S3Error(f"boto3 is required for S3 access: {BOTO3_IMPORT_ERROR}", code="MissingLibrary")
    p = dict((k, v.get("default")) for k, v in S3_ARGUMENT_SPEC.items())
    p.update(dict((k, v) for k, v in params.items() if k in S3_ARGUMENT_SPEC and v is not None))
    config_kwargs = dict(
        s3={"addressing_style": p["addressing_style"] or "auto"},
        retries=retries or {"max_attempts": 3, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10,
        read_timeout=120,
    )
    if max_pool_connections:
        config_kwargs["max_pool_connections"] = max_pool_connections
    # None, not True, when no ca_bundle is given: botocore then honours AWS_CA_BUNDLE (True would skip it)
    verify = None
    if not p["validate_certs"]:
        verify = False
    elif p["ca_bundle"]:
        verify = p["ca_bundle"]
    try:
        core = botocore.session.Session()
        # S3 listing times without dateutil, which costs about 80 us per object; anything unusual goes to botocore
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=functools.partial(parse_iso_z, otherwise=_botocore_parse_timestamp)
        )
        session = boto3.session.Session(botocore_session=core)
        return session.client(
            "s3",
            endpoint_url=p["endpoint_url"] or None,
            region_name=p["region"] or "us-east-1",
            aws_access_key_id=p["access_key"] or None,
            aws_secret_access_key=p["secret_key"] or None,
            aws_session_token=p["session_token"] or None,
            verify=verify,
            config=Config(**config_kwargs),
        )
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise S3Error(
            "cannot create an S3 client for {}: {}".format(p["endpoint_url"] or "AWS", exc), code=type(exc).__name__
        )


def endpoint_of(client):
    """The endpoint URL a client talks to (for messages)."""
    try:
        return client.meta.endpoint_url
    except AttributeError:  # pragma: no cover
        return None


def check_bucket(client, bucket):
    """Raise ``S3Error`` (kind missing_bucket/credentials/access_denied/unreachable/tls) unless ``bucket`` is usable."""
    with wrap_errors("check bucket", bucket=bucket, endpoint_url=endpoint_of(client)):
        client.head_bucket(Bucket=bucket)
