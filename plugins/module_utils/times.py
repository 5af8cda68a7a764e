# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time helpers of the collection (plain Python, no Ansible import): aware UTC datetimes, the compact form of backup
keys and run names (``20261129T130000Z``), RFC 3339 text and ages as people read them."""

from __future__ import annotations

import datetime
import email.utils
import re

UTC = datetime.timezone.utc
# Backup keys (<prefix>/<site>/<timestamp>/...) and report names use this form.
COMPACT_FORMAT = "%Y%m%dT%H%M%SZ"
# RFC 3339 UTC text with whole seconds (backup manifests, reports): 2026-11-29T13:00:00Z.
RFC3339_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# A Kubernetes MicroTime (a Lease's acquireTime and renewTime): RFC 3339 UTC with microseconds.
MICROTIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Sorts before every real time (e.g. a backup whose time is unknown).
MIN_TIME = datetime.datetime.min.replace(tzinfo=UTC)


def utcnow():
    return datetime.datetime.now(UTC)


def utcnow_compact():
    """Now in COMPACT_FORMAT: the default name of a run or of a file written now."""
    return format_time(utcnow(), COMPACT_FORMAT)


def as_utc(when):
    """``when`` as an aware UTC datetime: an aware one converted, a naive one taken as UTC; None for None."""
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def format_time(when, fmt=RFC3339_FORMAT):
    """UTC text of a datetime (naive means UTC) with ``fmt``, by default RFC 3339 (``2026-11-29T13:00:00Z``); None
    for None."""
    if when is None:
        return None
    return as_utc(when).strftime(fmt)


def format_epoch(epoch, fmt=RFC3339_FORMAT):
    """UTC text of epoch seconds with ``fmt`` (e.g. ``MICROTIME_FORMAT``: ``2026-12-03T19:00:00.000000Z``)."""
    return datetime.datetime.fromtimestamp(epoch, UTC).strftime(fmt)


def epoch_text(epoch):
    """RFC 3339 UTC text of epoch seconds for a message; ``unknown`` for None."""
    return "unknown" if epoch is None else format_epoch(epoch)


def parse_epoch(value):
    """Epoch seconds of ISO 8601 text (``Z`` or an offset, e.g. a MicroTime) or of a datetime (naive means UTC);
    None if empty. Unlike parse_time, text that is not ISO 8601 raises ValueError."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime.datetime):
        return as_utc(value).timestamp()
    text = str(value).strip().replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def parse_timestamp(text, fmt=COMPACT_FORMAT):
    """Parse ``text`` with ``fmt`` (naive results are UTC); None if it does not match."""
    try:
        when = datetime.datetime.strptime(text, fmt)
    except (ValueError, TypeError):
        return None
    return as_utc(when)


def parse_iso_z(text, otherwise=None):
    """Aware UTC datetime of ISO 8601 UTC text with a ``Z`` and whole or millisecond seconds, the form S3 listings use
    (``2026-11-22T04:15:00.000Z``); anything else gives ``otherwise(text)``, or None without ``otherwise``. Fast: no
    format matching, it runs once per listed object."""
    if isinstance(text, str) and len(text) in (20, 24) and text.endswith("Z"):
        try:
            return datetime.datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
        except ValueError:
            pass
    return None if otherwise is None else otherwise(text)


def parse_http_date(text):
    """Aware UTC datetime of an HTTP ``Date`` header (``Sun, 22 Nov 2026 04:15:00 GMT``); None if missing or
    unreadable."""
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def parse_any_time(value, fmt=COMPACT_FORMAT):
    """A manifest time: ``fmt`` string, ISO 8601 (``Z`` allowed) or epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    when = parse_timestamp(value, fmt)
    if when is not None:
        return when
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return as_utc(when)


def parse_time(value):
    """Aware UTC datetime from a datetime, RFC 3339 text (``Z`` or offset) or the compact form with or without its
    ``Z``; None if empty or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        return as_utc(value)
    text = str(value).strip()
    return parse_any_time(text) or parse_any_time(text, "%Y%m%dT%H%M%S")


def age_seconds(when, now):
    """Whole seconds from ``when`` (anything parse_time reads) to ``now``, never negative; None when unknown."""
    when = parse_time(when)
    return None if when is None else max(0, int((now - when).total_seconds()))


def human_age(seconds):
    """``42s``, ``3m 12s``, ``5h 02m``, ``2d 03h``; ``-3m 12s`` for a time in the future; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    if seconds < 0:
        return "-" + human_age(-seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


# Units of a duration as operators write them: Prometheus/Go (``1h30m``, ``90s``, ``2d``, ``1w``) and PostgreSQL's
# ``min`` (``archive_timeout = 5min``).
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "min": 60, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+)(min|w|d|h|m|s)")
# Prometheus' units, largest first (its duration format: 1d2h, every unit at most once, in this order).
_PROMETHEUS_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(value):
    """Whole seconds of a duration: a number of seconds (int or digits) or text of ``<n><unit>`` parts with units w, d,
    h, m (or min) and s (``15m``, ``1h30m``, ``5min``); ValueError naming the value otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip().replace(" ", "")
    if text.isdigit():
        return int(text)
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + unit for n, unit in parts) != text:
        raise ValueError(
            f"invalid duration {value!r}: use seconds or <number><unit> parts with units w, d, h, m (or min), s, "
            "e.g. 15m or 1h30m"
        )
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in parts)


def prometheus_duration(seconds):
    """A Prometheus duration of whole seconds, largest units first: 900 -> ``15m``, 87300 -> ``1d15m``, 0 -> ``0s``."""
    seconds = int(seconds)
    parts = []
    for unit, size in _PROMETHEUS_UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
