"""The drill's analysis of a request log (tests/drill/analysis.py)."""

from __future__ import annotations

from tests.drill import analysis


def rec(t0, ok, op="write", name="s", site="dc1", value="v", duration=0.1):
    return {
        "t0": t0,
        "t1": t0 + duration,
        "op": op,
        "name": name,
        "status": 200 if ok else 503,
        "site": site,
        "ok": ok,
        "value": value,
    }


def test_an_outage_runs_from_the_first_failure_to_the_end_of_the_next_success():
    log = [rec(0, True), rec(1, False), rec(2, False), rec(3, True), rec(4, True)]
    runs = analysis.outages(log)
    assert runs == [{"start": 1, "end": 3.1, "failed": 2, "open": False, "duration": 2.1}]


def test_separate_outages_are_kept_apart_and_the_longest_is_chosen_per_window():
    log = [rec(0, False), rec(1, True), rec(10, False), rec(11, False), rec(12, False), rec(14, True)]
    runs = analysis.outages(log)
    assert [r["failed"] for r in runs] == [1, 3]
    assert analysis.longest_outage(log)["start"] == 10
    assert analysis.longest_outage(log, 0, 5)["start"] == 0
    assert analysis.longest_outage(log, 20, 30) is None


def test_an_outage_at_the_end_of_the_log_is_open():
    runs = analysis.outages([rec(0, True), rec(1, False), rec(2, False, duration=2.0)])
    assert runs[0]["open"] is True
    assert runs[0]["end"] == 4.0


def test_first_success_after_honours_site_and_start():
    log = [rec(0, True, site="dc1"), rec(5, True, site="dc1"), rec(6, False, site=""), rec(7, True, site="dc2")]
    assert analysis.first_success_after(log, 1)["t0"] == 5
    assert analysis.first_success_after(log, 1, site="dc2")["t0"] == 7
    assert analysis.first_success_after(log, 8) is None


def test_lost_writes_are_missing_rows_or_other_values():
    log = [
        rec(0, True, name="a", value="1"),
        rec(1, True, name="b", value="2"),
        rec(2, False, name="c", value="3"),
        rec(3, True, name="d", value="4"),
    ]
    acked = analysis.acknowledged_writes(log)
    assert acked == {"a": "1", "b": "2", "d": "4"}
    assert analysis.lost_writes(acked, {"a": "1", "b": "old", "c": "3"}) == [("b", "2", "old"), ("d", "4", None)]
    assert analysis.lost_writes(acked, {"a": "1", "b": "2", "d": "4"}) == []


def test_phase_summary_counts_and_target_rto():
    log = [rec(0, True), rec(1, False), rec(2, False, op="read"), rec(3, True, site="dc2"), rec(9, True, site="dc2")]
    summary = analysis.phase_summary(log, {"label": "failover", "start": 0.5, "end": 5}, target_site="dc2")
    assert summary["counts"]["write"] == {"total": 2, "failed": 1}
    assert summary["counts"]["read"] == {"total": 1, "failed": 1}
    assert summary["counts"]["sites"] == {"dc2": 1}
    assert summary["longest_outage_seconds"] == 2.1
    assert summary["first_success_on_target_seconds"] == 2.6


def test_lost_before_names_only_writes_acknowledged_before_the_archived_wal():
    records = [
        {"op": "write", "ok": True, "name": "a", "t0": 9.0, "t1": 10.0},
        {"op": "write", "ok": True, "name": "b", "t0": 19.0, "t1": 20.0},
        {"op": "write", "ok": True, "name": "c", "t0": 29.5, "t1": 29.6},
        {"op": "write", "ok": True, "name": "a", "t0": 39.0, "t1": 40.0},  # acknowledged again later
        {"op": "write", "ok": False, "name": "d", "t0": 1.0, "t1": 2.0},
    ]
    lost = [("a", "v2", "v1"), ("b", "v", None), ("c", "v", None)]
    # archived at 30: b (at 20) should have survived; c is inside the slack; a's last ack (40) is after the WAL
    assert analysis.lost_before(records, lost, since=30.0) == [("b", "v", None)]
    assert analysis.lost_before(records, lost, since=15.0) == []
    assert analysis.iso_seconds("1970-01-01T00:01:40Z") == 100.0


def test_partition_summary_counts_what_the_cut_off_site_accepted_and_what_the_lb_had_it_serve():
    lb = [
        rec(1, True, site="dc1", name="a"),
        rec(12, False, site=""),
        rec(30, True, site="dc2", name="b"),
        rec(31, True, op="read", site="dc2"),
    ]
    own = [
        rec(5, True, name="l1"),
        rec(11, True, name="l2"),
        rec(15, True, name="l3"),
        rec(41, True, name="l4"),
        rec(44, False, name="l5"),
        rec(50, True, name="l6"),
    ]
    got = analysis.partition_summary(lb, own, "dc1", cut=10, plugged=40, fenced=45)
    assert got["served_by_site_through_lb_after_cut"] == 0
    assert got["site_accepted_writes_while_cut"] == 2  # l2, l3
    assert got["site_accepted_writes_after_return"] == 1  # l4 (l6 is after the fence window)
    assert got["site_last_accepted_write_after_cut"] == 50.1
    lb.append(rec(42, True, site="dc1", name="c"))
    got = analysis.partition_summary(lb, own, "dc1", cut=10, plugged=40)
    assert got["served_by_site_through_lb_after_cut"] == 1
    assert got["lb_acknowledged_writes_served_by_site_after_cut"] == ["c"]
    assert got["site_accepted_writes_after_return"] == 2  # no fence: everything after the return
