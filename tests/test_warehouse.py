"""What moves rows between a warehouse and the state store beside it (Spark and its DuckDB or
PostgreSQL store): a query read a batch at a time, and copied into a temporary table a batch at a
time. Here the far side is an in-memory DuckDB; tests/test_spark.py runs the same with Spark."""

from __future__ import annotations

import datetime as dt

import duckdb

SOURCE = ("select 'p' || i as one_id, i as n, "
          "timestamp '2026-01-01 08:00:00' + i * interval '1 minute' as seen_at "
          "from generate_series(1, 2500) as g(i)")
SUMMARY = "select count(*), sum(n), min(seen_at), max(one_id) from "


def test_a_query_is_read_a_batch_at_a_time_and_copied_into_the_state_store(target):
    wh = target.warehouse
    with wh.connect() as conn:
        wh.execute(conn, f"create temporary table t_src as {SOURCE}")
        batches = list(wh.arrow_batches(conn, "select one_id, n, seen_at from t_src where n > %s order by n",
                                        [500], batch_rows=1000))
        assert [b.num_rows for b in batches] == [1000, 1000]
        assert batches[0].column("one_id")[0].as_py() == "p501"
        assert batches[-1].column("seen_at")[-1].as_py().replace(tzinfo=None) == \
            dt.datetime(2026, 1, 1, 8) + dt.timedelta(minutes=2500)

        far = duckdb.connect()  # the warehouse the rows come from
        try:
            columns = [("one_id", "text"), ("n", "integer"), ("seen_at", "timestamp")]
            rows = wh.pull(conn, "t_copy", columns, far,
                           f"select * from ({SOURCE}) as s where mod(n, %s) = 0", [2], batch_rows=300)
        finally:
            far.close()
        assert rows == 1250
        assert wh.execute(conn, SUMMARY + "t_copy") == wh.execute(conn, SUMMARY + "t_src where mod(n, 2) = 0")
