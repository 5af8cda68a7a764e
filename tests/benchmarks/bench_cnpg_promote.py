"""Benchmark: hanzo.kms.cnpg_promote switchover and failover on the lab's two kube-apiservers + CNPG stand-in.

Module time is the state machine's own ``timings.total`` (module_utils ``Promoter.run()`` over kubernetes clients,
as the module runs it, Ansible start-up excluded). Start the lab with ``HANZO_KMS_CNPG_STANDIN_DELAY=0`` so the
stand-in's simulated operator delays are zero and what remains is API round trips, the stand-in's reaction and the
module's polling. Baseline, measured in the same run on fresh Clusters: the same patches applied by a minimal
hand-written script (raw CustomObjectsApi, 10 ms polling, no checks), i.e. the floor set by the API + stand-in.

Each measurement uses a fresh namespace with ``kms-pg-dc1`` (primary, dc1) and ``kms-pg-dc2`` (replica, dc2); medians
of ``--runs``. Failover is measured with the old site unreachable (connection refused: the site is gone) and with
the old site answering but fenced.

Run (lab already up): ``HANZO_KMS_TEST_LAB_DIR=<lab dir> .venv/bin/python -m tests.benchmarks.bench_cnpg_promote``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for entry in (str(REPO), str(REPO / ".venv" / "collections")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

# pylint: disable=wrong-import-position
from kubernetes import client, config  # noqa: E402

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg  # noqa: E402
from tests.integration.test_cnpg_promote import DC1, DC2, create_topology, patch, wait_for  # noqa: E402

POLL = 0.01


def clients(lab_dir):
    state = json.loads(Path(lab_dir, "state.json").read_text(encoding="utf-8"))
    return {
        site: config.new_client_from_config(
            config_file=state["sites"][site]["kube"]["kubeconfig"], context=state["sites"][site]["kube"]["context"]
        )
        for site in ("dc1", "dc2")
    }


def poll(c, ns, name, predicate):
    return wait_for(c, ns, name, predicate, "the wanted state", interval=POLL)


def topology(kc):
    ns = f"b-{uuid.uuid4().hex[:8]}"
    for c in kc.values():
        client.CoreV1Api(c).create_namespace({"metadata": {"name": ns}})
    create_topology(kc["dc1"], kc["dc2"], ns, interval=POLL)
    return ns


def drop(kc, ns):
    for c in kc.values():
        client.CoreV1Api(c).delete_namespace(ns)


def baseline_switchover(kc, ns):
    started = time.monotonic()
    patch(kc["dc1"], ns, DC1, {"spec": {"replica": {"primary": DC2}}})
    old = poll(kc["dc1"], ns, DC1, lambda o: cnpg.demotion_done(o)[0])
    token = old["status"]["demotionToken"]
    patch(kc["dc2"], ns, DC2, {"spec": {"replica": {"primary": DC2, "promotionToken": token}}})
    poll(kc["dc2"], ns, DC2, lambda o: cnpg.promotion_done(o, token))
    return time.monotonic() - started


def baseline_failover(kc, ns):
    started = time.monotonic()
    patch(kc["dc2"], ns, DC2, {"spec": {"replica": {"primary": DC2}}})
    poll(kc["dc2"], ns, DC2, cnpg.promotion_done)
    return time.monotonic() - started


def module_run(kc, ns, mode, old_client=None, poll_interval=POLL):
    old = cnpg.KubeCluster(old_client or kc["dc1"], DC1, ns, "old", request_timeout=5)
    new = cnpg.KubeCluster(kc["dc2"], DC2, ns, "new", request_timeout=5)
    result = cnpg.Promoter(old, new, mode, poll_interval=poll_interval).run()
    assert result["changed"], result
    return result["timings"]["total"], result["timings"]


def gone_client():
    """A client for a site whose API server is gone (nothing listens on the port)."""
    conf = client.Configuration()
    conf.host = "https://127.0.0.1:1"
    conf.verify_ssl = False
    conf.retries = 1
    return client.ApiClient(conf)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lab-dir", default=os.environ.get("HANZO_KMS_TEST_LAB_DIR", str(REPO / ".lab")))
    args = parser.parse_args()
    kc = clients(args.lab_dir)
    figures = {k: [] for k in ("base_sw", "mod_sw", "base_fo", "mod_fo_gone", "mod_fo_fenced", "mod_sw_1s")}
    steps = {}
    for dummy in range(args.runs):
        for key, run in (
            ("base_sw", lambda ns: baseline_switchover(kc, ns)),
            ("mod_sw", lambda ns: module_run(kc, ns, "switchover")),
            ("mod_sw_1s", lambda ns: module_run(kc, ns, "switchover", poll_interval=1.0)),
            ("base_fo", lambda ns: baseline_failover(kc, ns)),
            ("mod_fo_gone", lambda ns: module_run(kc, ns, "failover", old_client=gone_client())),
            (
                "mod_fo_fenced",
                lambda ns: (
                    patch(kc["dc1"], ns, DC1, {"metadata": {"annotations": {cnpg.FENCE_ANNOTATION: '["*"]'}}}),
                    module_run(kc, ns, "failover"),
                )[1],
            ),
        ):
            ns = topology(kc)
            try:
                value = run(ns)
            finally:
                drop(kc, ns)
            if isinstance(value, tuple):
                value, timing = value
                steps.setdefault(key, timing)
            figures[key].append(value)
    med = {k: statistics.median(v) * 1000 for k, v in figures.items()}
    print(
        f"stand-in delay per step: {os.environ.get('HANZO_KMS_CNPG_STANDIN_DELAY', 'as the lab was started')}; "
        f"medians of {args.runs} runs, ms"
    )
    rows = [
        ("switchover, baseline (raw patches, 10 ms polling)", med["base_sw"], med["base_sw"]),
        ("switchover, cnpg_promote (poll_interval 0.01)", med["mod_sw"], med["base_sw"]),
        ("switchover, cnpg_promote (poll_interval 1.0)", med["mod_sw_1s"], med["base_sw"]),
        ("failover, baseline (raw patch, 10 ms polling)", med["base_fo"], med["base_fo"]),
        ("failover, cnpg_promote, old site gone (connection refused)", med["mod_fo_gone"], med["base_fo"]),
        ("failover, cnpg_promote, old site answers, fenced", med["mod_fo_fenced"], med["base_fo"]),
    ]
    for label, value, base in rows:
        print(f"{label:62s} {value:8.1f} ms  {value / base:5.2f}x baseline")
    print("first-run step timings (s):", json.dumps(steps))


if __name__ == "__main__":
    main()
