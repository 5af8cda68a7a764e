"""The background write load of Molecule's failback scenario (tests/drill/lb_load.py), without a lab."""

from __future__ import annotations

from tests.drill import lb_load, load
from tests.unit.drill.test_analysis import rec


def test_the_summary_counts_what_the_load_saw_and_names_each_acknowledged_write_lost():
    log = [
        rec(0, True, name="failback-1", site="dc2", value="a"),
        rec(1, False, name="failback-2", site="", value=None),
        rec(2, True, name="failback-3", site="dc1", value="c"),
        rec(3, True, op="read", name="failback-1", site="dc1"),
        rec(4, True, name="failback-4", site="dc1", value="d"),
    ]
    seen = lb_load.summary(log)
    assert seen == {"requests": 5, "failed": 1, "acknowledged": 3, "served_by": ["dc1", "dc2"]}
    rows = {"failback-1": "a", "failback-3": "stale", "failback-2": "never acknowledged"}
    assert lb_load.summary(log, rows)["lost"] == [("failback-3", "c", "stale"), ("failback-4", "d", None)]
    assert lb_load.summary(log, {"failback-1": "a", "failback-3": "c", "failback-4": "d"})["lost"] == []


def test_stop_reads_the_records_of_a_client_that_already_ended(tmp_path):
    out, pid_file, _log = lb_load.paths(tmp_path / "load.jsonl")
    load.write_records(out, [rec(0, True), rec(1, False)])  # what the client writes when it ends
    pid_file.write_text("999999999", encoding="ascii")  # no such process: it stopped by itself (--max-seconds)
    assert [r["ok"] for r in lb_load.stop(out)] == [True, False]
    assert not pid_file.exists()
