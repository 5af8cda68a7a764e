# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import datetime

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import times

UTC = datetime.timezone.utc
WANT = datetime.datetime(2026, 11, 22, 4, 15, tzinfo=UTC)


def test_parse_any_time():
    assert times.parse_any_time("20261122T041500Z") == WANT
    assert times.parse_any_time("2026-11-22T04:15:00Z") == WANT
    assert times.parse_any_time("2026-11-22T05:15:00+01:00") == WANT
    assert times.parse_any_time(WANT.timestamp()) == WANT
    assert times.parse_any_time("yesterday") is None
    assert times.parse_any_time(True) is None
    assert times.parse_any_time(None) is None


def test_parse_timestamp_with_a_format():
    assert times.parse_timestamp("20261122T041500Z") == WANT
    assert times.parse_timestamp("2026-11-22 04:15", "%Y-%m-%d %H:%M") == WANT
    assert times.parse_timestamp("2026-11-22", times.COMPACT_FORMAT) is None
    assert times.parse_timestamp(None) is None


def test_parse_time_formats():
    assert times.parse_time("20261122T041500Z") == WANT
    assert times.parse_time("20261122T041500") == WANT
    assert times.parse_time("2026-11-22T04:15:00Z") == times.parse_time("2026-11-22T05:15:00+01:00") == WANT
    assert times.parse_time(WANT.replace(tzinfo=None)) == WANT
    assert times.parse_time("") is None and times.parse_time(None) is None and times.parse_time("garbage") is None


def test_format_time_round_trips():
    assert times.format_time(WANT) == "2026-11-22T04:15:00Z"
    assert times.format_time(WANT.astimezone(datetime.timezone(datetime.timedelta(hours=2)))) == "2026-11-22T04:15:00Z"
    assert times.parse_time(times.format_time(WANT)) == WANT
    assert times.format_time(None) is None
    assert times.format_time(WANT.replace(tzinfo=None)) == "2026-11-22T04:15:00Z"  # naive means UTC, not local time
    assert times.format_time(WANT, times.COMPACT_FORMAT) == "20261122T041500Z"
    assert times.parse_timestamp(times.utcnow_compact()) is not None


def test_as_utc_takes_naive_as_utc():
    east = WANT.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    for when in (WANT, WANT.replace(tzinfo=None), east):
        assert times.as_utc(when) == WANT and times.as_utc(when).tzinfo is UTC
    assert times.as_utc(None) is None
    assert times.MIN_TIME < times.as_utc(datetime.datetime.min.replace(second=1))
    assert times.as_utc(east).strftime(times.RFC3339_FORMAT) == times.format_time(east) == "2026-11-22T04:15:00Z"


def test_epoch_times_and_microtimes():
    epoch = WANT.timestamp() + 0.25
    assert times.format_epoch(epoch) == "2026-11-22T04:15:00Z"
    assert times.format_epoch(epoch, times.MICROTIME_FORMAT) == "2026-11-22T04:15:00.250000Z"
    assert (
        times.parse_epoch("2026-11-22T04:15:00.250000Z") == times.parse_epoch(" 2026-11-22T05:15:00.25+01:00 ") == epoch
    )
    assert times.parse_epoch(WANT) == times.parse_epoch(WANT.replace(tzinfo=None)) == WANT.timestamp()
    assert times.parse_epoch(None) is None and times.parse_epoch("") is None
    with pytest.raises(ValueError):
        times.parse_epoch("garbage")
    assert times.epoch_text(epoch) == "2026-11-22T04:15:00Z" and times.epoch_text(None) == "unknown"


@pytest.mark.parametrize("text", ["2026-11-22T04:15:00Z", "2026-11-22T04:15:00.000Z"])
def test_parse_iso_z_reads_s3_listing_times(text):
    assert times.parse_iso_z(text) == WANT and times.parse_iso_z(text).tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "2026-11-22T04:15:00+00:00",
        "2026-11-22T04:15:00.000000Z",
        "2026-13-22T04:15:00Z",
        "Sun, 22 Nov 2026 04:15:00 GMT",
        b"2026-11-22T04:15:00Z",
    ],
)
def test_parse_iso_z_leaves_other_forms_to_the_caller(text):
    assert times.parse_iso_z(text) is None
    assert times.parse_iso_z(text, otherwise=lambda other: ("fallback", other)) == ("fallback", text)


def test_parse_http_date():
    assert times.parse_http_date("Sun, 22 Nov 2026 04:15:00 GMT") == WANT
    assert times.parse_http_date("Sun, 22 Nov 2026 05:15:00 +0100") == WANT
    for bad in (None, "", "yesterday"):
        assert times.parse_http_date(bad) is None


def test_age_seconds_is_never_negative():
    assert times.age_seconds("2026-11-22T04:14:00Z", WANT) == 60
    assert times.age_seconds("2026-11-22T04:16:00Z", WANT) == 0
    assert times.age_seconds(None, WANT) is None


@pytest.mark.parametrize(
    "seconds,text",
    [
        (None, "unknown"),
        (42, "42s"),
        (192, "3m 12s"),
        (5 * 3600 + 120, "5h 02m"),
        (2 * 86400 + 3 * 3600, "2d 03h"),
        (-192, "-3m 12s"),
        (59.9, "59s"),
    ],
)
def test_human_age(seconds, text):
    assert times.human_age(seconds) == text
