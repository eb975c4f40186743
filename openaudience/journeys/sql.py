"""SQL the journey engine and the event entries share: literals of values the engine controls,
the stable random draw (holdouts, random branches) and the simulation prefix."""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

from openaudience.core.schema import operational as op

BUCKETS = 10_000
JOURNEYS = op.JOURNEYS.relation
CYCLES = op.JOURNEY_CYCLES.relation
POS = op.JOURNEY_POSITIONS.relation
ENTRIES = op.JOURNEY_ENTRIES.relation


def lit(value) -> str:
    """A SQL literal of a value the engine controls (validated names, times, numbers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, dt.datetime):
        return f"cast('{value.replace(microsecond=0).isoformat(sep=' ')}' as timestamp)"
    return exp.Literal.string(str(value)).sql()


SIMULATION = "simulation__"
REAL_ONLY = "substr(journey, 1, 12) <> 'simulation__'"  # rows of journeys, not of a simulation
EVENT_TRIGGERED = "substr(audience, 1, 6) = 'event:'"  # journeys.journeys rows of event journeys


def hash_name(journey: str) -> str:
    """The name random draws hash: a simulation draws as the journey it simulates."""
    return journey.removeprefix(SIMULATION)


def bucket_sql(engine: str, key: str) -> str:
    """A number 0..BUCKETS-1 from md5(key), the same on both engines (28 bits of the digest)."""
    digits = f"substr(md5({key}), 1, 7)"
    number = (f"cast(('0x' || {digits}) as bigint)" if engine == "duckdb"
              else f"cast(('x' || {digits})::bit(28) as integer)")
    return f"mod({number}, {BUCKETS})"


def bucket(key: str) -> int:
    """The bucket bucket_sql computes, in Python."""
    import hashlib

    return int(hashlib.md5(key.encode()).hexdigest()[:7], 16) % BUCKETS
