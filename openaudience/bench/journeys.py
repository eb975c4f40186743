"""`oa bench journeys`: a 3-step journey over every person of the `oa bench build` warehouse.

The journey: a send (to a file export), a wait of a day, a behaviour branch (did they buy in
that day?) whose `did_not` branch is a second send. The first tick enters everyone and sends;
the tick a day later advances everyone through the wait, the branch and the second send. Each
tick is timed, and the state rows per person and step are counted (target: at most 2)."""

from __future__ import annotations

import datetime as dt
import json
import resource
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console

from openaudience.bench.pipeline import _bench_env
from openaudience.core.settings import load_settings

AUDIENCE = "bench_everyone"
JOURNEY = "bench_three_steps"


def bench_journeys(console: Console, send: bool = True) -> dict:
    from openaudience.core.warehouse import Warehouse
    from openaudience.delivery.source import load_destinations
    from openaudience.journeys import engine
    from openaudience.journeys.clock import to_utc
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.engine import MEMBERS, VERSIONS
    from openaudience.segments.source import load_project

    settings = load_settings(_bench_env("journeys"))
    wh = Warehouse(settings)
    today = wh.query("select max(behavior_date) from marts.fct_behaviors")[0][0]
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        wh.execute(conn, f"delete from {MEMBERS} where audience = %s", [AUDIENCE])
        wh.execute(conn, f"delete from {VERSIONS} where audience = %s", [AUDIENCE])
        wh.execute(conn, f"insert into {MEMBERS} (audience, version, one_id, id_type, id_value) "
                         "select %s, 1, one_id, 'one_id', one_id from marts.user_tags", [AUDIENCE])
        people = wh.execute(conn, f"select count(*) from {MEMBERS} where audience = %s", [AUDIENCE])[0][0]
        wh.execute(conn, f"insert into {VERSIONS} (audience, version, definition_hash, built_at, as_of, "
                         "id_type, size, added, removed, dropped, matched, trigger, kept, compiled_sql) "
                         "values (%s, 1, 'bench', %s, %s, 'one_id', %s, %s, 0, 0, %s, 'bench', true, '')",
                   [AUDIENCE, dt.datetime.now(), today, people, people, people])
    last_step = ({"send": {"id": "second_send", "destination": "bench_export_b"}} if send else "end")
    body = {"name": JOURNEY, "trigger": {"audience": AUDIENCE},
            "steps": [{"send": {"id": "first_send", "destination": "bench_export_a"}} if send else
                      {"generate_audience": {"id": "first_send", "name": "bench_generated"}},
                      {"wait": {"days": 1}},
                      {"behavior_branch": {"id": "bought", "event": "purchase", "window_days": 1,
                                           "look": "back", "did": ["end"], "did_not": [last_step]}}]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        a, d, j = root / "audiences", root / "destinations", root / "journeys"
        for folder in (a, d, j):
            folder.mkdir()
        (a / f"{AUDIENCE}.yml").write_text(f"name: {AUDIENCE}\nid_type: one_id\n"
                                           "where:\n  tag: {name: city, is_not_null: true}\n")
        for name in ("bench_export_a", "bench_export_b"):
            (d / f"{name}.yml").write_text(
                f"name: {name}\naudience: {AUDIENCE}\nchannel: file\nid_type: one_id\nmode: full\n"
                "schedule: manual\nbatch_size: 100000\nfile: {folder: bench_exports, format: csv}\n")
        (j / f"{JOURNEY}.yml").write_text(yaml.safe_dump(body, sort_keys=False))
        project = load_project(a)
        dests = load_destinations(d, project)
        ctx = engine.Context(wh, load_journeys(j, project, dests), dests, project)
        if engine.journey_row(wh, JOURNEY) is not None:
            engine.forget(ctx, JOURNEY)
        t0 = to_utc(dt.datetime.combine(today, dt.time(9, 0)), settings.timezone)
        engine.start(ctx, JOURNEY, t0)
        started = time.perf_counter()
        with console.status(f"tick 1: {people:,} people enter and are sent"):
            [first] = engine.tick(ctx, now=t0)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        with console.status(f"tick 2: {people:,} people through the wait, the branch and the second send"):
            [second] = engine.tick(ctx, now=t0 + dt.timedelta(days=1, minutes=1))
        second_s = time.perf_counter() - started
    rows = wh.query("select node, count(*), count(distinct one_id) from journeys.journey_positions "
                    "where journey = %s group by node order by node", [JOURNEY])
    per_person = max(n / max(distinct, 1) for _, n, distinct in rows)
    result = {
        "people": int(people), "sends": send, "tick_1_enter_and_send_s": round(first_s, 1),
        "tick_2_advance_three_steps_s": round(second_s, 1), "moved_tick_2": second.moved,
        "status": second.status, "state_rows": sum(n for _, n, _ in rows),
        "state_rows_per_person_per_step_max": round(per_person, 2),
        "sent": {a["node"]: a.get("sent", a.get("people")) for a in first.actions + second.actions},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    engine.forget(ctx, JOURNEY)
    console.print_json(json.dumps(result, default=str))
    return result
