# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes clients for the collection's modules, configured by kubernetes.core's own auth code.

``api_client`` builds one ``kubernetes.client.ApiClient`` per cluster from kubernetes.core's auth options
(``AUTH_ARG_SPEC``: kubeconfig, context, host, api_key, ...), without API discovery.
"""

from __future__ import annotations

import traceback

K8S_CORE_IMPORT_ERROR = None
try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
except ImportError:
    K8S_CORE_IMPORT_ERROR = traceback.format_exc()
    AUTH_ARG_SPEC = {}

# An API server that does not answer (a lost or partitioned data center: its packets are dropped, nothing refuses
# them) costs each call this long, once: a connection not made within it is not retried. Made connections get the
# caller's request timeout. Three seconds leave room for a SYN retransmitted after one second on a lossy WAN.
CONNECT_TIMEOUT = 3.0


def request_timeout(seconds):
    """The kubernetes client's ``_request_timeout`` for a call that may take ``seconds``: (connect, read)."""
    return (min(CONNECT_TIMEOUT, float(seconds)), float(seconds))


def missing():
    """(message, traceback) when the kubernetes library or the kubernetes.core collection cannot be imported; the
    modules fail with it before touching anything. None when both are there."""
    # pylint: disable=import-outside-toplevel
    from ansible.module_utils.basic import missing_required_lib

    # Imported here, not with this file: the kubernetes client costs about a second per module run on a loaded
    # control node, and modules that only use this file's pure helpers (the report, the preflight) never need it.
    try:
        import kubernetes  # noqa: F401 pylint: disable=unused-import
    except ImportError:
        return missing_required_lib("kubernetes"), traceback.format_exc()
    if K8S_CORE_IMPORT_ERROR:
        return "the kubernetes.core collection is required", K8S_CORE_IMPORT_ERROR
    return None


def api_client(params, overrides=None):
    """An ApiClient from the module's top-level auth options, overridden by ``overrides`` (one site's or side's
    options). An empty string (an inventory's unset site_kubeconfig) means "not set", like default(omit, true)."""
    # pylint: disable=import-outside-toplevel
    import kubernetes as k8s
    from urllib3.util.retry import Retry

    from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as k8s_client

    auth = {key: params[key] for key in AUTH_ARG_SPEC if params.get(key) not in (None, "")}
    auth.update(
        {key: value for key, value in (overrides or {}).items() if key in AUTH_ARG_SPEC and value not in (None, "")}
    )
    # kubernetes.core loads kubeconfigs into the client's process-wide default configuration: start from a clean
    # one for each cluster so that settings of one never leak into the other's client.
    k8s.client.Configuration.set_default(k8s.client.Configuration())
    spec = k8s_client._create_auth_spec(None, **auth)  # pylint: disable=protected-access
    configuration = k8s_client._create_configuration(spec)  # pylint: disable=protected-access
    # one retry of a failed read, none of a connection that was not made (see CONNECT_TIMEOUT)
    configuration.retries = Retry(total=1, connect=0)
    api = k8s.client.ApiClient(configuration)
    headers = k8s_client._create_headers(None, **auth)  # pylint: disable=protected-access
    for header, value in headers.items():
        k8s_client._set_header(api, header, value)  # pylint: disable=protected-access
    return api
