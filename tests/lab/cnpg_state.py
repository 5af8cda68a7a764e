"""Pure state machine of the lab's CloudNativePG operator STAND-IN (not CNPG; see tests/lab/cnpg_standin.py).

Given a Cluster or Backup object (a dict as the API returns it), the stand-in's memory for it, the time and the
configured delays, compute the status CNPG 1.30 would write (per its api/v1/cluster_types.go and
pkg/reconciler/replicaclusterswitch): phases with CNPG's exact strings, ``Ready`` / ``ReplicaClusterSwitch`` /
``ReplicaClusterDesignatedPrimaryTransition`` / ``ReplicaClusterFencing`` conditions, ``currentPrimary``,
``instancesReportedState[*].isPrimary``, the demotion token (base64 JSON with six keys), token-checked promotion and
``lastPromotionToken``, Backup phases ``running`` → ``completed``. No I/O here: the controller applies the result
(real PostgreSQL actions go through ``Instance``).

Two modes per Cluster:

- with an ``Instance`` (the lab's own Clusters ``kms/kms-pg-<site>``, mapped by the controller to that site's real
  PostgreSQL): demotion calls ``Instance.demote`` (clean shutdown, restart as a standby of ``spec.replica.source``) and
  builds the demotion token from the real ``pg_controldata``; promotion checks the token against the instance's
  ``pg_controldata`` after a CHECKPOINT (restartpoint) exactly as CNPG's ``promotiontoken`` package does (system
  identifier, timeline, REDO location: behind = wait, ahead = fatal), then ``Instance.promote``; ``systemID`` /
  ``timelineID`` come from the server. The I/O lives behind the ``Instance`` interface (implemented in
  tests/lab/cnpg_standin.py), so this module stays free of it.
- without one (any other Cluster, e.g. the integration tests' own namespaces), everything is simulated: the system
  identifier is derived from the sorted ``externalClusters`` names (the same in every Cluster of a distributed
  topology) or from the uid; the WAL position grows with wall-clock time; a designated primary "replays" up to a
  promotion token's LSN ``delays.replay`` seconds after the token appears, unless the annotation
  ``lab.hanzo.kms/replayed-lsn`` pins the replayed LSN (lower = wait for ever, higher = fatal mismatch).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import hashlib
import json
import os

OPERATOR_VERSION = "1.30.0"

PHASE_HEALTHY = "Cluster in healthy state"
PHASE_SETTING_UP = "Setting up primary"
PHASE_CREATING_REPLICA = "Creating a new replica"
PHASE_PROMOTING = "Promoting to primary cluster"
PHASE_UNRECOVERABLE = "Cluster is unrecoverable and needs manual intervention"
PHASE_INVALID = "Invalid cluster definition"

COND_READY = "Ready"
COND_SWITCH = "ReplicaClusterSwitch"
COND_DESIGNATED = "ReplicaClusterDesignatedPrimaryTransition"
COND_FENCING = "ReplicaClusterFencing"
COND_ARCHIVING = "ContinuousArchiving"

FENCE_ANNOTATION = "cnpg.io/fencedInstances"
HIBERNATION_ANNOTATION = "cnpg.io/hibernation"
REPLAYED_LSN_ANNOTATION = "lab.hanzo.kms/replayed-lsn"
TOKEN_KEYS = (
    "latestCheckpointTimelineID",
    "redoWalFile",
    "databaseSystemIdentifier",
    "latestCheckpointREDOLocation",
    "timeOfLatestCheckpoint",
    "operatorVersion",
)
TOKEN_MISMATCH_REASON = "Promotion token content is not correct for current instance"

BACKUP_RUNNING = "running"
BACKUP_COMPLETED = "completed"
BACKUP_FAILED = "failed"
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"


@dataclasses.dataclass(frozen=True)
class Delays:
    """Simulated durations in seconds: one operator step, WAL replay catch-up, a base backup."""

    step: float = 1.0
    replay: float = 1.0
    backup: float = 1.0

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        step = float(env.get("HANZO_KMS_CNPG_STANDIN_DELAY", "0.5"))
        return cls(
            step=step,
            replay=float(env.get("HANZO_KMS_CNPG_STANDIN_REPLAY_DELAY", step)),
            backup=float(env.get("HANZO_KMS_CNPG_STANDIN_BACKUP_DELAY", step)),
        )


@dataclasses.dataclass
class Result:
    status: dict
    annotations: dict  # annotation -> value, or None to remove; only changes
    requeue: float | None = None  # seconds


class TokenError(ValueError):
    """A promotion token that is not base64 JSON with the six non-empty keys."""


class InstanceError(Exception):
    """A PostgreSQL action on a Cluster's real instance failed; the reconcile reports it and retries."""


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the real instance says about itself."""

    in_recovery: bool
    system_id: str
    timeline: int


class Instance:
    """The real PostgreSQL instance behind a Cluster (interface; tests/lab/cnpg_standin.py implements it)."""

    def observe(self):
        """An Observation, or None when the server does not answer. Never raises."""
        raise NotImplementedError

    def demote(self, source):
        """Stop accepting writes: shut the primary down cleanly (fast shutdown, so the shutdown checkpoint is
        written and sent to the standbys), then run it as a standby streaming from the instance of ``source`` (an
        ``externalClusters`` name). Idempotent. Returns the parsed ``pg_controldata`` of the shut-down cluster."""
        raise NotImplementedError

    def controldata(self, checkpoint=False):
        """Parsed ``pg_controldata``; with ``checkpoint``, run CHECKPOINT first (a restartpoint on a standby, so the
        control file reflects the last replayed checkpoint, as CNPG does before checking a promotion token)."""
        raise NotImplementedError

    def promote(self):
        """``pg_promote()`` and wait until the server is out of recovery."""
        raise NotImplementedError

    def bootstrap_replica(self, source):
        """A new replica Cluster: keep the instance when it already is a standby of ``source``'s instance, else
        replace its data with a fresh base backup of it (CNPG bootstraps a replica Cluster on new volumes)."""
        raise NotImplementedError

    def bootstrap_primary(self):
        """A new primary Cluster: promote the instance if it runs as a standby (the lab keeps its data)."""
        raise NotImplementedError

    def stop(self):
        """Fencing: shut the instance down cleanly (no-op when it is down)."""
        raise NotImplementedError

    def start(self):
        """Unfencing: start the instance again in its configured role (no-op when it runs)."""
        raise NotImplementedError


# -- helpers -------------------------------------------------------------------------------------------------------
def timestamp(now):
    """CNPG's status timestamp format (pgTime.GetCurrentTimestamp)."""
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(now):
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_lsn(value):
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def parse_lsn(text):
    high, low = str(text).strip().split("/")
    return (int(high, 16) << 32) | int(low, 16)


def wal_file(timeline, lsn):
    segno = lsn // 0x1000000
    return f"{timeline:08X}{segno // 0x100:08X}{segno % 0x100:08X}"


def simulated_lsn(now):
    """The simulated WAL insert position: grows with time."""
    return 0x3000000 + int(now * 1000) * 0x28


def is_replica(spec, name):
    """CNPG's Cluster.IsReplica() (api/v1/cluster_funcs.go)."""
    replica = spec.get("replica")
    if not replica:
        return False
    if replica.get("enabled") is not None:
        return bool(replica["enabled"])
    return (replica.get("self") or name) != (replica.get("primary") or "")


def system_id(obj):
    spec = obj.get("spec", {})
    names = sorted(e.get("name", "") for e in spec.get("externalClusters") or [])
    seed = "topology:" + ",".join(names) if names else "uid:" + obj["metadata"].get("uid", obj["metadata"]["name"])
    return str(7_000_000_000_000_000_000 + int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 10**18)


def make_token(system_identifier, timeline, lsn, now, operator_version=OPERATOR_VERSION):
    """A demotion token as CNPG writes it: base64 of JSON with the six pg_controldata-derived keys."""
    content = {
        "latestCheckpointTimelineID": str(timeline),
        "redoWalFile": wal_file(timeline, lsn),
        "databaseSystemIdentifier": str(system_identifier),
        "latestCheckpointREDOLocation": format_lsn(lsn),
        "timeOfLatestCheckpoint": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(
            "%a %d %b %Y %I:%M:%S %p UTC"
        ),
        "operatorVersion": operator_version,
    }
    return base64.b64encode(json.dumps(content).encode()).decode()


def parse_token(token):
    """Decode and validate a promotion token (CNPG's ParsePgControldataToken + IsValid)."""
    try:
        content = json.loads(base64.b64decode(token, validate=True))
    except (ValueError, TypeError) as exc:
        raise TokenError(f"invalid promotion token: not base64-encoded JSON ({exc})") from None
    if not isinstance(content, dict):
        raise TokenError("invalid promotion token: not a JSON object")
    missing = [k for k in TOKEN_KEYS if not content.get(k)]
    if missing:
        raise TokenError(f"invalid promotion token: empty or missing {', '.join(missing)}")
    try:
        int(content["latestCheckpointTimelineID"])
        parse_lsn(content["latestCheckpointREDOLocation"])
    except ValueError as exc:
        raise TokenError(f"invalid promotion token: {exc}") from None
    return content


# -- pg_controldata and the real token -------------------------------------------------------------------------------
# token key -> pg_controldata label (CNPG's promotiontoken.Data; operatorVersion is added by the operator)
CONTROLDATA_LABELS = {
    "latestCheckpointTimelineID": "Latest checkpoint's TimeLineID",
    "redoWalFile": "Latest checkpoint's REDO WAL file",
    "databaseSystemIdentifier": "Database system identifier",
    "latestCheckpointREDOLocation": "Latest checkpoint's REDO location",
    "timeOfLatestCheckpoint": "Time of latest checkpoint",
}
CD_SYSTEM_ID = CONTROLDATA_LABELS["databaseSystemIdentifier"]
CD_TIMELINE = CONTROLDATA_LABELS["latestCheckpointTimelineID"]
CD_REDO = CONTROLDATA_LABELS["latestCheckpointREDOLocation"]


def parse_controldata(text):
    """``pg_controldata`` output as {label: value} (values may contain colons: split at the first one)."""
    values = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if sep and label.strip():
            values[label.strip()] = value.strip()
    return values


def token_from_controldata(controldata, operator_version=OPERATOR_VERSION):
    """The demotion token CNPG builds from the shut-down primary's ``pg_controldata``."""
    missing = [label for label in CONTROLDATA_LABELS.values() if not controldata.get(label)]
    if missing:
        raise TokenError(f"pg_controldata output lacks {', '.join(missing)}")
    content = {key: controldata[label] for key, label in CONTROLDATA_LABELS.items()}
    content["operatorVersion"] = operator_version
    return base64.b64encode(json.dumps(content).encode()).decode()


@dataclasses.dataclass(frozen=True)
class TokenCheck:
    """Why a promotion token cannot be used now: ``retryable`` = wait, else fatal."""

    retryable: bool
    message: str


def check_token(content, controldata):
    """CNPG's promotiontoken.ValidateAgainstInstanceStatus against a standby's ``pg_controldata`` taken after a
    CHECKPOINT: None when the token matches (the standby replayed exactly up to the old primary's shutdown
    checkpoint), else a TokenCheck."""
    current_system = controldata.get(CD_SYSTEM_ID, "")
    if content["databaseSystemIdentifier"] != current_system:
        return TokenCheck(
            False,
            f"mismatching system identifiers, current:{current_system} wanted:{content['databaseSystemIdentifier']}",
        )
    try:
        current_tl = int(controldata.get(CD_TIMELINE, ""))
        replayed = parse_lsn(controldata.get(CD_REDO, ""))
    except ValueError:
        return TokenCheck(False, f"pg_controldata of the instance is not understood: {controldata}")
    token_tl = int(content["latestCheckpointTimelineID"])
    if token_tl > current_tl:
        return TokenCheck(True, f"requested timeline not reached, current:{current_tl} wanted:{token_tl}")
    if token_tl < current_tl:
        return TokenCheck(
            False, f"requested timeline is older than current one, current:{current_tl} wanted:{token_tl}"
        )
    token_lsn = parse_lsn(content["latestCheckpointREDOLocation"])
    if token_lsn < replayed:
        return TokenCheck(
            False,
            f"promotion token LSN ({format_lsn(token_lsn)}) is older than the last replay LSN ({format_lsn(replayed)})",
        )
    if replayed < token_lsn:
        return TokenCheck(
            True,
            f"waiting for promotion token LSN ({format_lsn(token_lsn)}) to be replayed "
            f"(the last replayed LSN is {format_lsn(replayed)})",
        )
    return None


def set_condition(conditions, ctype, status, reason, message, now, generation=None):
    """meta.SetStatusCondition: lastTransitionTime changes only when status does."""
    for cond in conditions:
        if cond["type"] == ctype:
            if cond["status"] != status:
                cond["lastTransitionTime"] = rfc3339(now)
            cond.update(status=status, reason=reason, message=message)
            if generation is not None:
                cond["observedGeneration"] = generation
            return
    cond = {"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": rfc3339(now)}
    if generation is not None:
        cond["observedGeneration"] = generation
    conditions.append(cond)


def get_condition(status, ctype):
    for cond in status.get("conditions") or []:
        if cond["type"] == ctype:
            return cond
    return None


def _wal_archiver(spec):
    return any(p.get("isWALArchiver") for p in spec.get("plugins") or [] if p.get("enabled", True))


# -- Cluster -------------------------------------------------------------------------------------------------------
OBSERVE_INTERVAL = 2.0  # seconds between refreshes of systemID/timelineID from a real instance


def reconcile_cluster(obj, mem, now, delays, instance=None):
    # pylint: disable=too-many-locals,too-many-branches,too-many-statements,too-many-return-statements
    """Desired status of a Cluster. ``mem`` (a dict the caller keeps per object) holds step start times and
    what a real ``instance`` (an Instance, or None to simulate) reported during a transition."""
    meta = obj["metadata"]
    spec = obj.get("spec", {})
    name = meta["name"]
    gen = meta.get("generation")
    old = obj.get("status") or {}
    status = copy.deepcopy(old)
    annotations = {}
    conditions = status.setdefault("conditions", [])
    instances = int(spec.get("instances", 1))
    pods = [f"{name}-{i}" for i in range(1, instances + 1)]
    replica = is_replica(spec, name)
    requeue = None

    def ready(is_ready, phase, reason=None):
        status["phase"] = phase
        if reason:
            status["phaseReason"] = reason
        else:
            status.pop("phaseReason", None)
        if is_ready:
            set_condition(conditions, COND_READY, "True", "ClusterIsReady", "Cluster is Ready", now, gen)
        else:
            set_condition(conditions, COND_READY, "False", "ClusterIsNotReady", "Cluster Is Not Ready", now, gen)

    def since(key):
        return mem.setdefault(key, now)

    def wait(key, seconds):
        """Remaining seconds before the step ``key`` (started at first sight) is done; 0 when done."""
        return max(0.0, since(key) + seconds - now)

    observed = instance.observe() if instance is not None else None
    status["instances"] = instances
    status["writeService"] = f"{name}-rw"
    status["readService"] = f"{name}-r"

    # 1. bootstrap
    if not status.get("currentPrimary"):
        status.setdefault("targetPrimary", pods[0])
        status.setdefault("targetPrimaryTimestamp", timestamp(now))
        status.setdefault("latestGeneratedNode", 1)
        status["readyInstances"] = 0
        ready(False, PHASE_SETTING_UP)
        left = wait("bootstrap", delays.step)
        if left > 0:
            return Result(status, annotations, left)
        if instance is not None:
            source = (spec.get("replica") or {}).get("source") or next(
                (
                    m.get("source")
                    for m in (spec.get("bootstrap") or {}).values()
                    if isinstance(m, dict) and m.get("source")
                ),
                "",
            )
            try:
                if replica:
                    instance.bootstrap_replica(source)
                else:
                    instance.bootstrap_primary()
            except InstanceError as exc:
                status["phaseReason"] = f"bootstrapping the instance: {exc}"
                return Result(status, annotations, 1.0)
            observed = instance.observe()
        mem.pop("bootstrap", None)
        status["currentPrimary"] = pods[0]
        status["currentPrimaryTimestamp"] = timestamp(now)
        status["systemID"] = observed.system_id if observed else system_id(obj)
        status["timelineID"] = observed.timeline if observed else 1
        status["instancesReportedState"] = {pods[0]: {"isPrimary": not replica, "timeLineID": status["timelineID"]}}
        if instances > 1:
            status["instanceNames"] = pods[:1]
            status["readyInstances"] = 1
            status["instancesStatus"] = {"healthy": pods[:1]}
            ready(False, PHASE_CREATING_REPLICA, f"Creating replica {pods[1]}")
            return Result(status, annotations, delays.step)

    primary = status["currentPrimary"]
    if observed:  # the real server's facts win over the simulated ones
        status["systemID"] = observed.system_id
        status["timelineID"] = observed.timeline
    timeline = int(status.get("timelineID", 1))
    reported = status.setdefault("instancesReportedState", {})
    was_primary = bool(reported.get(primary, {}).get("isPrimary"))
    status.setdefault("systemID", system_id(obj))
    steady_requeue = OBSERVE_INTERVAL if instance is not None else None

    # 2. instances (no PVC simulation: every requested instance exists and is ready)
    status["instanceNames"] = pods if primary in pods else [primary] + pods[1:]
    status["latestGeneratedNode"] = max(int(status.get("latestGeneratedNode", 1)), instances)
    status["readyInstances"] = len(status["instanceNames"])
    status["instancesStatus"] = {"healthy": status["instanceNames"]}
    for pod in list(reported):
        if pod not in status["instanceNames"]:
            del reported[pod]
    for pod in status["instanceNames"]:
        reported.setdefault(pod, {"isPrimary": False, "timeLineID": timeline})
        reported[pod]["timeLineID"] = timeline
        if pod != primary:
            reported[pod]["isPrimary"] = False

    if _wal_archiver(spec):
        set_condition(
            conditions,
            COND_ARCHIVING,
            "True",
            "ContinuousArchivingSuccess",
            "Continuous archiving is working",
            now,
            gen,
        )

    switch = status.setdefault("switchReplicaClusterStatus", {})
    in_progress = bool(switch.get("inProgress"))
    token = (spec.get("replica") or {}).get("promotionToken") or ""
    if not token:
        status.pop("lastPromotionToken", None)

    # 3. demotion: the cluster became a replica while its primary instance runs as a primary
    if in_progress or (replica and was_primary):
        designated = get_condition(status, COND_DESIGNATED)
        if not in_progress:
            mem.pop("demote", None)
            mem.pop("controldata", None)
            switch["inProgress"] = True
            annotations[FENCE_ANNOTATION] = '["*"]'
            set_condition(
                conditions,
                COND_DESIGNATED,
                "False",
                "ReplicaClusterAfterPrimary",
                "Enabled Designated Primary Transition",
                now,
                gen,
            )
            set_condition(
                conditions,
                COND_FENCING,
                "True",
                "ReplicaClusterFencing",
                "Fenced all the instances for the Replica cluster transition",
                now,
                gen,
            )
            set_condition(
                conditions,
                COND_SWITCH,
                "False",
                "ReplicaClusterSwitchStarted",
                "Starting the Replica cluster transition",
                now,
                gen,
            )
            ready(False, status.get("phase") or PHASE_HEALTHY)
            return Result(status, annotations, delays.step)
        left = wait("demote", delays.step)
        if left > 0:
            return Result(status, annotations, left)
        mem.pop("demote", None)
        if designated is None or designated["status"] != "True":
            # the instance manager restarted the primary as a designated primary
            if instance is not None:
                try:
                    mem["controldata"] = instance.demote((spec.get("replica") or {}).get("source") or "")
                except InstanceError as exc:
                    status["phaseReason"] = f"demoting the primary instance: {exc}"
                    return Result(status, annotations, 1.0)
            reported[primary]["isPrimary"] = False
            set_condition(
                conditions,
                COND_DESIGNATED,
                "True",
                "TransitionCompleted",
                "The designated primary transition is completed",
                now,
                gen,
            )
            return Result(status, annotations, delays.step)
        # shutdown checkpoint archived: write the demotion token, unfence, done
        if instance is not None:
            try:
                controldata = mem.get("controldata") or instance.controldata()
                status["demotionToken"] = token_from_controldata(controldata)
            except (InstanceError, TokenError) as exc:
                status["phaseReason"] = f"reading pg_controldata of the demoted instance: {exc}"
                return Result(status, annotations, 1.0)
            mem.pop("controldata", None)
            status["systemID"] = controldata[CD_SYSTEM_ID]
            status["timelineID"] = int(controldata[CD_TIMELINE])
        else:
            lsn = simulated_lsn(now)
            status["demotionToken"] = make_token(status["systemID"], timeline, lsn, now)
            mem["demoted_lsn"] = lsn
        annotations[FENCE_ANNOTATION] = None
        switch["inProgress"] = False
        set_condition(
            conditions,
            COND_FENCING,
            "False",
            "ReplicaClusterUnfenced",
            "Unfenced the instances after the Replica cluster transition",
            now,
            gen,
        )
        set_condition(
            conditions,
            COND_SWITCH,
            "True",
            "ReplicaClusterSwitchCompleted",
            "Completed the Replica cluster transition",
            now,
            gen,
        )
        ready(True, PHASE_HEALTHY)
        return Result(status, annotations, steady_requeue)

    # 4. promotion: no longer a replica, but the designated primary is still in recovery
    if not replica and not was_primary and instance is not None:
        return _promote_instance(instance, observed, token, status, reported, ready, now)
    if not replica and not was_primary:
        promote = True
        if token:
            content = _token_or_unrecoverable(token, ready)
            if content is None:
                return Result(status, annotations, None)
            token_tl = int(content["latestCheckpointTimelineID"])
            token_lsn = parse_lsn(content["latestCheckpointREDOLocation"])
            if content["databaseSystemIdentifier"] != status["systemID"] or token_tl < timeline:
                ready(False, PHASE_UNRECOVERABLE, TOKEN_MISMATCH_REASON)
                return Result(status, annotations, None)
            pinned = (meta.get("annotations") or {}).get(REPLAYED_LSN_ANNOTATION)
            caught_up = wait(("replay", token), delays.replay) == 0
            if pinned:
                try:
                    replayed = parse_lsn(pinned)
                except ValueError:
                    replayed = 0
            else:
                replayed = token_lsn if caught_up else 0
            if replayed > token_lsn:
                ready(False, PHASE_UNRECOVERABLE, TOKEN_MISMATCH_REASON)
                return Result(status, annotations, None)
            if replayed < token_lsn or (token_tl > timeline and not caught_up):
                ready(
                    False,
                    PHASE_PROMOTING,
                    f"waiting for promotion token LSN {format_lsn(token_lsn)} to be replayed "
                    f"(replayed LSN {format_lsn(replayed)})",
                )
                left = wait(("replay", token), delays.replay)
                return Result(status, annotations, left if left > 0 else max(delays.step, 1.0))
            timeline = max(timeline, token_tl)
        if promote:
            mem.pop(("replay", token), None)
            timeline += 1
            _mark_promoted(status, reported, primary, timeline, token, ready, now)
            return Result(status, annotations, None)

    # 5. steady state
    if not replica:
        status.pop("demotionToken", None)
    if instance is not None:
        problem = _apply_fencing(instance, meta, mem)
        if problem:
            status["phaseReason"] = problem
            return Result(status, annotations, 1.0)
    ready(True, PHASE_HEALTHY)
    return Result(status, annotations, steady_requeue)


def fencing_requested(meta):
    """All instances fenced (``cnpg.io/fencedInstances`` lists ``*``) or the Cluster hibernated."""
    annotations = meta.get("annotations") or {}
    if annotations.get(HIBERNATION_ANNOTATION) == "on":
        return True
    try:
        fenced = json.loads(annotations.get(FENCE_ANNOTATION) or "[]")
    except ValueError:
        return False
    return isinstance(fenced, list) and "*" in fenced


def _apply_fencing(instance, meta, mem):
    """Fencing stops the instance (as CNPG's instance manager does); unfencing starts what fencing stopped (only that:
    an instance that died on its own stays down, as a test or drill left it)."""
    try:
        if fencing_requested(meta):
            if not mem.get("fenced"):
                instance.stop()
                mem["fenced"] = True
        elif mem.pop("fenced", False):
            instance.start()
    except InstanceError as exc:
        return f"applying fencing to the instance: {exc}"
    return None


def _token_or_unrecoverable(token, ready):
    """The promotion token's content; None, with the Cluster marked unrecoverable as CNPG does, if it does not parse."""
    try:
        return parse_token(token)
    except TokenError as exc:
        ready(False, PHASE_UNRECOVERABLE, f"{TOKEN_MISMATCH_REASON}: {exc}")
        return None


def _promote_instance(instance, observed, token, status, reported, ready, now):
    """Promotion of a real instance: CNPG's token check against its pg_controldata, then pg_promote."""
    annotations = {}
    if observed is None:
        ready(False, PHASE_PROMOTING, "the designated primary instance does not answer")
        return Result(status, annotations, 1.0)
    if observed.in_recovery:
        if token:
            content = _token_or_unrecoverable(token, ready)
            if content is None:
                return Result(status, annotations, None)
            try:
                problem = check_token(content, instance.controldata(checkpoint=True))
            except InstanceError as exc:
                ready(False, PHASE_PROMOTING, f"checking the promotion token: {exc}")
                return Result(status, annotations, 1.0)
            if problem is not None and not problem.retryable:
                ready(False, PHASE_UNRECOVERABLE, f"{TOKEN_MISMATCH_REASON}: {problem.message}")
                return Result(status, annotations, None)
            if problem is not None:
                ready(False, PHASE_PROMOTING, problem.message)
                return Result(status, annotations, 0.2)
        try:
            instance.promote()
        except InstanceError as exc:
            ready(False, PHASE_PROMOTING, f"promoting the designated primary instance: {exc}")
            return Result(status, annotations, 1.0)
        observed = instance.observe()
    timeline = observed.timeline if observed else int(status.get("timelineID", 1)) + 1
    primary = status["currentPrimary"]
    if observed:
        status["systemID"] = observed.system_id
    _mark_promoted(status, reported, primary, timeline, token, ready, now)
    return Result(status, annotations, OBSERVE_INTERVAL)


def _mark_promoted(status, reported, primary, timeline, token, ready, now):
    """What CNPG writes once the designated primary runs as a primary: the new timeline, every instance's
    isPrimary, the token used (if any), no demotion token, healthy."""
    status["timelineID"] = timeline
    status["currentPrimaryTimestamp"] = timestamp(now)
    status["targetPrimary"] = primary
    for pod in status["instanceNames"]:
        reported[pod] = {"isPrimary": pod == primary, "timeLineID": timeline}
    if token:
        status["lastPromotionToken"] = token
    status.pop("demotionToken", None)
    ready(True, PHASE_HEALTHY)


# -- Backup --------------------------------------------------------------------------------------------------------
def reconcile_backup(backup, cluster, mem, now, delays):
    """Desired status of a Backup given its Cluster (None when missing)."""
    spec = backup.get("spec", {})
    status = copy.deepcopy(backup.get("status") or {})
    phase = status.get("phase")
    if phase in (BACKUP_COMPLETED, BACKUP_FAILED):
        return Result(status, {}, None)
    method = spec.get("method") or "barmanObjectStore"
    status["method"] = method
    if cluster is None:
        status.update(phase=BACKUP_FAILED, error=f"Unknown cluster {spec.get('cluster', {}).get('name', '')}")
        status.setdefault("startedAt", rfc3339(now))
        status["stoppedAt"] = rfc3339(now)
        return Result(status, {}, None)
    cstatus = cluster.get("status") or {}
    primary = cstatus.get("currentPrimary")
    if not primary:
        status["phase"] = "pending"
        return Result(status, {}, max(delays.step, 0.2))
    server = cluster["metadata"]["name"]
    for plugin in cluster.get("spec", {}).get("plugins") or []:
        if plugin.get("name") == BARMAN_PLUGIN:
            server = (plugin.get("parameters") or {}).get("serverName") or server
    if phase != BACKUP_RUNNING:
        mem["started"] = now
        status.update(
            phase=BACKUP_RUNNING,
            startedAt=rfc3339(now),
            backupName=backup["metadata"]["name"],
            serverName=server,
            online=True,
            instanceID={"podName": primary},
            beginLSN=format_lsn(simulated_lsn(now)),
            beginWal=wal_file(int(cstatus.get("timelineID", 1)), simulated_lsn(now)),
        )
        status.pop("error", None)
        return Result(status, {}, delays.backup)
    left = mem.setdefault("started", now) + delays.backup - now
    if left > 0:
        return Result(status, {}, left)
    end = simulated_lsn(now)
    status.update(
        phase=BACKUP_COMPLETED,
        stoppedAt=rfc3339(now),
        backupId=datetime.datetime.fromtimestamp(mem["started"], datetime.timezone.utc).strftime("%Y%m%dT%H%M%S"),
        endLSN=format_lsn(end),
        endWal=wal_file(int(cstatus.get("timelineID", 1)), end),
    )
    return Result(status, {}, None)


def merge_patch(old, new):
    """RFC 7386 merge patch turning ``old`` into ``new`` (None when equal)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else new
    patch = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_patch(old[key], value)
            if sub is not None:
                patch[key] = sub
        elif old[key] != value:
            patch[key] = value
    return patch or None
