"""The operational tables: what the commands write besides dbt's models, declared once.

The raw contracts (`schema/raw.py`) say what users load; these say what OpenAudience keeps about
its own work: the load history and quarantine, audience versions and members, deliveries and
receipts, suppression, and the machine-learning outputs. `migrations.ensure_schema` creates and
upgrades them; nothing else issues DDL for them. A column added here needs a migration too
(`migrations.MIGRATIONS`), so a warehouse made by an earlier release gains it.

Types are logical (`Warehouse.sql_type` maps them per engine): text, integer (BIGINT), double,
date, timestamp, decimal (money), boolean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openaudience.core.schema.raw import ARROW_TYPES, QUARANTINE_TABLE, RAW_SCHEMA
from openaudience.core.sql import qualified


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    default: str | None = None  # a SQL literal, e.g. "0"


@dataclass(frozen=True)
class Index:
    """An index PostgreSQL needs (DuckDB's zone maps serve the same filters)."""
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]
    doc: str
    primary_key: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = field(default_factory=tuple)

    @property
    def relation(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def arrow_schema(self):
        """The Arrow schema of the table's rows (what goes to and from it in batches)."""
        import pyarrow as pa

        return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in self.columns])


def _cols(spec: str) -> tuple[Column, ...]:
    """`name type [not null] [default X]`, comma-separated: the declarations below stay readable."""
    out = []
    for part in spec.split(","):
        words = part.split()
        name, kind, rest = words[0], words[1], " ".join(words[2:])
        default = rest.split("default", 1)[1].strip() if "default" in rest else None
        out.append(Column(name, kind, nullable="not null" not in rest, default=default))
    return tuple(out)


# -- raw: what each load did ----------------------------------------------------------------------
LOAD_HISTORY_TABLE = "load_history"
QUARANTINE = Table(RAW_SCHEMA, QUARANTINE_TABLE, _cols(
    "load_id text not null, table_name text not null, source_file text not null, "
    "row_number integer not null, record text not null, reasons text not null, "
    "quarantined_at timestamp not null"),
    "rows a load refused, with the reasons, when loaded with --quarantine")
LOAD_HISTORY = Table(RAW_SCHEMA, LOAD_HISTORY_TABLE, _cols(
    "load_id text not null, table_name text not null, source_file text not null, mode text not null, "
    "rows_loaded integer not null, rows_quarantined integer not null, loaded_at timestamp not null"),
    "one row per load: the file, the mode and how many rows it wrote")

# -- audiences: versions and their members -------------------------------------------------------
AUDIENCE_SCHEMA = "audiences"
MEMBERS_TABLE = "audience_members"
VERSIONS_TABLE = "audience_versions"
UPLOADS_TABLE = "audience_uploads"
AUDIENCE_VERSIONS = Table(AUDIENCE_SCHEMA, VERSIONS_TABLE, _cols(
    "audience text not null, version integer not null, definition_hash text not null, "
    "built_at timestamp not null, as_of date not null, id_type text not null, size integer not null, "
    "added integer not null, removed integer not null, dropped integer not null, "
    "matched integer not null, trigger text not null, kept boolean not null, compiled_sql text not null"),
    "one row per audience version: its definition's hash, size, changes and the SQL it ran",
    primary_key=("audience", "version"))
AUDIENCE_MEMBERS = Table(AUDIENCE_SCHEMA, MEMBERS_TABLE, _cols(
    "audience text not null, version integer not null, one_id text not null, id_type text not null, "
    "id_value text not null"),
    "the members of every kept audience version",
    indexes=(Index("audience_members_version", ("audience", "version")),))
AUDIENCE_UPLOADS = Table(AUDIENCE_SCHEMA, UPLOADS_TABLE, _cols(
    "upload text not null, id_type text not null, id_value text not null"),
    "id lists uploaded for audiences, keyed by their content's digest")

# -- deliveries -----------------------------------------------------------------------------------
DELIVERY_SCHEMA = "delivery"
RUN_COUNTS = ("planned", "suppressed", "capped", "skipped", "missing_id", "already_sent", "sent",
              "failed", "pending")
DELIVERY_RUNS = Table(DELIVERY_SCHEMA, "delivery_runs", _cols(
    "run_id text not null, destination text not null, channel text not null, audience text not null, "
    "audience_version integer not null, mode text not null, id_type text not null, id_form text not null, "
    "trigger text not null, status text not null, "
    + ", ".join(f"{c} integer not null default 0" for c in RUN_COUNTS)
    + ", started_at timestamp not null, finished_at timestamp, error text, "
    "pid integer, host text, heartbeat_at timestamp"),
    "one row per delivery run with its counts and the process that sends it",
    primary_key=("run_id",))
DELIVERY_LOG = Table(DELIVERY_SCHEMA, "delivery_log", _cols(
    "run_id text not null, idempotency_key text not null, destination text not null, channel text not null, "
    "audience text not null, audience_version integer not null, batch_no integer not null, "
    "one_id text not null, id_type text not null, id_value text not null, op text not null, "
    "variables text, status text not null, rule text, attempts integer not null, error text, "
    "planned_at timestamp not null, sent_at timestamp, external_id text"),
    "one row per member change per run: its idempotency key, status and attempts",
    indexes=(Index("delivery_log_run", ("run_id", "batch_no")),
             Index("delivery_log_key", ("idempotency_key",)),
             Index("delivery_log_caps", ("channel", "one_id", "sent_at"))))
DELIVERY_STATE = Table(DELIVERY_SCHEMA, "delivery_state", _cols(
    "destination text not null, id_value text not null, one_id text not null, "
    "audience_version integer not null, delivered_at timestamp not null"),
    "the ids each destination holds now, which the next diff run compares with",
    indexes=(Index("delivery_state_destination", ("destination", "id_value")),))
DELIVERY_DEAD_LETTERS = Table(DELIVERY_SCHEMA, "delivery_dead_letters", _cols(
    "run_id text not null, idempotency_key text not null, destination text not null, one_id text not null, "
    "id_type text not null, id_value text not null, op text not null, variables text, "
    "attempts integer not null, error text, failed_at timestamp not null, replayed_at timestamp"),
    "members that failed for good, until `oa deliver replay` sends them")
SUPPRESSION_LIST = Table(DELIVERY_SCHEMA, "suppression_list", _cols(
    "id_type text not null, id_value text not null, channel text not null, reason text not null, "
    "source text not null, created_at timestamp not null"),
    "ids that no channel (or one channel) may message, with the reason",
    indexes=(Index("suppression_list_id", ("id_type", "id_value")),))
DELIVERY_RECEIPTS = Table(DELIVERY_SCHEMA, "delivery_receipts", _cols(
    "destination text not null, msg_id text, idempotency_key text, cst_id text, status_code text, "
    "status text, send_time timestamp, received_at timestamp not null, verdict text not null, reason text"),
    "receipts posted back, accepted or rejected with the reason")
RECEIPT_SPOOL_OFFSETS = Table(DELIVERY_SCHEMA, "receipt_spool_offsets", _cols(
    "spool_file text not null, lines_read integer not null, bytes_read integer"),
    "how much of each receipt spool file is loaded", primary_key=("spool_file",))

# -- machine learning -----------------------------------------------------------------------------
ML_SCHEMA = "ml"
MODEL_VERSIONS = Table(ML_SCHEMA, "model_versions", _cols(
    "model text, version integer, trained_at timestamp, config text, data_window text, metrics text, "
    "purchases integer, active boolean, artefact text"),
    "one row per trained model version, its metrics and whether it is the active one")
REPURCHASE_SCORES = Table(ML_SCHEMA, "repurchase_scores", _cols(
    "one_id text, probability double, rank integer, decile integer, model_version integer, "
    "as_of_date date, scored_at timestamp"),
    "each predictable person's repurchase probability from the active version")
RECOMMENDATIONS = Table(ML_SCHEMA, "recommendations", _cols(
    "task text, pool text, one_id text, item_id text, rank integer, score double, model text, "
    "model_version integer, as_of_date date, made_at timestamp"),
    "the products recommended to each person, per task")
POOL_ITEMS = Table(ML_SCHEMA, "pool_items", _cols("pool text, item_id text"),
                   "the products of each product pool, as last computed")

# -- journeys -------------------------------------------------------------------------------------
JOURNEY_SCHEMA = "journeys"
JOURNEYS = Table(JOURNEY_SCHEMA, "journeys", _cols(
    "journey text not null, status text not null, definition text not null, definition_hash text not null, "
    "file text not null, audience text not null, periodic boolean not null, created_at timestamp not null, "
    "started_at timestamp, next_cycle_at timestamp, end_at timestamp, finished_at timestamp, "
    "updated_at timestamp not null, error text, cycles integer not null default 0"),
    "one row per started journey: its status, the definition it runs (as it was when started) and "
    "when its next cycle starts", primary_key=("journey",))
JOURNEY_CYCLES = Table(JOURNEY_SCHEMA, "journey_cycles", _cols(
    "journey text not null, cycle integer not null, status text not null, audience_version integer not null, "
    "scheduled_at timestamp not null, started_at timestamp not null, finished_at timestamp, "
    "entered integer not null default 0, held_out integer not null default 0, "
    "not_reentered integer not null default 0"),
    "one row per cycle (execution record) of a journey: the audience version it read and who entered",
    primary_key=("journey", "cycle"))
JOURNEY_POSITIONS = Table(JOURNEY_SCHEMA, "journey_positions", _cols(
    "journey text not null, cycle integer not null, node text not null, one_id text not null, "
    "id_value text, held_out boolean not null, arrived_at timestamp not null, due_at timestamp not null, "
    "state text not null, branch text, run_id text, left_at timestamp"),
    "one row per person, node and cycle: when they arrived, when the node acts on them (due_at), "
    "their state (waiting, sending, done, stopped) and the branch they left by; kept "
    "OA_JOURNEY_DETAIL_DAYS after their cycle ends",
    indexes=(Index("journey_positions_due", ("journey", "state", "due_at")),
             Index("journey_positions_node", ("journey", "cycle", "node", "one_id"))))
JOURNEY_ENTRIES = Table(JOURNEY_SCHEMA, "journey_entries", _cols(
    "journey text not null, one_id text not null, first_cycle integer not null, last_cycle integer not null, "
    "last_entered_at timestamp not null, entries integer not null"),
    "who entered each journey, when last and how often: what the re-entry policy reads",
    primary_key=("journey", "one_id"))
JOURNEY_ACTIONS = Table(JOURNEY_SCHEMA, "journey_actions", _cols(
    "subtask_id text not null, journey text not null, cycle integer not null, node text not null, "
    "kind text not null, destination text, channel text, run_id text, audience text, "
    "audience_version integer, "
    "status text not null, people integer not null default 0, held_out integer not null default 0, "
    + ", ".join(f"{c} integer not null default 0" for c in RUN_COUNTS)
    + ", started_at timestamp not null, finished_at timestamp, error text"),
    "one row per execution of an action node (a sub-task, spec §5.4): the delivery run it made, or the "
    "audience version it generated, with its counts", primary_key=("subtask_id",))
JOURNEY_NODE_COUNTS = Table(JOURNEY_SCHEMA, "journey_node_counts", _cols(
    "journey text not null, cycle integer not null, node text not null, branch text, "
    "people integer not null, held_out integer not null"),
    "per finished cycle, how many people reached each node and left by each branch: what reports read "
    "once the per-person rows are gone")

JOURNEY_EVENT_ENTRIES = Table(JOURNEY_SCHEMA, "journey_event_entries", _cols(
    "journey text not null, cycle integer not null, one_id text not null, event_id text not null, "
    "event_received_at timestamp not null, entered_at timestamp not null"),
    "one row per entry into an event-triggered journey: the event that started it (its attributes "
    "fill the sends' event variables) and when; what trigger limits count",
    primary_key=("journey", "cycle", "one_id"),
    indexes=(Index("journey_event_entries_person", ("journey", "one_id", "entered_at")),))
JOURNEY_EVENT_COUNTS = Table(JOURNEY_SCHEMA, "journey_event_counts", _cols(
    "journey text not null, one_id text not null, pending integer not null, updated_at timestamp not null"),
    "per person and event-triggered journey with min_count, the qualifying events since they last "
    "entered", primary_key=("journey", "one_id"))

# -- real-time events -----------------------------------------------------------------------------
EVENTS_SCHEMA = "events"
EVENTS = Table(EVENTS_SCHEMA, "events", _cols(
    "event_id text not null, channel text not null, event_code text not null, customer_id text not null, "
    "customer_id_type text not null, occurred_at timestamp not null, attributes text, organization_id text, "
    "received_at timestamp not null, ingested_at timestamp not null"),
    "every behaviour event the collector accepted (events/*.yml defines them), once each: its channel "
    "(app_key), code, the reporter's customerId, when it happened and its attributes (JSON)",
    primary_key=("event_id",),
    indexes=(Index("events_code_time", ("event_code", "occurred_at")),
             Index("events_customer", ("customer_id_type", "customer_id")),
             Index("events_ingested", ("ingested_at",))))
EVENT_IDENTITIES = Table(EVENTS_SCHEMA, "identity_links", _cols(
    "message_id text not null, channel text not null, customer_id_type text not null, "
    "customer_id text not null, id_type text not null, id_value text not null, "
    "received_at timestamp not null, ingested_at timestamp not null"),
    "the ids each identity message links to the reporter's customerId (idMapping mapped to our id types), "
    "one row per id, which the identity graph reads",
    primary_key=("message_id", "id_type", "id_value"),
    indexes=(Index("identity_links_ingested", ("ingested_at",)),))
EVENT_LOG_OFFSETS = Table(EVENTS_SCHEMA, "event_log_offsets", _cols(
    "log text not null, segment text not null, byte_offset integer not null, updated_at timestamp not null"),
    "where the next `oa events ingest` goes on reading the event log", primary_key=("log",))
EVENT_DEFINITIONS = Table(EVENTS_SCHEMA, "event_definitions", _cols(
    "event_code text not null, name text not null, channel text not null, channel_name text not null, "
    "app_type text not null, attributes text not null, updated_at timestamp not null"),
    "the event definitions (events/*.yml) as the collector last served them: what dbt reads to type "
    "and place the events", primary_key=("event_code",))
EVENT_PEOPLE = Table(EVENTS_SCHEMA, "event_people", _cols(
    "event_id text not null, one_id text, resolved_at timestamp not null"),
    "beside a Spark warehouse only: the person (one_id) of each event ingested while an event-triggered "
    "journey runs, as Spark's marts.fct_events_live resolved it then (null: nobody known yet), and "
    "again after each build; what the journeys read there instead of that view",
    primary_key=("event_id",))
EVENT_TABLES = (EVENTS, EVENT_IDENTITIES, EVENT_LOG_OFFSETS, EVENT_DEFINITIONS)

TABLES: tuple[Table, ...] = (
    QUARANTINE, LOAD_HISTORY, AUDIENCE_VERSIONS, AUDIENCE_MEMBERS, AUDIENCE_UPLOADS,
    DELIVERY_RUNS, DELIVERY_LOG, DELIVERY_STATE, DELIVERY_DEAD_LETTERS, SUPPRESSION_LIST,
    DELIVERY_RECEIPTS, RECEIPT_SPOOL_OFFSETS, MODEL_VERSIONS, REPURCHASE_SCORES, RECOMMENDATIONS,
    POOL_ITEMS, JOURNEYS, JOURNEY_CYCLES, JOURNEY_POSITIONS, JOURNEY_ENTRIES, JOURNEY_ACTIONS,
    JOURNEY_NODE_COUNTS, EVENTS, EVENT_IDENTITIES, EVENT_LOG_OFFSETS, EVENT_DEFINITIONS,
    JOURNEY_EVENT_ENTRIES, JOURNEY_EVENT_COUNTS, EVENT_PEOPLE,
)
JOURNEY_TABLES = (JOURNEYS, JOURNEY_CYCLES, JOURNEY_POSITIONS, JOURNEY_ENTRIES, JOURNEY_ACTIONS,
                  JOURNEY_NODE_COUNTS)
EVENT_JOURNEY_TABLES = (JOURNEY_EVENT_ENTRIES, JOURNEY_EVENT_COUNTS)
