# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    # Redis connection options, matching REDIS_CONNECTION_SPEC in plugins/module_utils/redis_client.py.
    DOCUMENTATION = r"""
options:
  host:
    description:
      - Host name or address of the Redis (or Valkey) server.
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port of the server.
    type: int
    default: 6379
  username:
    description:
      - ACL user name (Redis 6+). Without it, C(AUTH) uses only O(password) (the C(default) user).
    type: str
  password:
    description:
      - Password sent with C(AUTH) (C(requirepass) or the ACL user's password).
    type: str
  tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  tls_ca_cert:
    description:
      - CA bundle used to verify the server certificate. Defaults to the system store.
    type: path
  tls_cert:
    description:
      - Client certificate (PEM) for servers that require mutual TLS.
    type: path
  tls_key:
    description:
      - Private key of O(tls_cert).
    type: path
  tls_validate_certs:
    description:
      - Verify the server certificate and host name. Set to V(false) only for testing.
    type: bool
    default: true
  connect_timeout:
    description:
      - Seconds to wait for the TCP connection.
    type: float
    default: 10.0
"""
