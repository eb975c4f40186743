"""`oa bench events`: sustained ingest through the collector, with answer latencies.

A collector (`oa events serve`, its own process, a fresh OA_HOME) and a load generator (worker
processes with threads, each on a keep-alive connection) that offers `rate` events a second in
signed batches of `batch` events, paced (open loop: a slow answer does not slow the offer), for
`seconds`. Reported: events stored per second, the answer latency p50/p95/p99 (from the request
written to the answer read, as the client sees it), refusals, and a check that the log holds
exactly the events answered `success`.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from connectors.events import EVENTS_PATH, signed_headers

KEY = "bench-key"
APP_KEY = "shop-app"


def _worker(port: int, rate: float, batch: int, seconds: float, threads: int, start_at: float,
            worker: int, out) -> None:
    latencies: list[float] = []
    stored = [0]
    failed = [0]
    lock = threading.Lock()

    def run(thread: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        interval = batch / (rate / threads)
        n = 0
        next_at = start_at + (thread / threads) * interval
        mine, ok, bad = [], 0, 0
        while True:
            now = time.perf_counter()
            if now >= start_at + seconds:
                break
            if now < next_at:
                time.sleep(next_at - now)
            at_ms = int(time.time() * 1000)
            events = [{"customerId": f"w{worker}t{thread}p{(n * batch + j) % 5000}",
                       "eventCode": "app_purchase",
                       "eventTime": at_ms, "eventId": f"w{worker}-t{thread}-{n}-{j}",
                       "extendAttributes": {"item_id": f"P{j}", "amount": "19.9"}} for j in range(batch)]
            body = json.dumps({"eventMessageModelListStr": json.dumps(events)}).encode()
            headers = signed_headers(KEY, APP_KEY, body)
            t0 = time.perf_counter()
            try:
                conn.request("POST", EVENTS_PATH, body=body, headers=headers)
                reply = conn.getresponse()
                answer = json.loads(reply.read())
                mine.append(time.perf_counter() - t0)
                if reply.status == 200 and answer.get("success"):
                    ok += answer["accepted"]
                else:
                    bad += batch
            except (OSError, http.client.HTTPException, ValueError):
                bad += batch
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            n += 1
            next_at += interval
        with lock:
            latencies.extend(mine)
            stored[0] += ok
            failed[0] += bad

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((latencies, stored[0], failed[0], time.perf_counter()))  # a system-wide monotonic clock


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_events(console: Console, rate: int = 5000, batch: int = 10, seconds: float = 30.0,
              workers: int = 2, threads: int = 8) -> dict:
    from openaudience.events.collector import spawn, stop
    from openaudience.events.log import log_dir, segments

    home = Path(tempfile.mkdtemp(prefix="oa-bench-events-"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OA_")}, "OA_HOME": str(home),
           "OA_EVENTS_KEY_SHOP_APP": KEY}
    server, port = spawn(env)
    try:
        console.print(f"offering {rate:,} events/s in batches of {batch} for {seconds:.0f} s "
                      f"({workers} processes x {threads} connections)")
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start_at = time.perf_counter() + 2.0  # every worker starts together
        procs = [ctx.Process(target=_worker, args=(port, rate / workers, batch, seconds, threads,
                                                   start_at, w, out)) for w in range(workers)]
        for p in procs:
            p.start()
        results = [out.get(timeout=seconds + 120) for _ in procs]
        for p in procs:
            p.join()
        elapsed = max(r[3] for r in results) - start_at  # until the last answer came back
    finally:
        stop(server)
    latencies = [x for r in results for x in r[0]]
    stored = sum(r[1] for r in results)
    failed = sum(r[2] for r in results)
    logged = sum(1 for p in segments(log_dir(home)) for _ in p.open("rb"))
    figures = {"offered_per_s": rate, "batch": batch, "seconds": elapsed, "requests": len(latencies),
               "events_per_s": stored / elapsed, "stored": stored, "failed": failed, "logged": logged,
               "p50_ms": _quantile(latencies, 0.50) * 1000, "p95_ms": _quantile(latencies, 0.95) * 1000,
               "p99_ms": _quantile(latencies, 0.99) * 1000}
    table = Table(title="event collector: sustained ingest")
    for col in ("offered/s", "batch", "stored/s", "p50 ms", "p95 ms", "p99 ms", "failed", "log = answered"):
        table.add_column(col, justify="right")
    table.add_row(f"{rate:,}", str(batch), f"{figures['events_per_s']:,.0f}", f"{figures['p50_ms']:.1f}",
                  f"{figures['p95_ms']:.1f}", f"{figures['p99_ms']:.1f}", f"{failed:,}",
                  "yes" if logged == stored else f"no ({logged:,} vs {stored:,})")
    console.print(table)
    return figures
