# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cron schedules as the collection's schedulers read them (plain Python, no Ansible import): the five-field
schedule of a Kubernetes CronJob (``17 * * * *``) and the six-field one, seconds first, of a CloudNativePG
ScheduledBackup (``0 0 2 * * *``), both robfig/cron semantics. One question is answered: the longest time between two
runs, which bounds how old the newest backup of a healthy schedule can be."""

from __future__ import annotations

import datetime

from ansible_collections.hanzo.kms.plugins.module_utils.times import parse_duration

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names) of each field, seconds first; a five-field schedule has no seconds field.
_FIELDS = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _WEEKDAYS),
)
_MACROS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
# Days looked at for the longest gap: eight years hold every weekday of every date, leap days included.
_SPAN_START = datetime.date(2024, 1, 1)
_SPAN_DAYS = 8 * 366


class CronError(ValueError):
    """A schedule this module cannot read, with the reason."""


def _value(text, names, field, schedule):
    if text.lower() in names:
        return names.index(text.lower()) + (1 if names is _MONTHS else 0)
    if not text.isdigit():
        raise CronError(f"cron schedule {schedule!r}: {text!r} is not a number in the {field} field")
    number = int(text)
    # Sunday is 0 and, as in crontab(5), 7
    return 0 if field == "day of week" and number == 7 else number


def _field(text, field, lowest, highest, names, schedule):
    """(set of values, star): star when the field is ``*`` or ``?`` without a step (robfig/cron's star bit, which
    makes day of month and day of week combine with AND rather than OR)."""
    values = set()
    star = False
    for item in text.split(","):
        body, step_text = (item.split("/", 1) + [""])[:2]
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"cron schedule {schedule!r}: bad step {step_text!r} in the {field} field")
            step = int(step_text)
        if body in ("*", "?"):
            start, end = lowest, highest
            star = star or step == 1
        elif "-" in body:
            low, high = body.split("-", 1)
            start = _value(low, names, field, schedule)
            end = _value(high, names, field, schedule)
        else:
            start = _value(body, names, field, schedule)
            end = highest if step_text else start
        if not lowest <= start <= end <= highest:
            raise CronError(f"cron schedule {schedule!r}: {item!r} is outside {lowest}-{highest} in the {field} field")
        values.update(range(start, end + 1, step))
    return values, star


def parse(schedule):
    """The fields of a schedule as {field name: (values, star)}; five fields get second 0. CronError if unreadable."""
    text = " ".join(str(schedule or "").split())
    text = _MACROS.get(text.lower(), text)
    parts = text.split(" ")
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise CronError(
            f"cron schedule {schedule!r}: expected five fields (minute hour day-of-month month day-of-week) or six "
            "with seconds first, or a macro such as @hourly"
        )
    return {
        name: _field(part, name, lowest, highest, names, schedule)
        for part, (name, lowest, highest, names) in zip(parts, _FIELDS)
    }


def longest_interval(schedule):
    """Seconds of the longest gap between two consecutive runs of ``schedule`` (UTC, so no daylight saving), e.g.
    3600 for ``17 * * * *`` and 86400 for ``0 0 2 * * *``; ``@every <duration>`` is that duration. CronError for a
    schedule that cannot be read or runs less than twice in eight years."""
    text = str(schedule or "").strip()
    if text.lower().startswith("@every"):
        try:
            every = parse_duration(text[len("@every") :].strip())
        except ValueError as exc:
            raise CronError(f"cron schedule {schedule!r}: {exc}") from None
        if every <= 0:
            raise CronError(f"cron schedule {schedule!r}: the interval must be positive")
        return every
    fields = parse(text)
    times = sorted(
        hour * 3600 + minute * 60 + second
        for hour in fields["hour"][0]
        for minute in fields["minute"][0]
        for second in fields["second"][0]
    )
    days = [offset for offset in range(_SPAN_DAYS) if _runs_on(fields, _SPAN_START + datetime.timedelta(offset))]
    if len(days) * len(times) < 2:
        raise CronError(f"cron schedule {schedule!r} runs less than twice in eight years")
    within_day = max((b - a for a, b in zip(times, times[1:])), default=0)
    across_days = max(((b - a) * 86400 - times[-1] + times[0] for a, b in zip(days, days[1:])), default=0)
    return max(within_day, across_days)


def _runs_on(fields, day):
    if day.month not in fields["month"][0]:
        return False
    dom_values, dom_star = fields["day of month"]
    dow_values, dow_star = fields["day of week"]
    dom = day.day in dom_values
    dow = day.isoweekday() % 7 in dow_values
    return dom and dow if dom_star or dow_star else dom or dow
