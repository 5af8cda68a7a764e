"""Pure analysis of a drill's request log: outages (RTO), acknowledged writes lost (RPO), per-phase counts.

A record is ``{"t0", "t1", "op": "write"|"read", "name", "status", "site", "ok"}`` (epoch seconds), as written by
tests/drill/load.py. A phase is ``{"label", "start", "end"}`` (a playbook run or a lab action).
"""

from __future__ import annotations

import datetime


def outages(records):
    """Runs of failed requests, in time order: each from the start of its first failed request to the end of the
    first successful request after it (what a user retrying all the time would see). An outage still open at the
    end of the log ends at the last request's end and is marked ``open``."""
    runs = []
    current = None
    for rec in sorted(records, key=lambda r: r["t0"]):
        if not rec["ok"]:
            if current is None:
                current = {"start": rec["t0"], "failed": 0, "open": True}
            current["failed"] += 1
            current["end"] = max(current.get("end", rec["t1"]), rec["t1"])
        elif current is not None and rec["t1"] >= current["start"]:
            current.update(end=rec["t1"], open=False)
            runs.append(current)
            current = None
    if current is not None:
        runs.append(current)
    for run in runs:
        run["duration"] = round(run["end"] - run["start"], 3)
    return runs


def longest_outage(records, start=None, end=None):
    """The longest outage that overlaps [start, end] (whole log when omitted), or None."""
    candidates = [
        o for o in outages(records) if (start is None or o["end"] >= start) and (end is None or o["start"] <= end)
    ]
    return max(candidates, key=lambda o: o["duration"], default=None)


def first_success_after(records, when, site=None, op=None):
    """The first successful request that started at or after ``when`` (optionally served by ``site``)."""
    for rec in sorted(records, key=lambda r: r["t0"]):
        if (
            rec["t0"] >= when
            and rec["ok"]
            and (site is None or rec["site"] == site)
            and (op is None or rec["op"] == op)
        ):
            return rec
    return None


def acknowledged_writes(records):
    """{secret name: value} of every write the service acknowledged (HTTP 200); a later ack of a name wins."""
    acked = {}
    for rec in sorted(records, key=lambda r: r["t1"]):
        if rec["op"] == "write" and rec["ok"]:
            acked[rec["name"]] = rec["value"]
    return acked


def lost_writes(acked, rows):
    """Acknowledged writes the surviving database does not hold with the acknowledged value: [(name, want, got)]."""
    return sorted((name, value, rows.get(name)) for name, value in acked.items() if rows.get(name) != value)


def lost_before(records, lost, since, slack=1.0):
    """The lost writes ``[(name, want, got)]`` that were acknowledged before ``since`` (epoch seconds) less ``slack``:
    a failover report's bound (``data_loss.postgres.since``, the newest archived WAL of the old site) promises that
    these survive, so any of them breaks the bound. ``slack`` covers the clock resolution of the object store's
    timestamps (whole seconds). A lost write acknowledged more than once counts from its last acknowledgement."""
    acked_at = {}
    for rec in records:
        if rec["op"] == "write" and rec["ok"]:
            acked_at[rec["name"]] = max(acked_at.get(rec["name"], rec["t1"]), rec["t1"])
    return [item for item in lost if acked_at.get(item[0], float("inf")) < since - slack]


def iso_seconds(text):
    """Epoch seconds of an ISO 8601 time as the reports write it (``2026-12-02T13:03:12Z``)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def counts(records, start=None, end=None):
    """Requests that started inside [start, end]: totals and failures per operation, and which sites served."""
    result = {"write": {"total": 0, "failed": 0}, "read": {"total": 0, "failed": 0}, "sites": {}}
    for rec in records:
        if (start is not None and rec["t0"] < start) or (end is not None and rec["t0"] > end):
            continue
        bucket = result[rec["op"]]
        bucket["total"] += 1
        bucket["failed"] += 0 if rec["ok"] else 1
        if rec["ok"]:
            result["sites"][rec["site"]] = result["sites"].get(rec["site"], 0) + 1
    return result


def phase_summary(records, phase, target_site=None):
    """What users saw during one phase: counts, the longest outage overlapping it and, when a target site is
    given, the time from the phase's start to the first request that site served successfully (its RTO)."""
    summary = {
        "label": phase["label"],
        "start": phase["start"],
        "end": phase["end"],
        "wall_seconds": round(phase["end"] - phase["start"], 3),
        "counts": counts(records, phase["start"], phase["end"]),
    }
    worst = longest_outage(records, phase["start"], phase["end"])
    summary["longest_outage_seconds"] = worst["duration"] if worst else 0.0
    summary["failed_requests_in_longest_outage"] = worst["failed"] if worst else 0
    if target_site:
        first = first_success_after(records, phase["start"], site=target_site)
        summary["first_success_on_target_seconds"] = round(first["t1"] - phase["start"], 3) if first else None
    return summary


def partition_summary(lb_records, site_records, site, cut, plugged, fenced=None):
    """What a partition of ``site`` did, from the requests through the global LB (``lb_records``) and those of the
    site's own clients, which reach its KMS directly (``site_records``): ``cut``/``plugged`` are when its link went
    down and came back, ``fenced`` when the re-run failover finished (None: not run).

    - ``served_by_site_through_lb_after_cut``: requests the LB had ``site`` answer after the cut (must be 0: the
      failover switched the LB away from it while it was cut off, and it stays out after its return);
    - ``site_accepted_writes_while_cut``: writes the site committed for its own clients while cut off (they diverge
      from the promoted site and are lost with the site's timeline);
    - ``site_accepted_writes_after_return``: the same after the link came back, until the end of the fence (0 when
      the site was fenced before it could accept a write);
    - the last write the site accepted."""
    accepted = [r for r in site_records if r["op"] == "write" and r["ok"]]
    after_return = [r for r in accepted if r["t0"] >= plugged and (fenced is None or r["t0"] <= fenced)]
    return {
        "site": site,
        "served_by_site_through_lb_after_cut": sum(
            1 for r in lb_records if r["ok"] and r["site"] == site and r["t0"] >= cut
        ),
        "lb_acknowledged_writes_served_by_site_after_cut": sorted(
            r["name"] for r in lb_records if r["op"] == "write" and r["ok"] and r["site"] == site and r["t0"] >= cut
        ),
        "site_accepted_writes_while_cut": sum(1 for r in accepted if cut <= r["t0"] < plugged),
        "site_accepted_writes_after_return": len(after_return),
        "site_last_accepted_write_after_cut": max((r["t1"] for r in accepted if r["t0"] >= cut), default=None),
        "site_requests": len(site_records),
    }
