# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    # S3 connection options, matching S3_ARGUMENT_SPEC in plugins/module_utils/s3.py.
    DOCUMENTATION = r"""
options:
  endpoint_url:
    description:
      - URL of the S3-compatible endpoint, for example V(https://s3.example.com) or V(http://127.0.0.1:8333).
      - When omitted, the AWS S3 endpoint of O(region) is used.
    type: str
  region:
    description:
      - Region used to sign requests.
    type: str
    default: us-east-1
  access_key:
    description:
      - S3 access key ID.
      - When omitted, boto3 looks for credentials in the environment (E(AWS_ACCESS_KEY_ID)) and its config files.
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description:
      - S3 secret access key.
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description:
      - Session token for temporary credentials.
    type: str
  ca_bundle:
    description:
      - Path of a PEM file of CA certificates used to verify the endpoint's TLS certificate (a private CA).
      - When omitted, the E(AWS_CA_BUNDLE) environment variable names that file if set, else the system's trust
        store is used.
    type: path
  validate_certs:
    description:
      - Whether to verify the endpoint's TLS certificate. Set to V(false) only for testing.
    type: bool
    default: true
  addressing_style:
    description:
      - How the bucket is put into request URLs. V(path) is what most S3-compatible servers (SeaweedFS, MinIO,
        Ceph RGW) need when they have no wildcard DNS; V(virtual) puts the bucket into the host name.
    type: str
    choices: [auto, path, virtual]
    default: auto
notes:
  - Request checksums are only sent and validated when the S3 API requires them, because many S3-compatible
    servers reject the CRC32 checksums that boto3 1.36 and later send by default.
requirements:
  - boto3
"""
