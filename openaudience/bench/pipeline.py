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

from openaudience.core.settings import PROJECT_ROOT, Settings, load_settings

BENCH_END_DATE = dt.date(2026, 6, 30)  # fixed, so every run measures the same data


def _spark_home(settings: Settings) -> Path:
    return settings.home / "bench" / "spark"


def _fresh_warehouse(settings: Settings) -> Settings:
    if settings.target == "spark":  # a fresh local warehouse, metastore and state store
        import shutil

        home = _spark_home(settings)
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        return load_settings(dict(os.environ, OA_HOME=str(home)))
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


def _tree_rss_kb(pid: int) -> int:
    """The resident memory now of a process and all its descendants (Spark's JVM is a child)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class _TreePeak:
    """Samples this process tree's resident memory in a thread; `peak_kb` is the highest seen."""

    def __enter__(self):
        import threading

        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _tree_rss_kb(os.getpid()))
            self._stop.wait(0.5)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[int, str, int]:
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
    from openaudience.core.schema.raw import LOAD_ORDER
    from openaudience.core.warehouse import Warehouse
    from openaudience.demo.generator import DemoConfig, generate
    from openaudience.raw.loading import load_file

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

    if settings.target == "spark":  # dbt-spark runs in this process, on the loader's session
        from openaudience.core.dbt import run_dbt_build

        os.environ.update(OA_HOME=str(settings.home))
        started = time.perf_counter()
        with _TreePeak() as peak:
            outcome = run_dbt_build(as_of=str(BENCH_END_DATE), console=console)
        figures["build_s"] = time.perf_counter() - started
        figures["build_peak_rss_mb"] = peak.peak_kb / 1024  # Python and the JVM, loader included
        if not outcome.success:
            raise RuntimeError(f"dbt build failed during the benchmark: {outcome.summary}")
        if settings.spark_event_log:
            from openaudience.core import spark

            spark.stop()  # the event log is complete once the application ends
            for model, written, rows in shuffle_by_model(settings.spark_event_log)[:12]:
                console.print(f"| {model} | {written / 1e6:,.1f} MB | {rows:,} |")
        return _report_build(settings, users, days, counts, figures, console)
    env = dict(os.environ, **settings.dbt_env())
    dbt = str(Path(sys.executable).with_name("dbt"))
    cmd = [dbt, "build", "--quiet", "--project-dir", str(PROJECT_ROOT), "--profiles-dir",
           str(PROJECT_ROOT), "--vars", json.dumps({"as_of": str(BENCH_END_DATE)})]
    started = time.perf_counter()
    with console.status("dbt build (seeds, models, tests)"):
        returncode, output, peak_kb = run_measured(cmd, env)
    figures["build_s"] = time.perf_counter() - started
    figures["build_peak_rss_mb"] = peak_kb / 1024
    if returncode != 0:
        console.print(output[-6000:])
        raise RuntimeError("dbt build failed during the benchmark")
    return _report_build(settings, users, days, counts, figures, console)


def shuffle_by_model(event_log: Path) -> list[tuple[str, int, int]]:
    """From Spark's event log: (dbt model, shuffle bytes written, input rows read) per model,
    largest shuffle first. A statement is the dbt node its comment names (dbt-spark prefixes every
    statement with {"node_id": ...})."""
    import re

    node_of: dict[int, str] = {}
    execution_of_stage: dict[int, int] = {}
    shuffle: dict[str, int] = {}
    read: dict[str, int] = {}
    for path in sorted(event_log.iterdir()):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # the last line of a log still being written
                continue
            kind = event.get("Event", "")
            if kind.endswith("SQLExecutionStart"):
                text = event.get("description", "") + event.get("details", "")
                found = re.search(r'"node_id": "[a-z_]+\.openaudience\.([A-Za-z0-9_]+)', text)
                plan = event.get("physicalPlanDescription", "")
                # else the table a write (CTAS, insert) makes: the model it builds
                wrote = (re.search(r"`spark_catalog`\.`(\w+)`\.`(\w+)`|/(\w+)\.db/(\w+)", plan)
                         if "AsSelect" in plan or "InsertInto" in plan else None)
                table = ".".join(g for g in wrote.groups() if g) if wrote else ""
                node_of[event["executionId"]] = (
                    found.group(1) if found else "raw (the loader)" if table.startswith("raw.")
                    else table.split(".", 1)[-1] if table else "(reads and tests)")
            elif kind == "SparkListenerJobStart":
                execution = (event.get("Properties") or {}).get("spark.sql.execution.id")
                if execution is not None:
                    for stage in event.get("Stage IDs", []):
                        execution_of_stage[stage] = int(execution)
            elif kind == "SparkListenerTaskEnd":
                metrics = event.get("Task Metrics") or {}
                node = node_of.get(execution_of_stage.get(event.get("Stage ID"), -1), "(other)")
                shuffle[node] = shuffle.get(node, 0) + int(
                    (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0))
                read[node] = read.get(node, 0) + int(
                    (metrics.get("Input Metrics") or {}).get("Records Read", 0))
    return sorted(((n, shuffle[n], read.get(n, 0)) for n in shuffle), key=lambda r: -r[1])


def _report_build(settings: Settings, users: int, days: int, counts: dict, figures: dict,
                  console: Console) -> dict[str, float]:
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


def _dbt_node_seconds(target_path: Path, name: str) -> float:
    results = json.loads((target_path / "run_results.json").read_text())["results"]
    return sum(r["execution_time"] for r in results if r["unique_id"].split(".")[-1] == name
               and r["unique_id"].startswith("model."))


def _dbt_timed(args: list[str], env: dict[str, str], target_path: Path, console: Console) -> None:
    dbt = str(Path(sys.executable).with_name("dbt"))
    cmd = [dbt, *args, "--project-dir", str(PROJECT_ROOT), "--profiles-dir", str(PROJECT_ROOT),
           "--target-path", str(target_path), "--vars", json.dumps({"as_of": str(BENCH_END_DATE)})]
    returncode, output, _peak = run_measured(cmd, env)
    if returncode != 0:
        console.print(output[-6000:])
        raise RuntimeError(f"dbt {' '.join(args)} failed during the benchmark")


def bench_models(transactions: int, users: int, console: Console) -> dict[str, float]:
    """RFM over `transactions` synthetic paid orders of `users` people (a fresh DuckDB file), and
    AIPL for one day over the warehouse `oa bench build` left behind."""
    import duckdb

    settings = load_settings()
    if settings.is_postgres:
        raise RuntimeError("oa bench models measures the embedded DuckDB warehouse; unset OA_TARGET")
    bench = settings.home / "bench"
    target_path = bench / "dbt_target"
    result: dict[str, float] = {"transactions": transactions, "users": users}

    path = bench / "rfm.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    with console.status(f"writing {transactions:,} synthetic orders"):
        conn = duckdb.connect(str(path))
        conn.execute("create schema marts")
        # one year of paid orders; per-user counts and amounts are skewed like real shops
        at = f"timestamp '{BENCH_END_DATE}' - to_seconds(cast(hash(i * 7) % 31536000 as bigint))"
        amount = "round(10 + pow(cast(hash(i * 13) % 1000 as double) / 1000, 3) * 2000, 2)"
        conn.execute(f"""
            create table marts.fct_orders as
            select 'o' || i as order_id,
                   'oa_' || lpad(cast(hash(i) % {users} as varchar), 12, '0') as one_id,
                   'c' || (hash(i) % {users}) as customer_id,
                   {at} as ordered_at, cast({at} as date) as ordered_date,
                   'app' as channel, 'paid' as status, true as is_paid,
                   cast({amount} as decimal(18, 2)) as total_amount,
                   1 as line_count, 1 as units
            from range({transactions}) as t(i)""")
        conn.close()
    env = dict(os.environ, **load_settings(dict(os.environ, OA_DUCKDB_PATH=str(path))).dbt_env())
    _dbt_timed(["seed", "--select", "rfm_segments"], env, target_path, console)
    with console.status("RFM (rfm_default) over the synthetic orders"):
        _dbt_timed(["run", "--select", "rfm_default"], env, target_path, console)
    result["rfm_s"] = round(_dbt_node_seconds(target_path, "rfm_default"), 1)

    warehouse = bench / "warehouse.duckdb"
    if not warehouse.exists():
        raise RuntimeError(f"{warehouse} is missing: run `oa bench build --users {users}` first")
    env = dict(os.environ, **load_settings(dict(os.environ, OA_DUCKDB_PATH=str(warehouse))).dbt_env())
    with console.status("AIPL (aipl_daily) for one day"):
        _dbt_timed(["run", "--select", "aipl_daily"], env, target_path, console)
    result["aipl_one_day_s"] = round(_dbt_node_seconds(target_path, "aipl_daily"), 1)
    conn = duckdb.connect(str(warehouse), read_only=True)
    result["aipl_users"] = conn.execute("select count(*) from marts.user_tags").fetchone()[0]
    conn.close()
    console.print_json(json.dumps(result))
    return result


def synthetic_audiences(count: int, seed: int = 1) -> list[dict]:
    """`count` varied audience definitions over the demo tags, behaviour and models."""
    import random

    rng = random.Random(seed)
    cities = ["Shanghai", "Beijing", "Hangzhou", "Shenzhen", "Chengdu", "Guangzhou", "Wuhan"]
    leaves = [
        lambda: {"tag": {"name": "city", "in": rng.sample(cities, rng.randint(1, 3))}},
        lambda: {"tag": {"name": "member_level", "in": rng.sample(["silver", "gold", "platinum"], 2)}},
        lambda: {"tag": {"name": "gender", "in": [rng.choice(["female", "male"])]}},
        lambda: {"tag": {"name": "age", "between": sorted(rng.sample(range(18, 66), 2))}},
        lambda: {"tag": {"name": "spend_90d", ">=": rng.choice([100, 300, 1000, 3000])}},
        lambda: {"tag": {"name": "orders_365d", ">=": rng.randint(1, 6)}},
        lambda: {"tag": {"name": "categories_bought",
                         "contains_any": rng.sample(["beauty", "shoes", "bags", "home", "kids"], 2)}},
        lambda: {"tag": {"name": "email_domain", "not_ends_with": ["qq.com"]}},
        lambda: {"tag": {"name": "registered_at", "last_days": rng.choice([30, 90, 365])}},
        lambda: {"behavior": {
            rng.choice(["did", "did_not"]): rng.choice(["purchase", "view", "add_to_cart"]),
            "last_days": rng.choice([7, 30, 90]),
            **({"channels": [rng.choice(["app", "web", "store"])]} if rng.random() < .5 else {})}},
        lambda: {"behavior": {"did": "purchase", "last_days": 365, "count": {">=": rng.randint(2, 5)},
                              "amount": {">=": rng.choice([200, 500, 1000])}}},
        lambda: {"rfm": {"model": "rfm_default", "segments": rng.sample(
            ["high_value", "key_keep", "key_develop", "general_keep"], 2)}},
        lambda: {"aipl": {"model": "default", "stages": rng.sample(["A", "I", "P", "L"], 2)}},
    ]

    def tree(depth: int) -> dict:
        if depth == 0 or rng.random() < 0.3:
            return rng.choice(leaves)()
        kind = rng.choice(["all", "all", "any", "not"])
        if kind == "not":
            return {"not": tree(depth - 1)}
        return {kind: [tree(depth - 1) for _ in range(rng.randint(2, 3))]}

    return [{"name": f"bench_{i:03d}", "id_type": rng.choice(["one_id", "mobile", "email", "oaid"]),
             "where": {"all": [tree(2), tree(1)]}} for i in range(count)]


def _bench_env(command: str) -> dict[str, str]:
    """The environment pointing at the `oa bench build` warehouse (embedded DuckDB only)."""
    settings = load_settings()
    if settings.target == "spark":
        home = _spark_home(settings)
        if not (home / "spark").exists():
            raise RuntimeError(f"{home} has no Spark warehouse: run `OA_TARGET=spark oa bench build` first")
        return dict(os.environ, OA_HOME=str(home))
    if settings.is_postgres:
        raise RuntimeError(f"oa bench {command} measures the embedded DuckDB warehouse; unset OA_TARGET")
    warehouse_path = settings.home / "bench" / "warehouse.duckdb"
    if not warehouse_path.exists():
        raise RuntimeError(f"{warehouse_path} is missing: run `oa bench build` first")
    return dict(os.environ, OA_DUCKDB_PATH=str(warehouse_path))


def bench_audiences(count: int, console: Console, singles: bool = True) -> dict[str, float]:
    """Build `count` synthetic audiences over the `oa bench build` warehouse: in one batch, then
    (with `singles`) each on its own; and time validate + compile per audience."""
    import statistics

    import yaml

    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.engine import build
    from openaudience.segments.source import Catalog, load_project

    wh = Warehouse(load_settings(_bench_env("audiences")))
    users = wh.query("select count(*) from marts.user_tags")[0][0]
    today = wh.query("select max(behavior_date) from marts.fct_behaviors")[0][0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for spec in synthetic_audiences(count):
            (folder / f"{spec['name']}.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
        catalog = Catalog.from_project()
        t0 = time.perf_counter()
        project = load_project(folder, catalog)
        for name in project.order:
            project.compile(name, today)
        compile_ms = (time.perf_counter() - t0) * 1000 / count
        with console.status(f"{count} audiences over {users:,} people, in one batch"):
            batch = build(project, project.order, today, wh=wh)
        if not singles:
            result = {"warehouse": wh.engine, "audiences": count, "users": users, "as_of": str(today),
                      "validate_compile_ms_per_audience": round(compile_ms, 2),
                      "member_rows_written": sum(r.size for r in batch.results),
                      "batch_evaluate_s": round(batch.evaluate_seconds, 2), "batch_passes": batch.passes,
                      "batch_build_s": round(batch.seconds, 1)}
            console.print_json(json.dumps(result))
            return result
        singles = []
        with console.status(f"{count} audiences, one query each"):
            for name in project.order:
                singles.append(build(project, [name], today, wh=wh))
    slowest = max(singles, key=lambda r: r.evaluate_seconds)
    result = {
        "audiences": count, "users": users, "as_of": str(today),
        "validate_compile_ms_per_audience": round(compile_ms, 2),
        "mean_members": round(statistics.mean(r.size for r in batch.results)),
        "member_rows_written": sum(r.size for r in batch.results),
        # evaluation: the queries that decide membership
        "batch_evaluate_s": round(batch.evaluate_seconds, 2), "batch_passes": batch.passes,
        "slowest_single_evaluate_s": round(slowest.evaluate_seconds, 2),
        "median_single_evaluate_s": round(statistics.median(r.evaluate_seconds for r in singles), 2),
        "one_query_each_evaluate_total_s": round(sum(r.evaluate_seconds for r in singles), 1),
        "batch_evaluate_over_slowest_single": round(batch.evaluate_seconds / slowest.evaluate_seconds, 2),
        # the whole refresh: evaluation, writing every member row, versions, commit
        "batch_build_s": round(batch.seconds, 1),
        "one_by_one_build_total_s": round(sum(r.seconds for r in singles), 1),
        "slowest_single_build_s": round(max(r.seconds for r in singles), 2),
        "batch_build_over_slowest_single_build": round(batch.seconds / max(r.seconds for r in singles), 2),
    }
    console.print_json(json.dumps(result))
    return result


def bench_ml(console: Console) -> dict[str, float]:
    """Train and score both models over the `oa bench build` warehouse, each `oa ml` command in
    a process of its own so its peak memory is its own: the repurchase model (train, validate
    against the baselines, score everyone predictable) and the recommender (tune, choose, judge,
    refit, run the tasks, after building the tasks' audiences)."""
    from ml.recommend import load_config
    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.source import load_project

    env = _bench_env("ml")
    wh = Warehouse(load_settings(env))
    oa = str(Path(sys.executable).with_name("oa"))
    today = wh.query("select max(behavior_date) from marts.fct_behaviors")[0][0]
    audiences = load_project().upstream(sorted({t.audience for t in load_config().tasks}))
    figures: dict[str, float] = {}
    steps = [("audiences", [oa, "audience", "build", *audiences, "--as-of", str(today)]),
             ("repurchase", [oa, "ml", "train", "repurchase"]),
             ("recommend", [oa, "ml", "train", "recommend"])]
    for name, cmd in steps:
        started = time.perf_counter()
        with console.status(f"{name}: {' '.join(cmd[1:])}"):
            returncode, output, peak_kb = run_measured(cmd, env)
        if returncode != 0:
            console.print(output[-6000:])
            raise RuntimeError(f"{' '.join(cmd[1:])} failed during the benchmark")
        figures[f"{name}_s"] = time.perf_counter() - started
        figures[f"{name}_peak_rss_mb"] = peak_kb / 1024
    rows = {"predictable": wh.query("select count(*) from ml.repurchase_scores")[0][0],
            "features": wh.query("select count(*) from marts.ml_repurchase_features")[0][0],
            "buyers": wh.query("select count(distinct one_id) from marts.fct_behaviors where "
                               "event_type = 'purchase'")[0][0],
            "products": wh.query("select count(*) from marts.product_tags")[0][0],
            "users": wh.query("select count(*) from marts.user_tags")[0][0]}
    result = {"date": dt.date.today().isoformat(), **rows, **{k: round(v, 1) for k, v in figures.items()}}
    console.print_json(json.dumps(result))
    return result
