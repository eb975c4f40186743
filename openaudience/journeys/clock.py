"""Times of journeys: the state keeps naive UTC; what people write (HH:MM, until, end_at,
schedules) is in the project's time zone (OA_TIMEZONE)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from openaudience.journeys.spec import Schedule

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_NAMES = ({}, {}, {}, {m: i + 1 for i, m in enumerate(_MONTHS)},
          {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})
SEARCH_DAYS = 366 * 5


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def to_utc(local: dt.datetime, tz: str) -> dt.datetime:
    """A naive local time of the project's zone as naive UTC."""
    return local.replace(tzinfo=ZoneInfo(tz)).astimezone(dt.UTC).replace(tzinfo=None)


def to_local(utc: dt.datetime, tz: str) -> dt.datetime:
    return utc.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def next_time_of_day(after_utc: dt.datetime, hhmm: str, tz: str) -> dt.datetime:
    """The first HH:MM (local) at or after `after_utc`, as UTC."""
    h, m = (int(x) for x in hhmm.split(":"))
    local = to_local(after_utc, tz)
    candidate = local.replace(hour=h, minute=m, second=0, microsecond=0)
    if candidate < local:
        candidate += dt.timedelta(days=1)
    return to_utc(candidate, tz)


def _field(text: str, index: int) -> set[int]:
    lo, hi = _RANGES[index]
    out: set[int] = set()
    for part in text.lower().split(","):
        base, _, step = part.partition("/")
        if base == "*":
            first, last = lo, hi
        else:
            ends = [_NAMES[index].get(e, int(e) if e.isdigit() else lo) for e in base.split("-")]
            first, last = ends[0], ends[-1] if len(ends) > 1 else (hi if step else ends[0])
        out.update(range(first, last + 1, int(step) if step else 1))
    if index == 4 and 7 in out:  # Sunday is 0 and 7
        out.add(0)
    return out


def cron_next(expression: str, after_local: dt.datetime) -> dt.datetime:
    """The first time strictly after `after_local` that the cron expression names (local)."""
    minute, hour, dom, month, dow = expression.split()
    fields = (minute, hour, dom, month, dow)
    minutes, hours, days, months, weekdays = (_field(f, i) for i, f in enumerate(fields))
    dom_any, dow_any = dom == "*", dow == "*"
    start = after_local.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    day = start.date()
    for _ in range(SEARCH_DAYS):
        weekday = (day.isoweekday()) % 7  # cron: Sunday 0
        if day.month in months:
            dom_ok, dow_ok = day.day in days, weekday in weekdays
            matches = (dom_ok and dow_ok) if (dom_any or dow_any) else (dom_ok or dow_ok)
            if matches:
                for h in sorted(hours):
                    for m in sorted(minutes):
                        at = dt.datetime.combine(day, dt.time(h, m))
                        if at >= start:
                            return at
        day += dt.timedelta(days=1)
    raise ValueError(f"cron {expression!r} names no time in the next {SEARCH_DAYS // 366} years")


def next_cycle(schedule: Schedule, after_utc: dt.datetime, tz: str,
               anchor_utc: dt.datetime | None = None) -> dt.datetime:
    """When the next cycle of a periodic journey starts: the first scheduled time strictly after
    `after_utc`. `every_days` counts from `anchor_utc` (when the journey started)."""
    local_after = to_local(after_utc, tz)
    if schedule.every_days:
        h, m = (int(x) for x in (schedule.at or "09:00").split(":"))
        anchor = to_local(anchor_utc or after_utc, tz).replace(hour=h, minute=m, second=0, microsecond=0)
        step = dt.timedelta(days=schedule.every_days)
        candidate = anchor
        if candidate <= local_after:
            n = (local_after - candidate) // step + 1
            candidate = anchor + n * step
        return to_utc(candidate, tz)
    return to_utc(cron_next(schedule.cron_expression(), local_after), tz)
