"""CloudNativePG operator STAND-IN for the lab (one process per site). It is not CNPG.

There are no containers in the lab, so the real CNPG operator and its instance pods cannot run. This controller
watches ``postgresql.cnpg.io/v1`` Clusters and Backups in every namespace of one Kubernetes cluster and writes the
status CNPG 1.30 would write (phases, conditions, currentPrimary, instancesReportedState, demotion/promotion tokens,
Backup phases), as computed by the state machine in ``tests/lab/cnpg_state.py``. Simulated delays come from
``HANZO_KMS_CNPG_STANDIN_DELAY`` (seconds per operator step, default 0.5), ``…_REPLAY_DELAY`` and ``…_BACKUP_DELAY``.

The lab's own Clusters, ``<pg-namespace>/kms-pg-<site>`` (the install playbook's names) of this stand-in's site,
drive that site's REAL PostgreSQL (the lab state's ``sites.<site>.postgres``) through ``PostgresInstance``: demotion
shuts it down cleanly and restarts it as a standby of ``spec.replica.source``, the demotion token holds its real
``pg_controldata``, promotion checks the token against the standby and runs ``pg_promote()``. Any other Cluster is
status-only (simulated), as before.

    python -m tests.lab.cnpg_standin --kubeconfig FILE --context dc1 [--ready-file PATH]
        [--site dc1] [--lab-dir DIR] [--pg-namespace kms]
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import queue
import signal
import sys
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.lab import cnpg_state, postgres

GROUP, VERSION = "postgresql.cnpg.io", "v1"
RECONCILIATION_ANNOTATION = "cnpg.io/reconciliationLoop"
CLUSTER_PREFIX = "kms-pg-"  # roles/cnpg: cnpg_cluster_prefix
PG_NAMESPACE = "kms"  # roles/cnpg: cnpg_namespace
LOG = logging.getLogger("cnpg-standin")
OBSERVE_SQL = """
SELECT pg_is_in_recovery(), (SELECT system_identifier::text FROM pg_control_system()),
       (SELECT timeline_id FROM pg_control_checkpoint()),
       (SELECT received_tli FROM pg_stat_wal_receiver),
       (SELECT max(name) FROM pg_ls_waldir() WHERE name LIKE '%.history')"""


class PostgresInstance(cnpg_state.Instance):
    """The lab's real PostgreSQL of one site, as the instance of its Cluster ``kms-pg-<site>``."""

    def __init__(self, lab_dir, site):
        self.lab_dir = Path(lab_dir)
        self.site = site

    def _entry(self):
        return postgres.site_entry(self.lab_dir, self.site)

    def observe(self):
        try:
            conn = postgres.connect(self._entry(), superuser=True, dbname="postgres")
        except Exception:  # pylint: disable=broad-exception-caught
            return None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(OBSERVE_SQL)
                in_recovery, system_id, checkpoint_tl, received_tl, history = cur.fetchone()
                if in_recovery:
                    # newest timeline the standby knows: checkpoint, stream, or a fetched history file
                    timeline = max(int(checkpoint_tl), int(received_tl or 0), int(history[:8], 16) if history else 0)
                else:
                    cur.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")
                    timeline = int(cur.fetchone()[0][:8], 16)
            return cnpg_state.Observation(bool(in_recovery), str(system_id), timeline)
        except Exception:  # pylint: disable=broad-exception-caught
            return None
        finally:
            conn.close()

    @staticmethod
    def _upstream(source):
        if not source.startswith(CLUSTER_PREFIX):
            raise cnpg_state.InstanceError(f"replica source {source!r} is not a lab Cluster ({CLUSTER_PREFIX}<site>)")
        return source[len(CLUSTER_PREFIX) :]

    def demote(self, source):
        upstream = self._upstream(source)
        try:
            LOG.info("demoting %s PostgreSQL: clean shutdown, then standby of %s", self.site, upstream)
            text = postgres.demote(self.lab_dir, self.site, upstream)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise cnpg_state.InstanceError(str(exc)) from exc
        return cnpg_state.parse_controldata(text)

    def controldata(self, checkpoint=False):
        try:
            entry = self._entry()
            if checkpoint:
                postgres.query(entry, "CHECKPOINT", superuser=True, dbname="postgres")
            return cnpg_state.parse_controldata(postgres.controldata_text(entry))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise cnpg_state.InstanceError(str(exc)) from exc

    def promote(self):
        try:
            LOG.info("promoting %s PostgreSQL (pg_promote)", self.site)
            postgres.promote(self.lab_dir, self.site)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise cnpg_state.InstanceError(str(exc)) from exc

    def bootstrap_replica(self, source):
        upstream = self._upstream(source)
        try:
            if postgres.ensure_standby(self.lab_dir, self.site, upstream):
                LOG.info("re-cloned %s PostgreSQL from %s (new replica Cluster)", self.site, upstream)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise cnpg_state.InstanceError(str(exc)) from exc

    def bootstrap_primary(self):
        try:
            entry = self._entry()
            if postgres.query(entry, "SELECT pg_is_in_recovery()", superuser=True, dbname="postgres")[0][0]:
                LOG.info("promoting %s PostgreSQL (new primary Cluster)", self.site)
                postgres.promote(self.lab_dir, self.site)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise cnpg_state.InstanceError(str(exc)) from exc

    def stop(self):
        try:
            LOG.info("fencing: stopping %s PostgreSQL", self.site)
            postgres.stop(self._entry())
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise cnpg_state.InstanceError(str(exc)) from exc

    def start(self):
        try:
            if not postgres.is_running(self._entry()):
                LOG.info("unfencing: starting %s PostgreSQL", self.site)
                postgres.start(self.lab_dir, self.site)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise cnpg_state.InstanceError(str(exc)) from exc


def find_lab_dir(kubeconfig):
    """The lab dir holding ``kubeconfig`` (<lab>/<site>/kube/kubeconfig): the nearest parent with a state.json."""
    for parent in Path(kubeconfig).resolve().parents:
        if (parent / "state.json").exists():
            return parent
    return None


class StandIn:
    def __init__(self, api_client, delays, site=None, lab_dir=None, pg_namespace=PG_NAMESPACE):
        self.api = client.CustomObjectsApi(api_client)
        self.delays = delays
        self.events = queue.Queue()
        self.mem = {}  # (plural, namespace, name, uid) -> dict
        self.stopping = threading.Event()
        self.site = site
        self.lab_dir = Path(lab_dir) if lab_dir else None
        self.pg_namespace = pg_namespace

    def instance_for(self, namespace, name):
        """The real PostgreSQL behind Cluster ``namespace/name``, or None (status-only)."""
        if self.lab_dir is None or namespace != self.pg_namespace or name != f"{CLUSTER_PREFIX}{self.site}":
            return None
        try:
            state = json.loads((self.lab_dir / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if "postgres" not in state.get("sites", {}).get(self.site, {}):
            return None
        return PostgresInstance(self.lab_dir, self.site)

    # -- watches -----------------------------------------------------------------------------------------------------
    def watch(self, plural):
        while not self.stopping.is_set():
            try:
                listing = self.api.list_cluster_custom_object(GROUP, VERSION, plural)
                for item in listing.get("items", []):
                    self.events.put((plural, item["metadata"]["namespace"], item["metadata"]["name"]))
                rv = listing["metadata"]["resourceVersion"]
                for event in watch.Watch().stream(
                    self.api.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    plural,
                    resource_version=rv,
                    timeout_seconds=300,
                ):
                    obj = event["object"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.events.put((plural, obj["metadata"]["namespace"], obj["metadata"]["name"]))
                        if plural == "clusters":  # Backups of this cluster may be waiting for it
                            self.events.put(("backups-of", obj["metadata"]["namespace"], obj["metadata"]["name"]))
                    elif event["type"] == "DELETED":
                        self._forget(plural, obj)
            except Exception as exc:  # pylint: disable=broad-exception-caught
                if self.stopping.is_set():
                    return
                LOG.warning("watch on %s failed (%s); re-listing", plural, exc)
                self.stopping.wait(1.0)

    def _forget(self, plural, obj):
        meta = obj["metadata"]
        self.mem.pop((plural, meta["namespace"], meta["name"], meta.get("uid")), None)

    # -- reconcile ---------------------------------------------------------------------------------------------------
    def _get(self, plural, namespace, name):
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def reconcile(self, plural, namespace, name):
        """Apply one reconcile step; return seconds until the next one is due (or None)."""
        if plural == "backups-of":
            backups = self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, "backups")
            for item in backups.get("items", []):
                if (item.get("spec", {}).get("cluster") or {}).get("name") == name and (item.get("status") or {}).get(
                    "phase"
                ) in (None, "", "pending"):
                    self.events.put(("backups", namespace, item["metadata"]["name"]))
            return None
        obj = self._get(plural, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        if (obj["metadata"].get("annotations") or {}).get(RECONCILIATION_ANNOTATION) == "disabled":
            return None  # CNPG's switch to pause reconciliation of one object
        mem = self.mem.setdefault((plural, namespace, name, obj["metadata"].get("uid")), {})
        now = time.time()
        if plural == "clusters":
            result = cnpg_state.reconcile_cluster(obj, mem, now, self.delays, self.instance_for(namespace, name))
        else:
            cluster_name = (obj.get("spec", {}).get("cluster") or {}).get("name", "")
            cluster = self._get("clusters", namespace, cluster_name) if cluster_name else None
            result = cnpg_state.reconcile_backup(obj, cluster, mem, now, self.delays)
        if result.annotations:  # fencing/unfencing comes before the status that reports it, as in CNPG
            self.api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, {"metadata": {"annotations": result.annotations}}
            )
        patch = cnpg_state.merge_patch(obj.get("status") or {}, result.status)
        if patch:
            self.api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name, {"status": patch})
            LOG.info("%s %s/%s status: phase=%r", plural, namespace, name, result.status.get("phase"))
        return result.requeue

    def run(self, ready_file=None):
        for plural in ("clusters", "backups"):
            threading.Thread(target=self.watch, args=(plural,), daemon=True, name=f"watch-{plural}").start()
        if ready_file:
            Path(ready_file).write_text("watching\n", encoding="utf-8")
        LOG.info("watching %s/%s clusters and backups (delays %s)", GROUP, VERSION, self.delays)
        timers = []  # (due, key)
        while not self.stopping.is_set():
            timeout = max(0.0, timers[0][0] - time.monotonic()) if timers else 1.0
            keys = []
            try:
                keys.append(self.events.get(timeout=min(timeout, 1.0)))
                while True:
                    keys.append(self.events.get_nowait())
            except queue.Empty:
                pass
            while timers and timers[0][0] <= time.monotonic():
                keys.append(heapq.heappop(timers)[1])
            for key in dict.fromkeys(keys):  # de-duplicated, in order
                try:
                    requeue = self.reconcile(*key)
                except ApiException as exc:
                    if exc.status == 409:  # stale read; the watch brings the new version
                        requeue = 0.05
                    else:
                        LOG.warning("reconcile %s failed: %s %s", key, exc.status, exc.reason)
                        requeue = 1.0
                except Exception:  # pylint: disable=broad-exception-caught
                    LOG.exception("reconcile %s failed", key)
                    requeue = 1.0
                if requeue is not None:
                    heapq.heappush(timers, (time.monotonic() + requeue, key))


def main(argv=None):
    parser = argparse.ArgumentParser(description="CloudNativePG operator stand-in for the lab (not CNPG)")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--context")
    parser.add_argument("--ready-file")
    parser.add_argument(
        "--site", help="the site whose PostgreSQL the Cluster kms-pg-<site> drives (default: --context)"
    )
    parser.add_argument("--lab-dir", help="lab dir with state.json (default: the kubeconfig's nearest parent with one)")
    parser.add_argument("--pg-namespace", default=PG_NAMESPACE, help="namespace of the lab's kms-pg-<site> Clusters")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    api_client = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    site = args.site or args.context
    lab_dir = args.lab_dir or find_lab_dir(args.kubeconfig)
    standin = StandIn(
        api_client, cnpg_state.Delays.from_env(), site=site, lab_dir=lab_dir, pg_namespace=args.pg_namespace
    )
    LOG.info(
        "site %s: Cluster %s/%s%s drives the PostgreSQL of lab %s",
        site,
        args.pg_namespace,
        CLUSTER_PREFIX,
        site,
        lab_dir or "(none: status only)",
    )

    def stop(_signum, _frame):
        standin.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    standin.run(args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
