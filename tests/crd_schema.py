"""CNPG 1.30's CRD schemas from the lab's k8s cache (``make k8s-bins`` renders the CRDs there), made as strict as the
API server's strict field validation: an object schema with properties admits no other field unless it preserves
unknown fields. For tests that check rendered objects without a server."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from tests.lab import kube_build


def _strict(node):
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)


def cnpg_crd_schema(plural):
    """The strict openAPIV3Schema (storage version) of ``<plural>.postgresql.cnpg.io``; skips the test when the cache
    has no CRDs (no ``make k8s-bins`` yet)."""
    path = kube_build.cache_root() / "crds" / f"{plural}.postgresql.cnpg.io.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is missing: make k8s-bins renders CNPG's CRDs there")
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    _strict(schema)
    return schema


def assert_cnpg_valid(plural, obj):
    """Raise jsonschema.ValidationError unless ``obj`` is what the CRD ``plural`` accepts."""
    jsonschema.validate(obj, cnpg_crd_schema(plural))
