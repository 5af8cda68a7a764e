# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure-logic tests of the s3_retention policy engine and planner (no S3 server needed).

The restic semantics are checked with hypothesis against ``reference_keep`` below, a deliberately different,
set-based model of restic's ``ApplyPolicy`` (restic/restic internal/data/snapshot_policy.go):
for every enabled rule, take the newest backup of each of the N newest calendar periods that have backups; when
fewer periods than N exist (or N is unlimited) the oldest backup is kept as well; ``within`` keeps every backup
newer than (newest non-future backup - duration), computed with Go's AddDate normalisation.
"""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout
from ansible_collections.hanzo.kms.plugins.module_utils.s3_retention import (
    TIME_SOURCES,
    Backup,
    Duration,
    Inventory,
    Layout,
    Policy,
    RetentionError,
    S3Object,
    add_date,
    apply_policy,
    build_inventory,
    check_scope,
    plan_retention,
)

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 22, 4, 15, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ reference model


def _period(name, t, i):
    return {
        "last": i,
        "hourly": (t.year, t.month, t.day, t.hour),
        "daily": t.date(),
        "weekly": t.isocalendar()[:2],
        "monthly": (t.year, t.month),
        "yearly": t.year,
    }[name]


def _go_sub(t, d):
    months = t.year * 12 + (t.month - 1) - d.years * 12 - d.months
    first = datetime.date(months // 12, months % 12 + 1, 1)
    day = datetime.date.fromordinal(first.toordinal() + t.day - 1 - d.days)
    return datetime.datetime.combine(day, t.timetz()) - datetime.timedelta(hours=d.hours)


def reference_keep(times, counts, within, now):
    """Indexes (into ``times``, sorted newest first) that restic keeps."""
    n = len(times)
    keep = set()
    for name, count in counts.items():
        if not count:
            continue
        newest_of_period = {}
        for i, t in enumerate(times):
            newest_of_period.setdefault(_period(name, t, i), i)
        chosen = sorted(newest_of_period.values())
        if count != -1:
            chosen = chosen[:count]
        keep.update(chosen)
        if n and (count == -1 or len(newest_of_period) < count):
            keep.add(n - 1)
    if within is not None:
        past = [t for t in times if t < now]
        if not past:
            keep.update(range(n))
        else:
            limit = _go_sub(max(past), within)
            keep.update(i for i, t in enumerate(times) if t > limit)
    return keep


# ------------------------------------------------------------------------------------------------ strategies

minutes = st.integers(min_value=0, max_value=3 * 366 * 24 * 60)  # about three years of minute offsets
counts_st = st.integers(min_value=-1, max_value=6)
durations = st.builds(
    Duration, years=st.integers(0, 1), months=st.integers(0, 13), days=st.integers(0, 40), hours=st.integers(0, 50)
)
BASE = datetime.datetime(2024, 1, 1, tzinfo=UTC)


@st.composite
def histories(draw, max_size=60):
    offs = draw(st.lists(minutes, max_size=max_size))
    # dense bursts as well as sparse histories: some runs are within hours of each other
    return sorted((BASE + datetime.timedelta(minutes=o) for o in offs), reverse=True)


@st.composite
def policies(draw):
    counts = dict((name, draw(counts_st)) for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"))
    within = draw(st.one_of(st.none(), durations))
    if within is not None and within.is_zero():
        within = None
    return counts, within


# ------------------------------------------------------------------------------------------------ policy engine


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(times=histories(), pol=policies(), now_off=st.integers(-400 * 24 * 60, 4 * 366 * 24 * 60))
def test_apply_policy_matches_reference(times, pol, now_off):
    counts, within = pol
    now = BASE + datetime.timedelta(minutes=now_off)
    policy = Policy(within=within, **counts)
    got = set(i for i, r in enumerate(apply_policy(times, policy, now)) if r)
    assert got == reference_keep(times, counts, within, now)


@settings(max_examples=200, deadline=None)
@given(times=histories(), pol=policies())
def test_rules_are_ored(times, pol):
    counts, within = pol
    union = set()
    for name, count in counts.items():
        single = dict((k, 0) for k in counts)
        single[name] = count
        union |= set(i for i, r in enumerate(apply_policy(times, Policy(**single), NOW)) if r)
    if within is not None:
        union |= set(i for i, r in enumerate(apply_policy(times, Policy(within=within), NOW)) if r)
    combined = set(i for i, r in enumerate(apply_policy(times, Policy(within=within, **counts), NOW)) if r)
    assert combined == union


def _daily(n, start=datetime.datetime(2026, 1, 1, 3, tzinfo=UTC)):
    return sorted((start + datetime.timedelta(days=i) for i in range(n)), reverse=True)


def test_keep_daily_one_per_day_and_oldest_anchor():
    times = sorted([datetime.datetime(2026, 3, d, h, tzinfo=UTC) for d in (1, 2, 3) for h in (1, 13)], reverse=True)
    reasons = apply_policy(times, Policy(daily=5), NOW)
    kept = [t for t, r in zip(times, reasons) if r]
    # newest of each of the 3 days, plus the oldest backup because fewer days than 5 exist
    assert kept == [times[0], times[2], times[4], times[5]]
    assert reasons[5] == ["oldest daily backup"]


def test_keep_weekly_uses_iso_weeks():
    # 2026-01-04 is a Sunday (ISO week 1 of 2026), 2026-01-05 a Monday (week 2)
    sun = datetime.datetime(2026, 1, 4, 23, tzinfo=UTC)
    mon = datetime.datetime(2026, 1, 5, 1, tzinfo=UTC)
    sat = datetime.datetime(2026, 1, 3, 1, tzinfo=UTC)
    times = [mon, sun, sat]
    reasons = apply_policy(times, Policy(weekly=2), NOW)
    assert [bool(r) for r in reasons] == [True, True, False]


def test_unlimited_keeps_every_period():
    times = _daily(40)
    assert all(apply_policy(times, Policy(daily=-1), NOW))


def test_gfs_example_overlaps_counted_once():
    # daily backups 2026-01-01 .. 2026-03-31 (a Tuesday); 2026-03-29 is a Sunday
    times = sorted(
        (datetime.datetime(2026, 1, 1, 3, tzinfo=UTC) + datetime.timedelta(days=i) for i in range(90)), reverse=True
    )
    assert times[0].date() == datetime.date(2026, 3, 31)
    reasons = apply_policy(times, Policy(daily=7, weekly=5, monthly=3), NOW)
    kept = sorted(t.date().isoformat() for t, r in zip(times, reasons) if r)
    dailies = [f"2026-03-{d:02d}" for d in range(25, 32)]
    assert kept == sorted(dailies + ["2026-03-22", "2026-03-15", "2026-03-08", "2026-02-28", "2026-01-31"])
    assert reasons[0] == ["daily backup", "weekly backup", "monthly backup"]


def test_keep_within_relative_to_newest_not_now_and_ignores_future():
    times = sorted([datetime.datetime(2020, 1, d, tzinfo=UTC) for d in range(1, 11)], reverse=True)
    reasons = apply_policy(times, Policy(within=Duration(days=3)), NOW)
    assert [bool(r) for r in reasons] == [True] * 3 + [False] * 7
    future = [datetime.datetime(2030, 1, 1, tzinfo=UTC)] + times
    reasons = apply_policy(future, Policy(within=Duration(days=3)), NOW)
    assert [bool(r) for r in reasons] == [True] * 4 + [False] * 7


def test_duration_parse_and_go_adddate():
    assert str(Duration.parse("1y2m3d4h")) == "1y2m3d4h"
    assert Duration.parse("30d").days == 30
    for bad in ("", "5", "3w", "d", "1h2d", "-1d"):
        with pytest.raises(RetentionError):
            Duration.parse(bad)
    # Go normalises: 2026-03-31 minus one month = "2026-02-31" = 2026-03-03
    assert add_date(datetime.datetime(2026, 3, 31, tzinfo=UTC), 0, -1, 0).date() == datetime.date(2026, 3, 3)
    assert add_date(datetime.datetime(2026, 1, 31, tzinfo=UTC), 0, -1, 0).date() == datetime.date(2025, 12, 31)
    assert add_date(datetime.datetime(2024, 2, 29, tzinfo=UTC), -1, 0, 0).date() == datetime.date(2023, 3, 1)


def test_policy_validation():
    with pytest.raises(RetentionError):
        Policy(daily=-2)
    with pytest.raises(RetentionError):
        Policy(min_keep=-1)
    assert Policy().is_empty()
    assert Policy(last=0, within=Duration()).is_empty()
    with pytest.raises(RetentionError, match="empty"):
        plan_retention(Inventory(), Policy(), NOW)


# ------------------------------------------------------------------------------------------------ layout + planner


def _objects(spec, written=None):
    """spec: list of (key, last_modified)."""
    return [S3Object(k, 1, lm or written or NOW) for k, lm in spec]


def test_layout_split_and_unrecognised():
    lay = Layout(prefix="redis", group_depth=1)
    assert lay.prefix == "redis/"
    assert lay.split("redis/dc1/20261122T041500Z/dump.rdb") == ("dc1", "20261122T041500Z", "dump.rdb")
    assert lay.split("redis/dc1/20261122T041500Z/sub/dir/x") == ("dc1", "20261122T041500Z", "sub/dir/x")
    for key in (
        "redis/dump.rdb",
        "redis/dc1/dump.rdb",
        "redis/dc1//x",
        "redis//ts/x",
        "other/dc1/ts/x",
        "redis/dc1/20261122T041500Z/",
    ):
        assert lay.split(key) is None, key
    inv = build_inventory(
        _objects(
            [
                ("redis/dc1/20261122T041500Z/dump.rdb", None),
                ("redis/dc1/20261122T041500Z/manifest.json", None),
                ("redis/dc1/not-a-time/dump.rdb", None),
                ("redis/README", None),
                ("redis/dc1/20261121T041500Z/dump.rdb", None),
            ]
        ),
        lay,
    )
    assert inv.unrecognised == ["redis/README", "redis/dc1/not-a-time/dump.rdb"]
    backups = inv.groups["dc1"]
    assert [(b.name, b.complete, len(b.objects)) for b in backups] == [
        ("20261122T041500Z", True, 2),
        ("20261121T041500Z", False, 1),
    ]
    zero = Layout(prefix="redis/dc1/", group_depth=0)
    assert zero.split("redis/dc1/20261122T041500Z/dump.rdb") == ("", "20261122T041500Z", "dump.rdb")
    with pytest.raises(RetentionError):
        Layout(time_source="mtime")
    with pytest.raises(RetentionError):
        Layout(manifest_name="a/b")


def _inventory(entries, layout=None):
    """entries: (group, timestamp datetime, complete, written datetime)."""
    layout = layout or Layout(prefix="p", group_depth=1)
    objs = []
    for group, when, complete, written in entries:
        base = f"p/{group}/{when.strftime(backup_layout.TIMESTAMP_FORMAT)}/"
        objs.append(S3Object(base + "dump.rdb", 10, written))
        if complete:
            objs.append(S3Object(base + "manifest.json", 1, written))
    return build_inventory(objs, layout)


def test_incomplete_grace_on_server_clock():
    old = NOW - datetime.timedelta(days=3)
    inv = _inventory(
        [
            ("dc1", NOW - datetime.timedelta(hours=1), True, NOW),
            ("dc1", NOW, False, NOW - datetime.timedelta(hours=2)),  # in progress
            ("dc1", old, False, old),
        ]
    )  # abandoned
    plan = plan_retention(inv, Policy(last=1), NOW, incomplete_grace=Duration(days=1))
    actions = dict((b.name, b.action) for b in plan)
    assert actions[NOW.strftime(backup_layout.TIMESTAMP_FORMAT)] == "keep"
    assert actions[old.strftime(backup_layout.TIMESTAMP_FORMAT)] == "delete"
    plan = plan_retention(inv, Policy(last=1), NOW, incomplete_grace=Duration(days=1), delete_incomplete=False)
    assert all(b.action == "keep" for b in plan if not b.complete)


def test_floor_protects_last_written_under_clock_skew():
    # A host with a clock one year behind writes the real newest backup with an old timestamp.
    entries = [("dc1", NOW - datetime.timedelta(days=d), True, NOW - datetime.timedelta(days=d)) for d in range(1, 5)]
    skewed = NOW - datetime.timedelta(days=365)
    entries.append(("dc1", skewed, True, NOW))
    plan = plan_retention(_inventory(entries), Policy(last=2), NOW)
    by_name = dict((b.name, b) for b in plan)
    assert by_name[skewed.strftime(backup_layout.TIMESTAMP_FORMAT)].action == "keep"
    assert "most recently written complete backup" in by_name[skewed.strftime(backup_layout.TIMESTAMP_FORMAT)].reasons


def test_groups_are_independent():
    entries = [(g, NOW - datetime.timedelta(days=d), True, NOW) for g in ("dc1", "dc2") for d in range(5)]
    plan = plan_retention(_inventory(entries), Policy(last=2), NOW)
    for g in ("dc1", "dc2"):
        assert sum(1 for b in plan if b.group == g and b.action == "keep") == 2


entry_st = st.tuples(
    st.sampled_from(["dc1", "dc2"]),
    st.integers(-2 * 24 * 60, 400 * 24 * 60),  # timestamp offset in minutes back from NOW (<0 = future)
    st.booleans(),
    st.integers(0, 400 * 24 * 60),
)  # written offset back from NOW


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(entry_st, max_size=40),
    pol=policies(),
    min_keep=st.integers(0, 5),
    grace=st.one_of(st.none(), durations),
)
def test_plan_floors_hold(entries, pol, min_keep, grace):
    counts, within = pol
    policy = Policy(within=within, min_keep=min_keep, **counts)
    if policy.is_empty():
        return
    rows = [(g, NOW - datetime.timedelta(minutes=t), c, NOW - datetime.timedelta(minutes=w)) for g, t, c, w in entries]
    inv = _inventory(rows)
    plan = plan_retention(inv, policy, NOW, incomplete_grace=grace)
    assert sorted(b.prefix for b in plan) == sorted(set(b.prefix for g in inv.groups.values() for b in g))
    for group in set(b.group for b in plan):
        complete = [b for b in plan if b.group == group and b.complete]
        if not complete:
            continue
        kept = [b for b in complete if b.action == "keep"]
        assert len(kept) >= min(max(min_keep, 1), len(complete))
        newest = max(complete, key=lambda b: b.time)
        assert newest.action == "keep"
        last_written = max(b.manifest.last_modified for b in complete)
        assert any(b.manifest.last_modified == last_written for b in kept)
        # the restic rules alone never delete what they keep
        for b in complete:
            assert (b.action == "keep") == bool(b.reasons)
    for b in plan:
        if not b.complete and b.action == "delete":
            assert grace is None or b.written <= grace.subtract_from(NOW)


def test_backup_to_dict():
    b = Backup("dc1", "20261122T041500Z", "p/dc1/20261122T041500Z/")
    b.objects = [S3Object("p/dc1/20261122T041500Z/dump.rdb", 5, NOW)]
    d = b.to_dict(include_keys=True)
    assert d["complete"] is False and d["size"] == 5 and d["keys"] == ["p/dc1/20261122T041500Z/dump.rdb"]


# ------------------------------------------------------------------------------------------------ declared layout (issue 14)

OLD, NEW = "20261001T000000Z", "20261101T000000Z"
INCOMPLETE = "20261015T000000Z"
SHARED_BUCKET = (
    [
        "cnpg/dc1/wals/0000000100000000/000000010000000000000001.gz",
        "cnpg/dc1/wals/0000000100000000/000000010000000000000002.gz",
        "cnpg/dc1/base/20261201T000000/data.tar",
        "cnpg/dc1/base/20261201T000000/backup.info",
        "cnpg/dc10/wals/0000000100000000/000000010000000000000001.gz",
        "README.md",
        "redis/README.md",
        "redis/dc1/latest/dump.rdb",  # not a timestamp
        "redis/dc1/20260901T000000Z/manifest.json",  # a manifest without its data
        "redis/dc1/20260831T000000Z/notes.txt",  # a timestamp directory without a data file
        f"redis/dc1/{OLD}/notes.txt",  # not a file of the layout, inside a backup
        f"redis/dc1/{OLD}/copy/dump.rdb",  # nested one level too deep
    ]
    + [
        f"redis/{site}/{name}/{f}"
        for site in ("dc1", "dc10")
        for name in (OLD, NEW)
        for f in ("dump.rdb", "manifest.json")
    ]
    + [f"redis/{site}/{INCOMPLETE}/dump.rdb" for site in ("dc1", "dc10")]
)
REDIS_OBSOLETE = [f"redis/{site}/{name}/" for site in ("dc1", "dc10") for name in (OLD, INCOMPLETE)]


def _shared_objects():
    # the newer backup written later, as in a real history; everything else an hour earlier
    return [S3Object(k, 1, NOW if NEW in k else NOW - datetime.timedelta(hours=1)) for k in sorted(SHARED_BUCKET)]


def _manifest_times(inv):
    for backups in inv.groups.values():
        for b in backups:
            if b.complete:
                b.time = datetime.datetime.strptime(b.name, backup_layout.TIMESTAMP_FORMAT).replace(tzinfo=UTC)


@pytest.mark.parametrize("time_source", TIME_SOURCES)
@pytest.mark.parametrize(
    "prefix,depth,expected",
    [
        ("", 1, []),  # the reproduction: no Redis backup is at depth 1 of the bucket
        ("", 2, REDIS_OBSOLETE),
        ("redis", 1, REDIS_OBSOLETE),
        ("redis/dc1", 0, [p for p in REDIS_OBSOLETE if p.startswith("redis/dc1/")]),
        ("cnpg", 1, []),
        ("cnpg/dc1", 1, []),
    ],
)
def test_shared_bucket_only_redis_backups_are_planned_for_deletion(time_source, prefix, depth, expected):
    layout = Layout(prefix=prefix, group_depth=depth, time_source=time_source)
    objects = [o for o in _shared_objects() if o.key.startswith(layout.prefix)]
    inv = build_inventory(objects, layout)
    if time_source == "manifest":
        _manifest_times(inv)  # what read_manifest_times sets from the manifests' "timestamp"
    plan = plan_retention(inv, Policy(last=1), NOW, incomplete_grace=None)
    assert sorted(b.prefix for b in plan if b.action == "delete") == sorted(expected)
    in_backups = set(o.key for b in plan for o in b.objects)
    # every listed key is either in a backup or unrecognised, never both
    assert sorted(in_backups | set(inv.unrecognised)) == sorted(o.key for o in objects)
    assert not in_backups & set(inv.unrecognised)
    assert all(k.rsplit("/", 1)[1] in ("dump.rdb", "manifest.json") for k in in_backups)
    assert not any(k.startswith("cnpg/") for k in in_backups)
    for key in (
        f"redis/dc1/{OLD}/notes.txt",
        f"redis/dc1/{OLD}/copy/dump.rdb",
        "redis/dc1/20260901T000000Z/manifest.json",
    ):
        assert key in inv.unrecognised or not key.startswith(layout.prefix)


def test_layout_backup_names():
    lay = Layout(prefix="redis")
    assert lay.parse_name(OLD) == (True, datetime.datetime(2026, 10, 1, tzinfo=UTC))
    for name in ("latest", "wals", "base", "20261201T000000", "dc1"):
        assert lay.parse_name(name) == (False, None), name
    # without name_pattern the name must be a timestamp whatever the time source
    for source in TIME_SOURCES:
        assert not Layout(prefix="redis", time_source=source).parse_name("wals")[0]
    named = Layout(prefix="x", time_source="manifest", name_pattern="nightly-[0-9]+")
    assert named.parse_name("nightly-7") == (True, None)
    assert not named.parse_name("nightly-7x")[0] and not named.parse_name("xnightly-7")[0]  # full match only
    keyed = Layout(prefix="x", time_source="key", name_pattern="2026.*")
    assert keyed.parse_name(OLD)[0] and not keyed.parse_name("2026-not-a-time")[0]  # the time comes from the name


def test_layout_files():
    lay = Layout(prefix="redis")
    assert lay.data_files == ("dump.rdb",)
    assert [lay.file_kind(f) for f in ("dump.rdb", "manifest.json", "notes.txt", "copy/dump.rdb", "dump.rdb.tmp")] == [
        "data",
        "manifest",
        None,
        None,
        None,
    ]
    parts = Layout(prefix="x", data_files=["part-*.bin"])
    assert parts.file_kind("part-3.bin") == "data" and parts.file_kind("dump.rdb") is None
    # a glob matching the manifest still leaves it the manifest
    assert Layout(prefix="x", data_files=["*"]).file_kind("manifest.json") == "manifest"


def test_defaults_are_the_redis_backup_layout():
    lay = Layout()
    assert lay.data_files == (backup_layout.RDB_NAME,) and lay.manifest_name == backup_layout.MANIFEST_NAME
    assert lay.timestamp_format == backup_layout.TIMESTAMP_FORMAT


@pytest.mark.parametrize(
    "kwargs,problem",
    [
        (dict(data_files=[]), "at least one"),
        (dict(data_files=["a/b"]), 'without "/"'),
        (dict(data_files=[""]), 'without "/"'),
        (dict(data_files=["manifest.json"]), "must not contain the manifest"),
        (dict(name_pattern="("), "not a valid regular expression"),
    ],
)
def test_layout_validation(kwargs, problem):
    with pytest.raises(RetentionError, match=problem):
        Layout(prefix="redis", **kwargs)


def test_scope_refuses_the_whole_bucket_unless_declared():
    for prefix in (None, "", "/", "//"):
        with pytest.raises(RetentionError, match="selects the whole bucket.*whole_bucket=true"):
            check_scope(prefix)
        check_scope(prefix, whole_bucket=True)
    check_scope("redis")
    check_scope("redis/dc1/")
    with pytest.raises(
        RetentionError, match="whole_bucket=true applies to an empty prefix only, but prefix is 'redis'"
    ):
        check_scope("redis", whole_bucket=True)


def test_site_prefix_is_a_directory():
    lay = Layout(prefix="redis/dc1", group_depth=0)
    assert lay.split(f"redis/dc10/{OLD}/dump.rdb") is None
    assert lay.split(f"redis/dc1/{OLD}/dump.rdb") == ("", OLD, "dump.rdb")
    grouped = Layout(prefix="redis", group_depth=1)
    assert grouped.split(f"redis/dc10/{OLD}/dump.rdb")[0] == "dc10"
    assert grouped.split(f"redisx/dc1/{OLD}/dump.rdb") is None


def test_versioned_leftovers_need_a_data_file():
    def gone(key):
        return S3Object(key, 0, NOW, versions=[("v1", False), ("v2", True)], current=False)

    inv = build_inventory(
        [
            gone(f"redis/dc1/{OLD}/dump.rdb"),
            gone(f"redis/dc1/{OLD}/manifest.json"),
            gone(f"redis/dc1/{NEW}/manifest.json"),
            gone(f"redis/dc1/{INCOMPLETE}/notes.txt"),
            gone("cnpg/dc1/wals/x.gz"),
        ],
        Layout(prefix="", group_depth=1),
    )
    assert inv.leftovers == []  # at depth 1 of the bucket the names are 'dc1', not backup names
    inv = build_inventory(
        [
            gone(f"redis/dc1/{OLD}/dump.rdb"),
            gone(f"redis/dc1/{OLD}/manifest.json"),
            gone(f"redis/dc1/{NEW}/manifest.json"),
            gone(f"redis/dc1/{INCOMPLETE}/notes.txt"),
            gone("cnpg/dc1/wals/x.gz"),
        ],
        Layout(prefix="redis", group_depth=1),
    )
    assert [b.prefix for b in inv.leftovers] == [f"redis/dc1/{OLD}/"]
    assert inv.unrecognised == []  # only current keys are reported


key_part = st.sampled_from(
    ["redis", "cnpg", "dc1", "dc10", "wals", "base", OLD, NEW, INCOMPLETE, "20261201T000000", "latest"]
)
file_part = st.sampled_from(["dump.rdb", "manifest.json", "data.tar", "backup.info", "notes.txt", "0001.gz"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.sets(
        st.builds(lambda d, f: "/".join(d + [f]), st.lists(key_part, min_size=0, max_size=4), file_part), max_size=40
    ),
    prefix=st.sampled_from(["", "redis", "redis/dc1", "cnpg"]),
    depth=st.integers(0, 3),
    time_source=st.sampled_from(TIME_SOURCES),
    ages=st.lists(st.integers(0, 1000), min_size=40, max_size=40),
)
def test_only_declared_layout_files_are_ever_deleted(keys, prefix, depth, time_source, ages):
    layout = Layout(prefix=prefix, group_depth=depth, time_source=time_source)
    objects = [
        S3Object(k, 1, NOW - datetime.timedelta(hours=a))
        for k, a in zip(sorted(keys), ages)
        if k.startswith(layout.prefix)
    ]
    inv = build_inventory(objects, layout)
    if time_source == "manifest":
        _manifest_times(inv)
    plan = plan_retention(inv, Policy(last=1), NOW, incomplete_grace=None, delete_incomplete=True)
    for b in plan:
        rel = b.prefix[len(layout.prefix) :].rstrip("/").split("/")
        assert len(rel) == depth + 1 and datetime.datetime.strptime(rel[-1], backup_layout.TIMESTAMP_FORMAT)
        names = [o.key[len(b.prefix) :] for o in b.objects]
        assert "dump.rdb" in names and set(names) <= {"dump.rdb", "manifest.json"}
    assert sorted(set(o.key for b in plan for o in b.objects) | set(inv.unrecognised)) == sorted(o.key for o in objects)
