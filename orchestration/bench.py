"""``oa bench build``: how long a full build of N users takes, and how much memory it needs.

Generated data is cached per configuration under .openaudience/bench/. Every run starts from
an empty warehouse (a fresh DuckDB file, or the configured PostgreSQL database's schemas
dropped), loads the data through the validating loader, then runs ``dbt build`` as a child
process so its peak resident memory can be read from the operating system.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from orchestration.settings import PROJECT_ROOT, Settings, load_settings

BENCH_END_DATE = dt.date(2026, 6, 30)  # fixed, so every run measures the same data


def _fresh_warehouse(settings: Settings) -> Settings:
    if settings.is_postgres:
        import psycopg2

        conn = psycopg2.connect(settings.pg_dsn())
        conn.autocommit = True
        with conn.cursor() as cur:
            for schema in ("raw", "staging", "intermediate", "marts", "reference"):
                cur.execute(f'drop schema if exists "{schema}" cascade')
        conn.close()
        return settings
    path = settings.home / "bench" / "warehouse.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    env = dict(os.environ, OA_DUCKDB_PATH=str(path))
    return load_settings(env)


def _peak_rss_kb(pid: int) -> int:
    """VmHWM of a process: its own peak resident memory (not inherited from its parent)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _run_measured(cmd: list[str], env: dict[str, str]) -> tuple[int, str, int]:
    """Run a command, sampling its peak RSS until it exits; returns (code, output, peak kB)."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _peak_rss_kb(proc.pid))
            time.sleep(0.2)
        log.seek(0)
        return proc.returncode, log.read(), peak


def bench_build(users: int, days: int, seed: int, console: Console) -> dict[str, float]:
    from orchestration.demo_data import DemoConfig, generate
    from orchestration.loading import load_file
    from orchestration.raw_tables import LOAD_ORDER
    from orchestration.warehouse import Warehouse

    settings = load_settings()
    data = settings.home / "bench" / f"u{users}_d{days}_s{seed}"
    config = DemoConfig(users=users, days=days, seed=seed, end_date=BENCH_END_DATE)
    figures: dict[str, float] = {}
    if not (data / "manifest.json").exists():
        started = time.perf_counter()
        with console.status(f"generating {users:,} users"):
            generate(data, config)
        figures["generate_s"] = time.perf_counter() - started
    counts = json.loads((data / "manifest.json").read_text())["row_counts"]

    settings = _fresh_warehouse(settings)
    warehouse = Warehouse(settings)
    started = time.perf_counter()
    for name in LOAD_ORDER:
        with console.status(f"loading {name} ({counts.get(name, 0):,} rows)"):
            load_file(warehouse, name, data / f"{name}.parquet", mode="replace", chunk_rows=500_000)
    figures["load_s"] = time.perf_counter() - started

    env = dict(os.environ, **settings.dbt_env())
    dbt = str(Path(sys.executable).with_name("dbt"))
    cmd = [dbt, "build", "--quiet", "--project-dir", str(PROJECT_ROOT), "--profiles-dir",
           str(PROJECT_ROOT), "--vars", json.dumps({"as_of": str(BENCH_END_DATE)})]
    started = time.perf_counter()
    with console.status("dbt build (seeds, models, tests)"):
        returncode, output, peak_kb = _run_measured(cmd, env)
    figures["build_s"] = time.perf_counter() - started
    figures["build_peak_rss_mb"] = peak_kb / 1024
    if returncode != 0:
        console.print(output[-6000:])
        raise RuntimeError("dbt build failed during the benchmark")
    result = {
        "date": dt.date.today().isoformat(),
        "warehouse": settings.target,
        "users": users,
        "days": days,
        "behavior_events": counts.get("behavior_events", 0),
        "orders": counts.get("orders", 0),
        **{k: round(v, 1) for k, v in figures.items()},
    }
    console.print_json(json.dumps(result))
    console.print(
        f"| {result['date']} | {settings.target} | {users:,} | {result['behavior_events']:,} | "
        f"{result['load_s']} s | {result['build_s']} s | {result['build_peak_rss_mb']:.0f} MB |")
    return result
