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

They are declared in `core/schema/operational.py` and made by `Warehouse.ensure_schema` with
the rest, so the dbt delivery models find their sources in a warehouse that has never delivered.
"""

from __future__ import annotations

from openaudience.core.schema import operational as op
from openaudience.core.schema.migrations import table_columns
from openaudience.core.warehouse import Warehouse, qident

SCHEMA = op.DELIVERY_SCHEMA
RUNS = op.DELIVERY_RUNS.relation
LOG = op.DELIVERY_LOG.relation
STATE = op.DELIVERY_STATE.relation
DEAD = op.DELIVERY_DEAD_LETTERS.relation
SUPPRESSION = op.SUPPRESSION_LIST.relation
RECEIPTS = op.DELIVERY_RECEIPTS.relation
SPOOL_OFFSETS = op.RECEIPT_SPOOL_OFFSETS.relation

RUN_COUNTS = op.RUN_COUNTS
SUPPRESSION_REASONS = ("unsubscribe", "t_reply", "complaint", "blacklist", "consent", "bounce")
# who sends a run: columns a reader may not find in a warehouse no writer has upgraded yet
RUN_OWNER = (("pid", "integer"), ("host", "text"), ("heartbeat_at", "timestamp"))


def run_owner_select(wh: Warehouse, conn) -> str:
    """The run owner's columns as a select list, null where the warehouse lacks them: a reader
    (`oa deliver status`) migrates nothing, and may meet a warehouse from before them."""
    have = table_columns(wh, conn, SCHEMA, "delivery_runs")
    return ", ".join(qident(name) if name in have else f"cast(null as {wh.sql_type(kind)}) as {qident(name)}"
                     for name, kind in RUN_OWNER)
