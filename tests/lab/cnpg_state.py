"""Pure state machine of the lab's CloudNativePG operator STAND-IN (not CNPG; see tests/lab/cnpg_standin.py).

Given a Cluster or Backup object (a dict as the API returns it), the stand-in's memory for it, the time and the
configured delays, compute the status CNPG 1.30 would write (per /work/shared/notes/cnpg-replica-clusters.md):
phases with CNPG's exact strings, ``Ready`` / ``ReplicaClusterSwitch`` / ``ReplicaClusterDesignatedPrimaryTransition`` /
``ReplicaClusterFencing`` conditions, ``currentPrimary``, ``instancesReportedState[*].isPrimary``, the demotion token
(base64 JSON with six keys), token-checked promotion and ``lastPromotionToken``, Backup phases ``running`` →
``completed``. No I/O here: the controller applies the result.

Simulation (there is no PostgreSQL): the system identifier is derived from the sorted ``externalClusters`` names (the
same in every Cluster of a distributed topology) or from the uid; the WAL position grows with wall-clock time; a
designated primary "replays" up to a promotion token's LSN ``delays.replay`` seconds after the token appears, unless
the annotation ``lab.hanzo.kms/replayed-lsn`` pins the replayed LSN (lower = wait for ever, higher = fatal mismatch).
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
REPLAYED_LSN_ANNOTATION = "lab.hanzo.kms/replayed-lsn"
TOKEN_KEYS = ("latestCheckpointTimelineID", "redoWalFile", "databaseSystemIdentifier",
              "latestCheckpointREDOLocation", "timeOfLatestCheckpoint", "operatorVersion")
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
        return cls(step=step, replay=float(env.get("HANZO_KMS_CNPG_STANDIN_REPLAY_DELAY", step)),
                   backup=float(env.get("HANZO_KMS_CNPG_STANDIN_BACKUP_DELAY", step)))


@dataclasses.dataclass
class Result:
    status: dict
    annotations: dict  # annotation -> value, or None to remove; only changes
    requeue: float | None = None  # seconds


class TokenError(ValueError):
    """A promotion token that is not base64 JSON with the six non-empty keys."""


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
        "timeOfLatestCheckpoint": datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        .strftime("%a %d %b %Y %I:%M:%S %p UTC"),
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
def reconcile_cluster(obj, mem, now, delays):  # pylint: disable=too-many-locals,too-many-branches,too-many-statements
    """Desired status of a Cluster. ``mem`` (a dict the caller keeps per object) holds step start times."""
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
        mem.pop("bootstrap", None)
        status["currentPrimary"] = pods[0]
        status["currentPrimaryTimestamp"] = timestamp(now)
        status["systemID"] = system_id(obj)
        status["timelineID"] = 1
        status["instancesReportedState"] = {pods[0]: {"isPrimary": not replica, "timeLineID": 1}}
        if instances > 1:
            status["instanceNames"] = pods[:1]
            status["readyInstances"] = 1
            status["instancesStatus"] = {"healthy": pods[:1]}
            ready(False, PHASE_CREATING_REPLICA, f"Creating replica {pods[1]}")
            return Result(status, annotations, delays.step)

    primary = status["currentPrimary"]
    timeline = int(status.get("timelineID", 1))
    reported = status.setdefault("instancesReportedState", {})
    was_primary = bool(reported.get(primary, {}).get("isPrimary"))
    status.setdefault("systemID", system_id(obj))

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
        set_condition(conditions, COND_ARCHIVING, "True", "ContinuousArchivingSuccess",
                      "Continuous archiving is working", now, gen)

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
            switch["inProgress"] = True
            annotations[FENCE_ANNOTATION] = '["*"]'
            set_condition(conditions, COND_DESIGNATED, "False", "ReplicaClusterAfterPrimary",
                          "Enabled Designated Primary Transition", now, gen)
            set_condition(conditions, COND_FENCING, "True", "ReplicaClusterFencing",
                          "Fenced all the instances for the Replica cluster transition", now, gen)
            set_condition(conditions, COND_SWITCH, "False", "ReplicaClusterSwitchStarted",
                          "Starting the Replica cluster transition", now, gen)
            ready(False, status.get("phase") or PHASE_HEALTHY)
            return Result(status, annotations, delays.step)
        left = wait("demote", delays.step)
        if left > 0:
            return Result(status, annotations, left)
        mem.pop("demote", None)
        if designated is None or designated["status"] != "True":
            # the instance manager restarted the primary as a designated primary
            reported[primary]["isPrimary"] = False
            set_condition(conditions, COND_DESIGNATED, "True", "TransitionCompleted",
                          "The designated primary transition is completed", now, gen)
            return Result(status, annotations, delays.step)
        # shutdown checkpoint archived: write the demotion token, unfence, done
        lsn = simulated_lsn(now)
        status["demotionToken"] = make_token(status["systemID"], timeline, lsn, now)
        mem["demoted_lsn"] = lsn
        annotations[FENCE_ANNOTATION] = None
        switch["inProgress"] = False
        set_condition(conditions, COND_FENCING, "False", "ReplicaClusterUnfenced",
                      "Unfenced the instances after the Replica cluster transition", now, gen)
        set_condition(conditions, COND_SWITCH, "True", "ReplicaClusterSwitchCompleted",
                      "Completed the Replica cluster transition", now, gen)
        ready(True, PHASE_HEALTHY)
        return Result(status, annotations, None)

    # 4. promotion: no longer a replica, but the designated primary is still in recovery
    if not replica and not was_primary:
        promote = True
        if token:
            try:
                content = parse_token(token)
            except TokenError as exc:
                ready(False, PHASE_UNRECOVERABLE, f"{TOKEN_MISMATCH_REASON}: {exc}")
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
                ready(False, PHASE_PROMOTING,
                      f"waiting for promotion token LSN {format_lsn(token_lsn)} to be replayed "
                      f"(replayed LSN {format_lsn(replayed)})")
                left = wait(("replay", token), delays.replay)
                return Result(status, annotations, left if left > 0 else max(delays.step, 1.0))
            timeline = max(timeline, token_tl)
        if promote:
            mem.pop(("replay", token), None)
            timeline += 1
            status["timelineID"] = timeline
            status["currentPrimaryTimestamp"] = timestamp(now)
            status["targetPrimary"] = primary
            for pod in status["instanceNames"]:
                reported[pod] = {"isPrimary": pod == primary, "timeLineID": timeline}
            if token:
                status["lastPromotionToken"] = token
            status.pop("demotionToken", None)
            ready(True, PHASE_HEALTHY)
            return Result(status, annotations, None)

    # 5. steady state
    if not replica:
        status.pop("demotionToken", None)
    ready(True, PHASE_HEALTHY)
    return Result(status, annotations, None)


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
        status.update(phase=BACKUP_RUNNING, startedAt=rfc3339(now), backupName=backup["metadata"]["name"],
                      serverName=server, online=True, instanceID={"podName": primary},
                      beginLSN=format_lsn(simulated_lsn(now)),
                      beginWal=wal_file(int(cstatus.get("timelineID", 1)), simulated_lsn(now)))
        status.pop("error", None)
        return Result(status, {}, delays.backup)
    left = mem.setdefault("started", now) + delays.backup - now
    if left > 0:
        return Result(status, {}, left)
    end = simulated_lsn(now)
    status.update(phase=BACKUP_COMPLETED, stoppedAt=rfc3339(now),
                  backupId=datetime.datetime.fromtimestamp(mem["started"], datetime.timezone.utc)
                  .strftime("%Y%m%dT%H%M%S"),
                  endLSN=format_lsn(end), endWal=wal_file(int(cstatus.get("timelineID", 1)), end))
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
