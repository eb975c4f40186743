"""The delivery tables in the warehouse (schema `delivery`), written by the sync engine and read
by the dbt delivery models:

- delivery_runs: one row per run (a destination, an audience version, a mode) with its counts,
  written with every commit of outcomes, and the process that owns it (pid, host, heartbeat_at),
  so that `oa deliver status` can tell a run that is sending from one whose process died;
- delivery_log: one row per member change per run: idempotency key, status (pending, sent,
  failed, suppressed, capped, skipped), the rule that stopped it, attempts, error, sent_at;
- delivery_state: the ids each destination holds now (acknowledged adds minus removes), which
  the next `diff` run compares the audience with;
- delivery_dead_letters: members that failed for good, until `oa deliver replay` sends them;
- suppression_list: ids that no channel (or one channel) may message, with the reason;
- delivery_receipts: receipts posted back, accepted or rejected with the reason;
- receipt_spool_offsets: how much of each receipt spool file is loaded.

The raw layer creates them too (`Warehouse.ensure_raw_layer`), so the dbt delivery models find
their sources in a warehouse that has never delivered.
"""

from __future__ import annotations

from orchestration.warehouse import Warehouse, qident, qualified

SCHEMA = "delivery"
RUNS = qualified(SCHEMA, "delivery_runs")
LOG = qualified(SCHEMA, "delivery_log")
STATE = qualified(SCHEMA, "delivery_state")
DEAD = qualified(SCHEMA, "delivery_dead_letters")
SUPPRESSION = qualified(SCHEMA, "suppression_list")
RECEIPTS = qualified(SCHEMA, "delivery_receipts")
SPOOL_OFFSETS = qualified(SCHEMA, "receipt_spool_offsets")

RUN_COUNTS = ("planned", "suppressed", "capped", "skipped", "missing_id", "already_sent", "sent",
              "failed", "pending")
SUPPRESSION_REASONS = ("unsubscribe", "t_reply", "complaint", "blacklist", "consent", "bounce")
# who sends a run: added to warehouses made before they existed, so declared once here
RUN_OWNER = (("pid", "integer"), ("host", "text"), ("heartbeat_at", "timestamp"))


def ensure_tables(wh: Warehouse, conn) -> None:
    if wh.reader:  # a read-only handle finds them or reports them missing; it creates nothing
        return
    txt, big = wh.sql_type("text"), wh.sql_type("integer")
    ts = wh.sql_type("timestamp")
    counts = ",\n".join(f"            {c} {big} not null default 0" for c in RUN_COUNTS)
    wh.execute(conn, f"create schema if not exists {qident(SCHEMA)}")
    wh.execute(conn, f"""
        create table if not exists {RUNS} (
            run_id {txt} not null primary key,
            destination {txt} not null,
            channel {txt} not null,
            audience {txt} not null,
            audience_version {big} not null,
            mode {txt} not null,
            id_type {txt} not null,
            id_form {txt} not null,
            trigger {txt} not null,
            status {txt} not null,
{counts},
            started_at {ts} not null,
            finished_at {ts},
            error {txt}
        )""")
    _add_missing_columns(wh, conn, "delivery_runs", RUN_OWNER)
    wh.execute(conn, f"""
        create table if not exists {LOG} (
            run_id {txt} not null,
            idempotency_key {txt} not null,
            destination {txt} not null,
            channel {txt} not null,
            audience {txt} not null,
            audience_version {big} not null,
            batch_no {big} not null,
            one_id {txt} not null,
            id_type {txt} not null,
            id_value {txt} not null,
            op {txt} not null,
            variables {txt},
            status {txt} not null,
            rule {txt},
            attempts {big} not null,
            error {txt},
            planned_at {ts} not null,
            sent_at {ts},
            external_id {txt}
        )""")
    wh.execute(conn, f"""
        create table if not exists {STATE} (
            destination {txt} not null,
            id_value {txt} not null,
            one_id {txt} not null,
            audience_version {big} not null,
            delivered_at {ts} not null
        )""")
    wh.execute(conn, f"""
        create table if not exists {DEAD} (
            run_id {txt} not null,
            idempotency_key {txt} not null,
            destination {txt} not null,
            one_id {txt} not null,
            id_type {txt} not null,
            id_value {txt} not null,
            op {txt} not null,
            variables {txt},
            attempts {big} not null,
            error {txt},
            failed_at {ts} not null,
            replayed_at {ts}
        )""")
    wh.execute(conn, f"""
        create table if not exists {SUPPRESSION} (
            id_type {txt} not null,
            id_value {txt} not null,
            channel {txt} not null,
            reason {txt} not null,
            source {txt} not null,
            created_at {ts} not null
        )""")
    wh.execute(conn, f"""
        create table if not exists {RECEIPTS} (
            destination {txt} not null,
            msg_id {txt},
            idempotency_key {txt},
            cst_id {txt},
            status_code {txt},
            status {txt},
            send_time {ts},
            received_at {ts} not null,
            verdict {txt} not null,
            reason {txt}
        )""")
    wh.execute(conn, f"""
        create table if not exists {SPOOL_OFFSETS} (
            spool_file {txt} not null primary key,
            lines_read {big} not null
        )""")
    if wh.engine == "postgres":  # DuckDB's zone maps serve these; PostgreSQL needs indexes
        for name, table, cols in (
            ("delivery_log_run", LOG, "run_id, batch_no"),
            ("delivery_log_key", LOG, "idempotency_key"),
            ("delivery_log_caps", LOG, "channel, one_id, sent_at"),
            ("delivery_state_destination", STATE, "destination, id_value"),
            ("suppression_list_id", SUPPRESSION, "id_type, id_value"),
        ):
            wh.execute(conn, f"create index if not exists {name} on {table} ({cols})")


def _columns(wh: Warehouse, conn, table: str) -> set[str]:
    return {r[0] for r in wh.execute(conn, "select column_name from information_schema.columns "
                                           "where table_schema = %s and table_name = %s", [SCHEMA, table])}


def run_owner_select(wh: Warehouse, conn) -> str:
    """The run owner's columns as a select list, null where the warehouse lacks them: a reader
    (`oa deliver status`) migrates nothing, and may meet a warehouse from before them."""
    have = _columns(wh, conn, "delivery_runs")
    return ", ".join(qident(name) if name in have else f"cast(null as {wh.sql_type(kind)}) as {qident(name)}"
                     for name, kind in RUN_OWNER)


def _add_missing_columns(wh: Warehouse, conn, table: str, columns: tuple[tuple[str, str], ...]) -> None:
    """Columns added since a table was first made, for warehouses that have it already. The
    catalogue is asked first: on PostgreSQL even `add column if not exists` takes the table's
    exclusive lock, which would queue behind a delivery writing its run."""
    have = _columns(wh, conn, table)
    for name, kind in columns:
        if name not in have:  # `if not exists`: another process may add it at the same moment
            wh.execute(conn, f"alter table {qualified(SCHEMA, table)} add column if not exists "
                             f"{qident(name)} {wh.sql_type(kind)}")
