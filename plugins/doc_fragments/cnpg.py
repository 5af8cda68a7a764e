# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.plugin_utils.kube_docs import auth_override_options, documentation


def _cluster(description, which):
    return {
        "description": [description],
        "type": "dict",
        "required": True,
        "suboptions": {
            "name": {"description": [f"Name of the {which} Cluster object (C(postgresql.cnpg.io/v1))."], "type": "str",
                     "required": True},
            "namespace": {"description": ["Namespace of the Cluster object."], "type": "str", "default": "default"},
            **auth_override_options("this Cluster's"),
        },
    }


class ModuleDocFragment:  # pylint: disable=too-few-public-methods

    # old_cluster / new_cluster of hanzo.kms.cnpg_promote: name and namespace of each CloudNativePG Cluster plus the
    # connection options of kubernetes.core (its doc fragment k8s_auth_options, argument spec AUTH_ARG_SPEC) as
    # per-side overrides.
    DOCUMENTATION = documentation({
        "old_cluster": _cluster("The current primary (old) Cluster: its name and namespace, plus connection settings of "
                                "the Kubernetes cluster it lives in when they differ from the top-level ones.",
                                "old primary"),
        "new_cluster": _cluster("The replica to promote (new) Cluster: its name and namespace, plus connection settings "
                                "of the Kubernetes cluster it lives in when they differ from the top-level ones.",
                                "new primary"),
    })
