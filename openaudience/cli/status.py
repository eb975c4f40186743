"""``oa status``: where the warehouse is, what is loaded, what is built."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from openaudience.core.schema.operational import LOAD_HISTORY_TABLE
from openaudience.core.schema.raw import RAW_SCHEMA, RAW_TABLES
from openaudience.core.warehouse import Warehouse, qualified

MARTS = ("user_tags", "dim_identities", "fct_behaviors", "fct_orders", "fct_order_items",
         "product_tags", "dim_behavior_objects", "rpt_identity_shared_ids", "rfm_default",
         "rfm_lifetime", "aipl_daily")


def collect(warehouse: Warehouse) -> dict[str, dict[str, int | None]]:
    """Row counts of the raw tables and the marts (None when a table does not exist yet)."""
    counts = warehouse.row_counts([(RAW_SCHEMA, t) for t in RAW_TABLES]
                                  + [("marts", t) for t in MARTS])
    return {"raw": {t: counts[(RAW_SCHEMA, t)] for t in RAW_TABLES},
            "marts": {t: counts[("marts", t)] for t in MARTS}}


def print_status(console: Console) -> None:
    warehouse = Warehouse(reader=True)
    console.print(f"[bold]Warehouse[/bold]: {warehouse.settings.describe()}")
    if warehouse.engine == "duckdb" and not warehouse.settings.duckdb_path.exists():
        console.print("Nothing loaded yet: run `make demo`, or `oa load TABLE FILE`.")
        return
    counts = collect(warehouse)
    last_loads = {}
    if warehouse.table_exists(RAW_SCHEMA, LOAD_HISTORY_TABLE):
        for table, at, rows, parked in warehouse.query(
                f"select table_name, max(loaded_at), sum(rows_loaded), sum(rows_quarantined) "
                f"from {qualified(RAW_SCHEMA, LOAD_HISTORY_TABLE)} group by table_name"):
            last_loads[table] = (at, rows, parked)
    raw = Table(title="Raw tables (raw schema)")
    for col in ("table", "rows", "last load", "quarantined"):
        raw.add_column(col, justify="right" if col != "table" else "left")
    for name, n in counts["raw"].items():
        at, _, parked = last_loads.get(name, (None, None, None))
        raw.add_row(name, "-" if n is None else f"{n:,}", str(at or "-")[:19],
                    f"{parked:,}" if parked else "0")
    marts = Table(title="Marts (marts schema)")
    marts.add_column("table")
    marts.add_column("rows", justify="right")
    for name, n in counts["marts"].items():
        marts.add_row(name, "not built" if n is None else f"{n:,}")
    console.print(raw)
    console.print(marts)
    if counts["marts"].get("user_tags"):
        shared = counts["marts"].get("rpt_identity_shared_ids") or 0
        console.print(f"{counts['marts']['user_tags']:,} people resolved from "
                      f"{counts['marts']['dim_identities']:,} ids; {shared:,} shared ids kept apart "
                      "(marts.rpt_identity_shared_ids).")
    console.print("Open the Dagster UI with [bold]make ui[/bold] (http://127.0.0.1:3000): the asset "
                  "graph, the nightly_refresh job and schedule, and the GX checks.")
