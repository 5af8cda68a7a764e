"""CloudNativePG operator STAND-IN for the lab (one process per site). It is not CNPG.

There are no containers in the lab, so the real CNPG operator and PostgreSQL instances cannot run. This controller
watches ``postgresql.cnpg.io/v1`` Clusters and Backups in every namespace of one Kubernetes cluster and writes the
status CNPG 1.30 would write (phases, conditions, currentPrimary, instancesReportedState, demotion/promotion tokens,
Backup phases), as computed by the pure state machine in ``tests/lab/cnpg_state.py``. Simulated delays come from
``HANZO_KMS_CNPG_STANDIN_DELAY`` (seconds per operator step, default 0.5), ``…_REPLAY_DELAY`` and ``…_BACKUP_DELAY``.

    python -m tests.lab.cnpg_standin --kubeconfig FILE --context dc1 [--ready-file PATH]
"""
from __future__ import annotations

import argparse
import heapq
import logging
import queue
import signal
import sys
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.lab import cnpg_state

GROUP, VERSION = "postgresql.cnpg.io", "v1"
RECONCILIATION_ANNOTATION = "cnpg.io/reconciliationLoop"
LOG = logging.getLogger("cnpg-standin")


class StandIn:
    def __init__(self, api_client, delays):
        self.api = client.CustomObjectsApi(api_client)
        self.delays = delays
        self.events = queue.Queue()
        self.mem = {}  # (plural, namespace, name, uid) -> dict
        self.stopping = threading.Event()

    # -- watches -----------------------------------------------------------------------------------------------------
    def watch(self, plural):
        while not self.stopping.is_set():
            try:
                listing = self.api.list_cluster_custom_object(GROUP, VERSION, plural)
                for item in listing.get("items", []):
                    self.events.put((plural, item["metadata"]["namespace"], item["metadata"]["name"]))
                rv = listing["metadata"]["resourceVersion"]
                for event in watch.Watch().stream(self.api.list_cluster_custom_object, GROUP, VERSION, plural,
                                                  resource_version=rv, timeout_seconds=300):
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
                if (item.get("spec", {}).get("cluster") or {}).get("name") == name and \
                        (item.get("status") or {}).get("phase") in (None, "", "pending"):
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
            result = cnpg_state.reconcile_cluster(obj, mem, now, self.delays)
        else:
            cluster_name = (obj.get("spec", {}).get("cluster") or {}).get("name", "")
            cluster = self._get("clusters", namespace, cluster_name) if cluster_name else None
            result = cnpg_state.reconcile_backup(obj, cluster, mem, now, self.delays)
        if result.annotations:  # fencing/unfencing comes before the status that reports it, as in CNPG
            self.api.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name,
                                                    {"metadata": {"annotations": result.annotations}})
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    api_client = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    standin = StandIn(api_client, cnpg_state.Delays.from_env())

    def stop(_signum, _frame):
        standin.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    standin.run(args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
