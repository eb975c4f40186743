"""``oa bench deliveries``: members per second to Kafka and to a batched webhook, and the
delivery process's peak memory as the audience grows.

Each size gets a fresh DuckDB warehouse under OA_HOME/bench/ holding one imported audience
version of N members; each destination is delivered by a child process (so its peak resident
memory is its own) to a local peer: a tansu broker, and the reference webhook receiver in a
process of its own. The figures are the send phase (the run's own clock) and the whole command.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import requests
from rich.console import Console
from rich.table import Table

from openaudience.bench.pipeline import run_measured
from openaudience.core.settings import PROJECT_ROOT, load_settings

AUDIENCE = "bench_people"
SECRET = "bench-secret"


def _kafka_file(d: Path, bootstrap: str, topic: str) -> None:
    (d / "bench_kafka.yml").write_text(
        f"name: bench_kafka\naudience: {AUDIENCE}\nchannel: kafka\nid_form: sha256\nbatch_size: 20000\n"
        f"concurrency: 1\nkafka:\n  bootstrap_servers: {bootstrap}\n  topic: {topic}\n")


def _folders(root: Path, bootstrap: str, webhook_url: str) -> tuple[Path, Path]:
    a, d = root / "audiences", root / "destinations"
    a.mkdir(parents=True, exist_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    (a / f"{AUDIENCE}.yml").write_text(f"name: {AUDIENCE}\nid_type: one_id\n"
                                       "where:\n  tag: {name: city, is_not_null: true}\n")
    _kafka_file(d, bootstrap, "bench")
    (d / "bench_webhook.yml").write_text(
        f"name: bench_webhook\naudience: {AUDIENCE}\nchannel: webhook\nbatch_size: 1000\nconcurrency: 4\n"
        f"webhook:\n  url: {webhook_url}\n  secret_env: OA_BENCH_WEBHOOK_SECRET\n  timeout_s: 30\n")
    return a, d


def _deliver_child(a: Path, d: Path, name: str, env: dict[str, str]) -> dict:
    code = ("import json, sys, time\n"
            "from pathlib import Path\n"
            "from openaudience.delivery.engine import deliver\n"
            "from openaudience.delivery.source import load_destinations\n"
            "from openaudience.segments.source import load_project\n"
            "t = time.perf_counter()\n"
            "dests = load_destinations(Path(sys.argv[2]), load_project(Path(sys.argv[1])))\n"
            "[s] = deliver(dests, sys.argv[3])\n"
            "print(json.dumps({'status': s.status, 'sent': s.counts['sent'], 'send_s': s.seconds,"
            " 'total_s': time.perf_counter() - t}))\n")
    returncode, output, peak_kb = run_measured([sys.executable, "-c", code, str(a), str(d), name], env)
    if returncode != 0:
        raise RuntimeError(f"delivering {name} failed:\n{output[-3000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_mb"] = peak_kb / 1024
    return result


def bench_deliveries(sizes: list[int], console: Console) -> list[dict]:
    from openaudience.bench.sandbox import free_port, start_broker
    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.engine import write_version

    settings = load_settings()
    root = Path(tempfile.mkdtemp(prefix="oa-bench-deliveries-"))
    broker = start_broker()
    port = free_port()
    env = dict(os.environ, OA_BENCH_WEBHOOK_SECRET=SECRET, PYTHONPATH=str(PROJECT_ROOT))
    receiver = subprocess.Popen([sys.executable, "-m", "connectors.webhook_receiver", "--port", str(port),
                                 "--secret-env", "OA_BENCH_WEBHOOK_SECRET"], env=env, cwd=PROJECT_ROOT,
                                stdout=subprocess.PIPE, text=True)
    receiver.stdout.readline()  # its URL: it is listening
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        a, d = _folders(root, broker.bootstrap, url + "/hook")
        for n in sizes:
            path = settings.home / "bench" / f"deliveries_{n}.duckdb"
            path.parent.mkdir(parents=True, exist_ok=True)
            for p in (path, path.with_suffix(".duckdb.wal")):
                p.unlink(missing_ok=True)
            child_env = dict(env, OA_TARGET="duckdb", OA_DUCKDB_PATH=str(path))
            wh = Warehouse(load_settings(child_env))
            ids = pa.array([f"{n}-{i:09d}" for i in range(n)])  # new keys for every size
            write_version(wh, AUDIENCE, "one_id", pa.table({"one_id": ids, "id_value": ids}),
                          dt.date.today(), "bench")
            topic = f"bench-{n}"
            _kafka_file(d, broker.bootstrap, topic)
            broker.create_topic(topic, partitions=3)
            before = requests.get(url + "/stats", timeout=10).json()["accepted"]
            for name in ("bench_kafka", "bench_webhook"):
                console.print(f"delivering {n:,} members to {name} ...")
                r = _deliver_child(a, d, name, child_env)
                r.update(destination=name, members=n, per_s=r["sent"] / r["send_s"] if r["send_s"] else 0)
                rows.append(r)
            after = requests.get(url + "/stats", timeout=10).json()["accepted"]
            if after - before != n:
                raise RuntimeError(f"the receiver accepted {after - before:,} of {n:,} messages")
    finally:
        receiver.kill()
        broker.stop()
    table = Table(title="Deliveries (DuckDB; send phase = the run's clock, after planning)")
    for col in ("destination", "members", "status", "send s", "members/s", "whole command s",
                "peak RSS MB"):
        table.add_column(col, justify="left" if col in ("destination", "status") else "right")
    for r in rows:
        table.add_row(r["destination"], f"{r['members']:,}", r["status"], f"{r['send_s']:.1f}",
                      f"{r['per_s']:,.0f}", f"{r['total_s']:.1f}", f"{r['peak_mb']:,.0f}")
    console.print(table)
    return rows
