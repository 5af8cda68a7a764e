# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of kubernetes.core's connection options as per-site (or per-Cluster) overrides, for the doc
fragments of modules that reach several Kubernetes clusters in one task (hanzo.kms.cnpg_promote's old_cluster and
new_cluster, hanzo.kms.operation_lock's sites). Read from kubernetes.core's own doc fragment, so the suboptions
stay what kubernetes.core's AUTH_ARG_SPEC accepts."""
from __future__ import annotations

import yaml

from ansible_collections.kubernetes.core.plugins.doc_fragments.k8s_auth_options import (
    ModuleDocFragment as K8sAuthOptions,
)


def auth_override_options(whose):
    """kubernetes.core's connection options, each described as overriding the top-level one for ``whose`` Kubernetes
    API (for example ``this site's``)."""
    options = yaml.safe_load(K8sAuthOptions.DOCUMENTATION)["options"]
    for option in options.values():
        option.pop("version_added", None)  # kubernetes.core's versions, not this collection's
        description = option["description"]
        option["description"] = (description if isinstance(description, list) else [description]) + [
            f"Overrides the top-level option of the same name for {whose} Kubernetes API; when neither is set, the "
            "K8S_AUTH_* environment variables and then ~/.kube/config apply."]
    return options


def documentation(options):
    """A doc fragment's DOCUMENTATION text for ``options``."""
    return yaml.safe_dump({"options": options}, sort_keys=False, width=120)
