# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Switchover and failover of CloudNativePG replica clusters across two Kubernetes clusters.

Plain Python (no Ansible import at module level), used by ``hanzo.kms.cnpg_promote``. Semantics follow CNPG 1.24+
("distributed topology": ``spec.replica.primary`` / ``promotionToken``, ``status.demotionToken`` /
``lastPromotionToken``) and the older standalone form (``spec.replica.enabled``), as summarised in the team's notes
(cnpg-replica-clusters.md):

switchover (old primary reachable, no data loss)
    1. ``demote``: merge-patch the old primary ``{"spec": {"replica": {"primary": NEW}}}`` (a stale
       ``promotionToken`` is removed in the same patch);
    2. ``wait_demotion``: ``status.demotionToken`` set, ``ReplicaClusterSwitch=True``, ``inProgress`` false;
    3. ``promote``: merge-patch the new cluster with ``primary`` AND ``promotionToken`` in ONE patch;
    4. ``wait_promotion``: ``lastPromotionToken == token``, the designated primary ``isPrimary``, phase
       ``Cluster in healthy state``, ``Ready=True``.
failover (old site lost, data loss possible)
    optional ``fence`` of the old cluster if it answers, then ``promote`` without a token (distributed) or
    ``replica.enabled: false`` (standalone), then ``wait_promotion``.

Each step is skipped when the clusters already show it done, so an interrupted run resumes (for example from the
demotion token already in the old cluster's status). Objects talk to the API through a small interface
(``get()``, ``patch(body)``) implemented by :class:`KubeCluster` over the kubernetes client.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import time

from ansible_collections.hanzo.kms.plugins.module_utils.kube import request_timeout
from ansible_collections.hanzo.kms.plugins.module_utils.times import format_epoch

PHASE_HEALTHY = "Cluster in healthy state"
PHASE_UNRECOVERABLE = "Cluster is unrecoverable and needs manual intervention"
COND_READY = "Ready"
COND_SWITCH = "ReplicaClusterSwitch"
FENCE_ANNOTATION = "cnpg.io/fencedInstances"
HIBERNATION_ANNOTATION = "cnpg.io/hibernation"
TOKEN_KEYS = (
    "latestCheckpointTimelineID",
    "redoWalFile",
    "databaseSystemIdentifier",
    "latestCheckpointREDOLocation",
    "timeOfLatestCheckpoint",
    "operatorVersion",
)
GROUP, VERSION, PLURAL = "postgresql.cnpg.io", "v1", "clusters"
TOKEN_PLACEHOLDER = "<status.demotionToken of the old cluster once demoted>"
FENCING_CHOICES = ("none", "fence", "hibernate")
# The demotion token of a switchover, recorded on the NEW Cluster (in the site that survives) before the promotion,
# as JSON {"token", "from" (the old Cluster's name in the topology), "recorded"}. A re-run that finds the old site
# unreachable promotes with it, so losing the old site between demotion and promotion costs no data.
TOKEN_ANNOTATION = "hanzo.kms/demotion-token"


# -- errors --------------------------------------------------------------------------------------------------------
class CnpgError(Exception):
    """A failure with a clear message; ``details`` go into the module result."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


class Refused(CnpgError):
    """The requested operation is unsafe or impossible in the current state; nothing was changed by this step."""


class Unrecoverable(CnpgError):
    """CNPG reports the unrecoverable phase (for example a promotion token that does not match)."""


class PhaseTimeout(CnpgError):
    """A wait did not complete in time; ``details['last_status']`` holds the last observed status."""


class ApiError(CnpgError):
    """The Kubernetes API answered with an error status."""

    def __init__(self, msg, status=None, **details):
        super().__init__(msg, status=status, **details)
        self.status = status


class Unreachable(CnpgError):
    """The Kubernetes API did not answer (connection refused, timeout, TLS failure...)."""


# -- pure helpers --------------------------------------------------------------------------------------------------
def _replica(obj):
    return (obj.get("spec") or {}).get("replica") or {}


def self_name(obj):
    """The cluster's name in the topology: ``spec.replica.self`` or ``metadata.name``."""
    return _replica(obj).get("self") or obj["metadata"]["name"]


def is_standalone(obj):
    """True for the legacy form, where ``spec.replica.enabled`` decides the role."""
    return _replica(obj).get("enabled") is not None


def is_replica(obj):
    """CNPG's ``Cluster.IsReplica()``."""
    replica = (obj.get("spec") or {}).get("replica")
    if not replica:
        return False
    if replica.get("enabled") is not None:
        return bool(replica["enabled"])
    return (replica.get("self") or obj["metadata"]["name"]) != (replica.get("primary") or "")


def external_names(obj):
    return [e.get("name") for e in (obj.get("spec") or {}).get("externalClusters") or []]


def get_condition(obj, ctype):
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_true(obj, ctype):
    cond = get_condition(obj, ctype)
    return bool(cond) and cond.get("status") == "True"


def reports_primary(obj):
    """The designated/current primary instance reports ``isPrimary`` (not in recovery)."""
    status = obj.get("status") or {}
    current = status.get("currentPrimary")
    reported = status.get("instancesReportedState") or {}
    return bool(current) and bool((reported.get(current) or {}).get("isPrimary"))


def any_instance_primary(obj):
    reported = (obj.get("status") or {}).get("instancesReportedState") or {}
    return any(bool((state or {}).get("isPrimary")) for state in reported.values())


def fencing_state(obj):
    """``fenced`` (all instances), ``hibernated``, ``partial`` (some instances fenced) or ``none``."""
    annotations = obj["metadata"].get("annotations") or {}
    if annotations.get(HIBERNATION_ANNOTATION) == "on":
        return "hibernated"
    raw = annotations.get(FENCE_ANNOTATION)
    if not raw:
        return "none"
    try:
        fenced = json.loads(raw)
    except ValueError:
        return "partial"
    if not isinstance(fenced, list):
        return "partial"
    if "*" in fenced:
        return "fenced"
    names = (obj.get("status") or {}).get("instanceNames") or []
    if names and all(name in fenced for name in names):
        return "fenced"
    return "partial" if fenced else "none"


def role(obj):
    """``primary``, ``replica`` or ``standalone-replica`` from the spec, ``demoting`` during a replica switch."""
    if ((obj.get("status") or {}).get("switchReplicaClusterStatus") or {}).get("inProgress"):
        return "demoting"
    if is_replica(obj):
        return "standalone-replica" if is_standalone(obj) else "replica"
    return "primary"


def summarize(obj):
    """What the module reports about one Cluster."""
    if obj is None:
        return None
    status = obj.get("status") or {}
    ready = get_condition(obj, COND_READY)
    return {
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace"),
        "self": self_name(obj),
        "role": role(obj),
        "spec_primary": _replica(obj).get("primary"),
        "phase": status.get("phase"),
        "phase_reason": status.get("phaseReason"),
        "ready": ready.get("status") if ready else None,
        "current_primary": status.get("currentPrimary"),
        "current_primary_is_primary": reports_primary(obj),
        "timeline": status.get("timelineID"),
        "fencing": fencing_state(obj),
        "demotion_token": bool(status.get("demotionToken")),
        "last_promotion_token": bool(status.get("lastPromotionToken")),
        "promotion_token": bool(_replica(obj).get("promotionToken")),
        "recorded_token": _recorded_summary(obj),
    }


def _recorded_summary(obj):
    token, info, problem = recorded_token(obj)
    if info is None and token is None and problem and problem.startswith("no demotion token"):
        return None
    return {
        "usable": token is not None,
        "from": (info or {}).get("from"),
        "recorded": (info or {}).get("recorded"),
        "problem": problem,
    }


def diagnostics(obj):
    """The status details worth showing when a wait fails."""
    status = obj.get("status") or {}
    return {
        "phase": status.get("phase"),
        "phaseReason": status.get("phaseReason"),
        "currentPrimary": status.get("currentPrimary"),
        "timelineID": status.get("timelineID"),
        "instancesReportedState": status.get("instancesReportedState"),
        "switchReplicaClusterStatus": status.get("switchReplicaClusterStatus"),
        "demotionToken_set": bool(status.get("demotionToken")),
        "lastPromotionToken_set": bool(status.get("lastPromotionToken")),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")} for c in status.get("conditions") or []
        ],
        "fencedInstances": (obj["metadata"].get("annotations") or {}).get(FENCE_ANNOTATION),
        "hibernation": (obj["metadata"].get("annotations") or {}).get(HIBERNATION_ANNOTATION),
        "spec_replica": copy.deepcopy(_replica(obj)),
    }


def parse_token(token):
    """Decode a demotion token (base64 JSON with six non-empty keys); raise CnpgError when invalid."""
    try:
        content = json.loads(base64.b64decode(token, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise CnpgError(f"the demotion token is not base64-encoded JSON ({exc})") from None
    if not isinstance(content, dict):
        raise CnpgError("the demotion token is not a JSON object")
    missing = [key for key in TOKEN_KEYS if not content.get(key)]
    if missing:
        raise CnpgError(f"the demotion token lacks {', '.join(missing)}")
    return content


def record_token_patch(token, old_self, now):
    """Merge patch recording ``token`` (the demotion token of ``old_self``) on the new Cluster."""
    value = json.dumps({"token": token, "from": old_self, "recorded": now}, sort_keys=True)
    return {"metadata": {"annotations": {TOKEN_ANNOTATION: value}}}


def recorded_token(obj):
    """(token, info, problem) of the demotion token recorded on ``obj``: the token when a switchover may promote
    ``obj`` with it now, else None and why not. ``info`` is the recorded JSON (or None).

    Usable only while ``obj`` is a replica of the Cluster that published the token and still on the token's
    timeline or before it (a token from an older switchover names an older timeline: CloudNativePG would refuse it).
    """
    raw = (obj["metadata"].get("annotations") or {}).get(TOKEN_ANNOTATION)
    if not raw:
        return None, None, "no demotion token is recorded on it"
    try:
        info = json.loads(raw)
        token = info["token"]
        content = parse_token(token)
    except (ValueError, TypeError, KeyError, CnpgError) as exc:
        return None, None, f"its {TOKEN_ANNOTATION} annotation is not understood ({exc})"
    if not is_replica(obj) or is_standalone(obj):
        return None, info, "it is no replica of the distributed topology"
    if _replica(obj).get("primary") != info.get("from"):
        return (
            None,
            info,
            (
                f"the token was published by {info.get('from')!r}, but the Cluster replicates from "
                f"{_replica(obj).get('primary')!r}"
            ),
        )
    timeline = (obj.get("status") or {}).get("timelineID")
    try:
        stale = timeline is not None and int(content["latestCheckpointTimelineID"]) < int(timeline)
    except (TypeError, ValueError):
        return None, info, f"the token's timeline {content['latestCheckpointTimelineID']!r} is not a number"
    if stale:
        return (
            None,
            info,
            (
                f"the token is for timeline {content['latestCheckpointTimelineID']}, the Cluster is "
                f"already on timeline {timeline} (a token of an earlier switchover)"
            ),
        )
    return token, info, None


def demotion_done(obj):
    """(done, token): the old primary finished its demotion and published a token."""
    status = obj.get("status") or {}
    token = status.get("demotionToken") or ""
    in_progress = bool((status.get("switchReplicaClusterStatus") or {}).get("inProgress"))
    done = is_replica(obj) and bool(token) and condition_true(obj, COND_SWITCH) and not in_progress
    return done, token


def promotion_done(obj, token=None):
    """The cluster is a promoted, healthy primary (with ``token`` consumed when given)."""
    status = obj.get("status") or {}
    if is_replica(obj) or not reports_primary(obj):
        return False
    if status.get("phase") != PHASE_HEALTHY or not condition_true(obj, COND_READY):
        return False
    if token is not None and status.get("lastPromotionToken") != token:
        return False
    return True


def demote_patch(old, new_self):
    """Merge patch demoting the old primary (distributed topology)."""
    replica = {"primary": new_self}
    if _replica(old).get("promotionToken"):
        replica["promotionToken"] = None
    if not _replica(old).get("source"):
        replica["source"] = new_self
    return {"spec": {"replica": replica}}


def promote_patch(new, new_self, token):
    """Merge patch promoting the new cluster: ``primary`` and ``promotionToken`` together (or no token)."""
    if is_standalone(new):
        return {"spec": {"replica": {"enabled": False}}}
    replica = {"primary": new_self}
    if token is not None:
        replica["promotionToken"] = token
    elif _replica(new).get("promotionToken"):
        replica["promotionToken"] = None
    return {"spec": {"replica": replica}}


def fence_patch(method):
    if method == "hibernate":
        return {"metadata": {"annotations": {HIBERNATION_ANNOTATION: "on"}}}
    return {"metadata": {"annotations": {FENCE_ANNOTATION: '["*"]'}}}


def apply_merge_patch(target, patch):
    """RFC 7386 merge patch applied to a copy of ``target`` (for check mode and diffs)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _diff_view(obj):
    view = {"spec": copy.deepcopy(obj.get("spec") or {})}
    annotations = {
        k: v
        for k, v in (obj["metadata"].get("annotations") or {}).items()
        if k in (FENCE_ANNOTATION, HIBERNATION_ANNOTATION)
    }
    if annotations:
        view["metadata"] = {"annotations": annotations}
    return view


# -- Kubernetes access ---------------------------------------------------------------------------------------------
class KubeCluster:
    """One Cluster object behind one Kubernetes API client (``kubernetes.client.ApiClient``)."""

    def __init__(self, api_client, name, namespace, side, request_timeout=10, endpoint=None):
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        self.api = client.CustomObjectsApi(api_client)
        self.name = name
        self.namespace = namespace
        self.side = side
        self.request_timeout = request_timeout
        self.endpoint = endpoint or getattr(getattr(api_client, "configuration", None), "host", None)

    @property
    def label(self):
        return f"Cluster {self.namespace}/{self.name} ({self.side} side, {self.endpoint})"

    def _call(self, verb, func, *args, **kwargs):
        from kubernetes.client.rest import ApiException  # pylint: disable=import-outside-toplevel

        try:
            return func(*args, _request_timeout=request_timeout(self.request_timeout), **kwargs)
        except ApiException as exc:
            raise _api_error(exc, verb, self) from None
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # urllib3 MaxRetryError / timeouts / TLS and connection errors: the API server did not answer
            raise Unreachable(
                f"cannot reach the Kubernetes API for {self.label}: {type(exc).__name__}: {exc}", side=self.side
            ) from None

    def get(self):
        return self._call(
            "get", self.api.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, self.name
        )

    def patch(self, body):
        return self._call(
            "patch", self.api.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, self.name, body
        )


def _api_error(exc, verb, target):
    try:
        body = json.loads(exc.body or "{}")
        message = body.get("message") or exc.reason
    except (ValueError, TypeError, AttributeError):
        message = exc.reason
    return api_error(exc.status, message, verb, target)


def api_error(status, message, verb, target):
    """An ApiError whose message names the object and, for 403/404, the permission or what is missing."""
    resource = f"clusters.{GROUP}"
    if status == 404:
        msg = (
            f"{target.label} not found: check the name and namespace (and that the CloudNativePG CRDs are "
            f"installed there); the API server said: {message}"
        )
    elif status == 403:
        msg = (
            f"{verb} on {target.label} was forbidden: {message}. The credentials need the '{verb}' permission "
            f"on {resource} in namespace {target.namespace}"
        )
        if "cannot" not in str(message):
            msg += " (or an admission policy/webhook refused the change)"
    elif status == 401:
        msg = f"{verb} on {target.label}: the API server rejected the credentials (401): {message}"
    elif status == 409:
        msg = f"{verb} on {target.label} conflicted (409): {message}"
    else:
        msg = f"{verb} on {target.label} failed with HTTP {status}: {message}"
    return ApiError(msg, status=status, side=target.side)


# -- the state machine ---------------------------------------------------------------------------------------------
class Promoter:  # pylint: disable=too-many-instance-attributes
    """Plans and runs one switchover or failover between ``old`` and ``new`` (objects with get()/patch())."""

    def __init__(
        self,
        old,
        new,
        mode,
        check_mode=False,
        fencing="none",
        demotion_timeout=300.0,
        promotion_timeout=600.0,
        poll_interval=1.0,
        conflict_retries=5,
        clock=time.monotonic,
        sleep=time.sleep,
        log=None,
    ):
        if mode not in ("switchover", "failover"):
            raise ValueError(f"unknown mode {mode!r}")
        if fencing not in FENCING_CHOICES:
            raise ValueError(f"unknown fencing {fencing!r}")
        self.old, self.new = old, new
        self.mode = mode
        self.check_mode = check_mode
        self.fencing = fencing
        self.timeouts = {"demotion": float(demotion_timeout), "promotion": float(promotion_timeout)}
        self.poll_interval = float(poll_interval)
        self.conflict_retries = int(conflict_retries)
        self.clock, self.sleep = clock, sleep
        self.log = log or (lambda msg: None)
        self.result = {
            "changed": False,
            "mode": mode,
            "plan": [],
            "steps": [],
            "timings": {},
            "token": None,
            "data_loss_possible": mode == "failover",
            "warnings": [],
        }
        self._objs = {}
        self._before = {}

    # -- plumbing --------------------------------------------------------------------------------------------------
    def _timed(self, step, func, *args):
        started = self.clock()
        try:
            return func(*args)
        finally:
            self.result["timings"][step] = round(self.clock() - started, 3)

    def _read(self, side):
        api = self.old if side == "old" else self.new
        obj = api.get()
        self._objs[side] = obj
        self._before.setdefault(side, obj)
        return obj

    def _patch(self, side, step, body):
        api = self.old if side == "old" else self.new
        self.result["plan"].append(
            {"step": step, "cluster": side, "name": api.name, "namespace": api.namespace, "patch": body}
        )
        if self.check_mode:
            self._objs[side] = apply_merge_patch(self._objs[side], body)
            return self._objs[side]
        attempt = 0
        while True:
            try:
                obj = api.patch(body)
                break
            except ApiError as exc:
                if exc.status != 409 or attempt >= self.conflict_retries:
                    raise
                attempt += 1
                self.sleep(min(0.1 * 2**attempt, 2.0))
        self.result["changed"] = True
        self.result["steps"].append(step)
        self._objs[side] = obj
        return obj

    def _wait(self, side, phase, predicate, what):
        """Poll ``side`` until ``predicate(obj)``; fail at once on the unrecoverable phase, else after the timeout."""
        api = self.old if side == "old" else self.new
        deadline = self.clock() + self.timeouts[phase]
        obj, last_error = self._objs.get(side), None
        while True:
            if obj is not None:
                status = obj.get("status") or {}
                if status.get("phase") == PHASE_UNRECOVERABLE:
                    raise Unrecoverable(
                        f"{api.label} is in phase '{PHASE_UNRECOVERABLE}': {status.get('phaseReason') or '?'} "
                        f"(while waiting for {what})",
                        last_status=diagnostics(obj),
                    )
                if predicate(obj):
                    self._objs[side] = obj
                    return obj
            if self.clock() >= deadline:
                msg = f"timed out after {self.timeouts[phase]:g}s waiting for {what} on {api.label}"
                if last_error:
                    msg += f"; last error: {last_error}"
                if obj is not None:
                    status = obj.get("status") or {}
                    msg += (
                        f"; last observed phase {status.get('phase')!r}"
                        f" ({status.get('phaseReason') or 'no reason given'})"
                    )
                raise PhaseTimeout(msg, last_status=diagnostics(obj) if obj is not None else None, phase=phase)
            self.sleep(self.poll_interval)
            try:
                obj = api.get()
                last_error = None
            except (Unreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status in (401, 403, 404):
                    raise
                last_error = exc.msg

    def _finish(self):
        for side in ("old", "new"):
            before = self._before.get(side)
            after = self._objs.get(side)
            self.result.setdefault("before", {})[f"{side}_cluster"] = summarize(before)
            self.result.setdefault("after", {})[f"{side}_cluster"] = summarize(after)
        self.result["diff"] = {
            "before": {f"{s}_cluster": _diff_view(self._before[s]) for s in ("old", "new") if self._before.get(s)},
            "after": {f"{s}_cluster": _diff_view(self._objs[s]) for s in ("old", "new") if self._objs.get(s)},
        }
        if self.check_mode:
            self.result["changed"] = bool(self.result["plan"])
        return self.result

    def run(self):
        started = self.clock()
        try:
            if self.mode == "switchover":
                self._switchover()
            else:
                self._failover()
        except CnpgError as exc:
            self.result["timings"]["total"] = round(self.clock() - started, 3)
            exc.details.setdefault("result", self._finish())
            raise
        self.result["timings"]["total"] = round(self.clock() - started, 3)
        return self._finish()

    # -- switchover ------------------------------------------------------------------------------------------------
    def _check_topology(self, old, new):
        new_self, old_self = self_name(new), self_name(old)
        if new_self == old_self:
            raise Refused(f"both Clusters call themselves {new_self!r} in the topology: set spec.replica.self")
        for obj, side in ((old, "old"), (new, "new")):
            names = external_names(obj)
            missing = [n for n in (new_self, old_self) if n not in names]
            if missing:
                raise Refused(
                    f"the {side} Cluster {obj['metadata']['name']} does not list {', '.join(missing)} in "
                    "spec.externalClusters; every Cluster of a distributed topology must list all of them"
                )
        return old_self, new_self

    def _read_for_switchover(self):
        """(old, new); old is None when its API does not answer (the old site is lost)."""
        new = self._read("new")
        try:
            return self._read("old"), new
        except Unreachable as exc:
            self.result["old_error"] = exc.msg
            return None, new
        except ApiError as exc:
            if (exc.status or 0) < 500:
                raise
            self.result["old_error"] = exc.msg
            return None, new

    def _switchover(self):  # pylint: disable=too-many-branches,too-many-statements
        old, new = self._timed("read", self._read_for_switchover)
        self.result["old_reachable"] = old is not None
        if old is None:
            self._switchover_without_old(new)
            return
        if is_standalone(old) or is_standalone(new):
            raise Refused(
                "switchover is not possible with the standalone replica form (spec.replica.enabled): CloudNativePG "
                "offers no controlled switchover (no demotion/promotion token) there. Convert both Clusters to the "
                "distributed topology (spec.replica.primary/source, CloudNativePG >= 1.24) or use mode=failover, "
                "which is irreversible and requires re-cloning the old primary"
            )
        old_self, new_self = self._check_topology(old, new)
        if _replica(new).get("minApplyDelay"):
            raise Refused(
                f"the new Cluster {new['metadata']['name']} sets spec.replica.minApplyDelay, which "
                "CloudNativePG does not allow together with a promotionToken: remove it first"
            )

        old_is_replica, new_is_replica = is_replica(old), is_replica(new)
        if not old_is_replica and not new_is_replica:
            raise Refused(
                f"both Clusters are primaries ({old_self} and {new_self}): split brain. A switchover "
                "needs a demotion token; re-clone one side instead",
                clusters=[summarize(old), summarize(new)],
            )
        if old_is_replica and _replica(old).get("primary") not in (new_self,):
            raise Refused(
                f"the old Cluster {old['metadata']['name']} is a replica of "
                f"{_replica(old).get('primary') or '?'}, not the primary: nothing to switch over from it"
            )

        # already done (idempotence)
        if not new_is_replica and promotion_done(new) and old_is_replica:
            consumed = (new.get("status") or {}).get("lastPromotionToken")
            self.result["token"] = consumed or None
            self.result["data_loss_possible"] = not consumed
            return

        # 1. demote the old primary
        if not old_is_replica:
            if (old.get("status") or {}).get("phase") == PHASE_UNRECOVERABLE:
                raise Unrecoverable(
                    f"the old Cluster is unrecoverable: {(old.get('status') or {}).get('phaseReason')}",
                    last_status=diagnostics(old),
                )
            self._timed("demote", self._patch, "old", "demote", demote_patch(old, new_self))
            if self.check_mode:
                self._patch("new", "promote", promote_patch(new, new_self, TOKEN_PLACEHOLDER))
                return

        # 2. wait for the demotion token
        if not self.check_mode or demotion_done(old)[0]:
            old = self._timed(
                "wait_demotion",
                self._wait,
                "old",
                "demotion",
                lambda o: demotion_done(o)[0],
                "the demotion token and a completed ReplicaClusterSwitch",
            )
            token = demotion_done(old)[1]
            # re-read once: CNPG < 1.30 could wipe the token when a reconcile was requeued (#11074)
            if not self.check_mode:
                again = self.old.get()
                stable, token_again = demotion_done(again)
                if stable and token_again == token:
                    self._objs["old"] = again
                else:
                    self._objs["old"] = again
                    old = self._wait("old", "demotion", lambda o: demotion_done(o)[0], "a stable demotion token")
                    token = demotion_done(old)[1]
            parse_token(token)
        else:
            token = TOKEN_PLACEHOLDER
        self.result["token"] = token
        self.result["token_source"] = "old_cluster"

        # 2b. record the token in the new site before promoting: if the old site is lost now, a re-run still has it
        # (compare the recorded JSON, not the usable token: once promoted the Cluster is no replica and the record
        # is no longer usable, yet already holds this token)
        if token != TOKEN_PLACEHOLDER and (recorded_token(new)[1] or {}).get("token") != token:
            self._timed(
                "record_token",
                self._patch,
                "new",
                "record_token",
                record_token_patch(token, old_self, format_epoch(time.time())),
            )
            new = self._objs["new"]

        # 3. promote the new cluster: primary and promotionToken in ONE patch
        spec = _replica(new)
        if new_is_replica or spec.get("promotionToken") != token:
            if new_is_replica is False and spec.get("promotionToken") and spec.get("promotionToken") != token:
                self.result["warnings"].append(
                    "the new Cluster carried another promotionToken; replaced with the old Cluster's demotion token"
                )
            self._timed("promote", self._patch, "new", "promote", promote_patch(new, new_self, token))
        if self.check_mode:
            return

        # 4. wait for the promotion
        self._wait_promotion(token, "the token")

    def _wait_promotion(self, token, which):
        """Wait until the new Cluster reports the promotion with ``token`` done (``promotion_done``)."""
        self._timed(
            "wait_promotion",
            self._wait,
            "new",
            "promotion",
            lambda o: promotion_done(o, token),
            f"lastPromotionToken to equal {which}, the designated primary to report isPrimary, phase '{PHASE_HEALTHY}' and Ready=True",
        )

    def _switchover_without_old(self, new):
        """The old site does not answer: finish the switchover from what the new site knows, or refuse.

        Promotes with the demotion token recorded on the new Cluster by the interrupted run (CloudNativePG then
        promotes only once the token's LSN is replayed: no data loss), or waits for a promotion already requested
        with a token. Without a token it refuses: only a failover (data loss possible) can proceed then.
        """
        name = new["metadata"]["name"]
        lost = f"the old Cluster's site does not answer ({self.result.get('old_error')})"
        spec = _replica(new)
        if not is_replica(new):
            token = spec.get("promotionToken") or None
            if token is None:
                raise Refused(
                    f"{lost}, and the new Cluster {name} is a primary promoted without a token: this is "
                    "no switchover to resume"
                )
            self.result.update(token=token, token_source="new_cluster_spec")
            if not promotion_done(new, token):
                self._wait_promotion(token, "the token")
            return
        token, info, problem = recorded_token(new)
        if token is None:
            raise Refused(
                f"{lost}, and no usable demotion token is recorded on the new Cluster {name}: {problem}. "
                "A switchover needs the old site, or the token its demotion published. If the old site is "
                "lost, use the failover (data loss possible)"
            )
        if spec.get("minApplyDelay"):
            raise Refused(
                f"the new Cluster {name} sets spec.replica.minApplyDelay, which CloudNativePG does not "
                "allow together with a promotionToken: remove it first"
            )
        new_self = self_name(new)
        if new_self not in external_names(new):
            raise Refused(
                f"the new Cluster {name} does not list itself ({new_self}) in spec.externalClusters, so "
                "spec.replica.primary cannot name it"
            )
        self.result.update(token=token, token_source="recorded")
        self.result["warnings"].append(
            f"{lost}: promoting {name} with the demotion token {info.get('from')} published, recorded on {name} at "
            f"{info.get('recorded')}; CloudNativePG promotes once that LSN is replayed (no data loss)"
        )
        self._timed("promote", self._patch, "new", "promote", promote_patch(new, new_self, token))
        if self.check_mode:
            return
        self._wait_promotion(token, "the recorded token (its LSN replayed)")

    # -- failover --------------------------------------------------------------------------------------------------
    def _failover(self):  # pylint: disable=too-many-branches
        new = self._timed("read", self._read, "new")
        old, old_error = None, None
        try:
            old = self._timed("probe_old", self._read, "old")
        except Unreachable as exc:
            old_error = exc.msg
        except ApiError as exc:
            if exc.status in (401, 403, 404) or (exc.status or 0) < 500:
                raise
            old_error = exc.msg
        self.result["old_reachable"] = old is not None
        if old_error:
            self.result["old_error"] = old_error

        if not is_replica(new):
            if promotion_done(new):
                self.result["lag"] = self._lag(new, old)
                self.result["data_loss_possible"] = not (new.get("status") or {}).get("lastPromotionToken")
                return
        elif not is_standalone(new):
            new_self = self_name(new)
            if new_self not in external_names(new):
                raise Refused(
                    f"the new Cluster {new['metadata']['name']} does not list itself ({new_self}) in "
                    "spec.externalClusters, so spec.replica.primary cannot name it"
                )
            if _replica(new).get("minApplyDelay"):
                self.result["warnings"].append(
                    "spec.replica.minApplyDelay is set on the new Cluster: WAL not yet "
                    "applied because of the delay is lost by the failover"
                )

        if old is not None:
            has_primary = not is_replica(old) or any_instance_primary(old)
            fencing = fencing_state(old)
            if has_primary and fencing not in ("fenced", "hibernated"):
                if self.fencing == "none":
                    raise Refused(
                        f"the old Cluster {old['metadata']['name']} still answers and reports a primary "
                        f"({(old.get('status') or {}).get('currentPrimary')}, fencing: {fencing}); a failover now "
                        "would leave two writable primaries. Use mode=switchover (no data loss), fence or hibernate "
                        "it first (annotation cnpg.io/fencedInstances='[\"*\"]' or cnpg.io/hibernation=on), or set "
                        "old_cluster_fencing=fence|hibernate to let this module do it",
                        old_cluster=summarize(old),
                    )
                self._timed("fence", self._patch, "old", "fence", fence_patch(self.fencing))

        self.result["lag"] = self._lag(new, old)
        if is_replica(new):
            self._timed("promote", self._patch, "new", "promote", promote_patch(new, self_name(new), None))
            if is_standalone(new):
                self.result["warnings"].append(
                    "standalone replica promoted with replica.enabled=false: this is "
                    "irreversible; the old Cluster must be re-cloned from the new one"
                )
        if self.check_mode:
            return
        self._timed(
            "wait_promotion",
            self._wait,
            "new",
            "promotion",
            promotion_done,
            f"the designated primary to report isPrimary, phase '{PHASE_HEALTHY}' and Ready=True",
        )
        self.result["warnings"].append(
            "failover without a demotion token: WAL not yet shipped from the old primary is lost, and the old "
            "Cluster must be re-cloned (with a fresh serverName) before it can follow the new primary"
        )

    @staticmethod
    def _lag(new, old):
        """What is known of the replication lag at failover time (CNPG's Cluster status has no lag figure)."""
        nstat = new.get("status") or {}
        info = {
            "known": False,
            "new_timeline": nstat.get("timelineID"),
            "new_archiving": (get_condition(new, "ContinuousArchiving") or {}).get("status"),
            "note": "the Cluster API does not expose replay lag; with WAL shipping through the object store up to "
            "archive_timeout (default 5min) of committed transactions may be missing",
        }
        if old is not None:
            ostat = old.get("status") or {}
            info["old_timeline"] = ostat.get("timelineID")
            info["old_current_primary"] = ostat.get("currentPrimary")
            if ostat.get("timelineID") is not None and nstat.get("timelineID") is not None:
                info["timeline_diverged"] = int(ostat["timelineID"]) > int(nstat["timelineID"])
        return info
