# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.plugin_utils.kube_docs import auth_override_options, documentation


class ModuleDocFragment:  # pylint: disable=too-few-public-methods

    # sites of hanzo.kms.operation_lock: each site's name and namespace plus the connection options of kubernetes.core
    # (its doc fragment k8s_auth_options, argument spec AUTH_ARG_SPEC) as per-site overrides, as in hanzo.kms.cnpg.
    DOCUMENTATION = documentation({
        "sites": {
            "description": [
                "Every site of the installation (its Kubernetes API holds one copy of the lock), with the connection "
                "settings of its Kubernetes cluster when they differ from the top-level ones.",
                "The sites are handled in the order of their names, whatever the order given.",
            ],
            "type": "list",
            "elements": "dict",
            "required": True,
            "suboptions": {
                "name": {"description": ["Name of the site (C(dc1), C(dc2)); used in messages and results."],
                         "type": "str", "required": True},
                "namespace": {"description": ["Namespace of the site's Lease (the installation's namespace, "
                                              "C(site_namespace))."], "type": "str", "default": "kms"},
                **auth_override_options("this site's"),
            },
        },
    })
