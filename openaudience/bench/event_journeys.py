"""`oa bench event-journeys`: event -> action latency of an event-triggered journey.

On a copy of the project's DuckDB warehouse (built: people with mobiles), in a fresh OA_HOME:
a collector (`oa events serve`) and a follower (`oa events follow`), each a process of its
own as they run in production, an event journey (app_purchase -> the thank-you webhook) and a
local webhook receiver. Paced clients post `rate` app purchases a second, in signed batches,
each event of a different person with the time it was posted in its order_id; the journey's
send carries it (an event variable), and the receiver notes when each message arrived.
Reported: event -> message arrived p50/p95/p99/max, events posted and messages received.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from connectors.events import EVENTS_PATH, signed_headers
from connectors.webhook_receiver import WebhookReceiver
from openaudience.bench.events import _quantile
from openaudience.core.errors import UserError

KEY = "bench-key"
APP_KEY = "shop-app"
JOURNEY = """\
name: bench_event_thank_you
trigger:
  event: app_purchase
  channel: shop-app
  limit: {times: 10, within_days: 1}
steps:
  - send: {destination: app_thank_you_webhook}
"""


class _TimedReceiver(WebhookReceiver):
    """Notes when each message arrived, with the post time its order_id carried."""

    def __init__(self, secret: str) -> None:
        super().__init__(secret=secret)
        self.arrivals: list[tuple[float, float]] = []   # (posted, arrived), epoch seconds

    def handle(self, method, path, headers, body):
        arrived = time.time()
        code, answer = super().handle(method, path, headers, body)
        if method == "POST" and code == 200:
            try:
                payload = json.loads(body)
            except ValueError:
                return code, answer
            for message in payload if isinstance(payload, list) else [payload]:
                posted = ((message.get("params") or {}).get("vars") or {}).get("item", "")
                if isinstance(posted, str) and posted.startswith("t"):
                    with self.state.lock:
                        self.arrivals.append((int(posted[1:]) / 1000, arrived))
        return code, answer


def bench_event_journeys(console: Console, rate: int = 500, seconds: float = 30.0, batch: int = 10) -> dict:
    from openaudience.core.settings import load_settings
    from openaudience.core.warehouse import Warehouse
    from openaudience.delivery.source import load_destinations
    from openaudience.events.collector import spawn, stop
    from openaudience.journeys import engine
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import load_project

    settings = load_settings()
    if settings.is_postgres:
        raise UserError("the benchmark runs on a copy of the DuckDB warehouse; unset OA_TARGET (and "
                        "run `make demo`) to use the embedded one")
    if not settings.duckdb_path.exists():
        raise UserError(f"no warehouse at {settings.duckdb_path}; run `make demo` first")
    home = Path(tempfile.mkdtemp(prefix="oa-bench-event-journeys-"))
    try:
        return _run(console, settings, home, rate, seconds, batch, Warehouse, load_destinations, spawn, stop,
                    engine, load_journeys, load_project)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run(console, settings, home, rate, seconds, batch, Warehouse, load_destinations, spawn, stop, engine,
         load_journeys, load_project) -> dict:
    from openaudience.core.settings import load_settings

    shutil.copy(settings.duckdb_path, home / settings.duckdb_path.name)
    secret = secrets.token_hex(16)
    receiver = _TimedReceiver(secret).start()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OA_")}, "OA_HOME": str(home),
           "OA_EVENTS_KEY_SHOP_APP": KEY, "OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": secret}
    bench_settings = load_settings(env)
    wh = Warehouse(bench_settings)
    people = [r[0] for r in wh.query(
        "select min(i.id_value) from marts.dim_identities i join marts.user_tags u on u.one_id = i.one_id "
        "where i.id_type = 'member_id' and u.mobile is not null group by i.one_id order by 1")]
    wanted = int(rate * seconds)
    if len(people) < min(wanted, 1000):
        raise UserError(f"the warehouse has {len(people):,} members with a mobile; the benchmark needs more "
                        "(run `make demo`)")
    with wh.session() as conn, wh.transaction(conn):
        wh.ensure_schema(conn)
        # a copy: the demo's sends must not count against the frequency caps of the benchmark's
        wh.execute(conn, "delete from delivery.delivery_log")
        # and only the benchmark's journey reacts to its events
        wh.execute(conn, "update journeys.journeys set status = 'stopped' where status in ('running', "
                         "'pending', 'paused') and substr(audience, 1, 6) = 'event:'")
    folder = home / "journeys"
    folder.mkdir()
    (folder / "bench_event_thank_you.yml").write_text(JOURNEY)
    project = load_project()
    dests = load_destinations(audiences=project)
    ctx = engine.Context(wh, load_journeys(folder, project, dests), dests, project, environ=env)
    engine.start(ctx, "bench_event_thank_you")
    from openaudience.core import locks

    locks.release_kept()  # the follower writes the copy from now on
    collector, port = spawn(env)
    oa = str(Path(sys.executable).with_name("oa"))
    said = (home / "follower.log").open("w")
    follower = subprocess.Popen([oa, "events", "follow", "--interval", "0.2"], env=env,
                                stdout=said, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    posted = [0]
    failed = [0]
    try:
        ready = time.monotonic() + 120  # the follower has loaded the project and makes its passes
        while "following the event log" not in (home / "follower.log").read_text(errors="replace"):
            if follower.poll() is not None or time.monotonic() > ready:
                raise UserError("the follower did not start: "
                                + (home / "follower.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        time.sleep(1.0)
        console.print(f"posting {rate:,} app purchases/s in batches of {batch} for {seconds:.0f} s; "
                      "collector and follower in processes of their own")
        start_at = time.perf_counter() + 0.5
        threads = 4
        lock = threading.Lock()

        def post(thread: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            interval = batch / (rate / threads)
            next_at = start_at + thread * interval / threads
            n = 0
            while True:
                now = time.perf_counter()
                if now >= start_at + seconds:
                    break
                if now < next_at:
                    time.sleep(next_at - now)
                at_ms = int(time.time() * 1000)
                events = []
                for j in range(batch):
                    i = (n * batch + j) * threads + thread
                    events.append({"customerId": people[i % len(people)], "eventCode": "app_purchase",
                                   "eventTime": at_ms, "eventId": f"bench-{thread}-{n}-{j}",
                                   "extendAttributes": {"item_id": f"t{at_ms}", "amount": "19.9"}})
                body = json.dumps({"eventMessageModelListStr": json.dumps(events)}).encode()
                try:
                    conn.request("POST", EVENTS_PATH, body=body, headers=signed_headers(KEY, APP_KEY, body))
                    reply = conn.getresponse()
                    answer = json.loads(reply.read())
                    ok = reply.status == 200 and answer.get("success")
                except (OSError, http.client.HTTPException, ValueError):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                with lock:
                    posted[0] += batch if ok else 0
                    failed[0] += 0 if ok else batch
                n += 1
                next_at += interval

        pool = [threading.Thread(target=post, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(receiver.arrivals) < posted[0]:
            if follower.poll() is not None:
                raise UserError("the follower stopped: "
                                + (home / "follower.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
    finally:
        stop(collector)
        follower.terminate()
        try:
            follower.wait(30)
        except subprocess.TimeoutExpired:
            follower.kill()
        receiver.stop()
        said.close()
    if not receiver.arrivals:
        raise UserError("no message arrived; the follower said: "
                        + (home / "follower.log").read_text(errors="replace")[-3000:])
    if os.environ.get("OA_BENCH_SHOW_FOLLOWER"):
        console.print((home / "follower.log").read_text(errors="replace")[-6000:], markup=False)
    latencies = [arrived - sent for sent, arrived in receiver.arrivals]
    figures = {"rate": rate, "seconds": seconds, "posted": posted[0], "failed_posts": failed[0],
               "received": len(latencies), "p50_s": _quantile(latencies, 0.50),
               "p95_s": _quantile(latencies, 0.95), "p99_s": _quantile(latencies, 0.99),
               "max_s": max(latencies) if latencies else float("nan")}
    table = Table(title="event-triggered journey: event posted -> webhook message arrived")
    for col in ("events/s", "posted", "messages", "p50 s", "p95 s", "p99 s", "max s"):
        table.add_column(col, justify="right")
    table.add_row(f"{rate:,}", f"{posted[0]:,}", f"{len(latencies):,}", f"{figures['p50_s']:.2f}",
                  f"{figures['p95_s']:.2f}", f"{figures['p99_s']:.2f}", f"{figures['max_s']:.2f}")
    console.print(table)
    return figures
