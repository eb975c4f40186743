"""The operational tables are declared once and upgraded by `ensure_schema`: a warehouse made by
release 0.1 (its DDL recorded in tests/fixtures/release_0_1/) keeps its rows and gains the
migrations table; a new migration changes an existing table; drift and a newer warehouse are
refused with a message; readers never create anything."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from openaudience.core.errors import ConfigError, UserError
from openaudience.core.schema import migrations as mig
from openaudience.core.schema import operational as op
from openaudience.core.schema.raw import RAW_SCHEMA, RAW_TABLES
from openaudience.core.warehouse import Warehouse

FIXTURES = Path(__file__).parent / "fixtures" / "release_0_1"
NOW = dt.datetime(2026, 11, 30, 9, 0)


def _make_release_0_1(wh: Warehouse) -> None:
    """The warehouse release 0.1 left: its tables as it made them, and a row in a few."""
    text = "\n".join(line for line in (FIXTURES / f"{wh.engine}.sql").read_text().splitlines()
                     if not line.startswith("--"))
    statements = [s.strip() for s in text.split(";\n") if s.strip()]
    assert len(statements) > 20
    with wh.connect() as conn:
        for sql in statements:
            wh.execute(conn, sql)
        wh.execute(conn, "insert into audiences.audience_versions values ('vip', 1, 'h1', %s, %s, 'mobile', "
                         "2, 2, 0, 0, 2, 'schedule', true, 'select 1')", [NOW, NOW.date()])
        wh.execute(conn, "insert into delivery.delivery_runs (run_id, destination, channel, audience, "
                         "audience_version, mode, id_type, id_form, trigger, status, started_at, pid, host) "
                         "values ('r1', 'crm', 'webhook', 'vip', 1, 'diff', 'mobile', 'raw', 'cli', "
                         "'succeeded', %s, 42, 'old-host')", [NOW])
        wh.execute(conn, "insert into ml.model_versions values ('repurchase', 3, %s, '{}', '{}', '{}', 10, "
                         "true, 'v3.pickle')", [NOW])


def _columns(wh: Warehouse, schema: str, table: str) -> list[str]:
    with wh.connect(read_only=True) as conn:
        return sorted(mig.table_columns(wh, conn, schema, table))


def _ensure(wh: Warehouse, migrations=mig.MIGRATIONS) -> list[int]:
    with wh.connect() as conn:
        return mig.ensure_schema(wh, conn, migrations)


def test_a_release_0_1_warehouse_is_adopted_with_its_rows(target):
    wh = target.warehouse
    _make_release_0_1(wh)
    assert _ensure(wh) == [m.version for m in mig.MIGRATIONS]
    assert _ensure(wh) == []  # current: nothing more to do
    with wh.connect(read_only=True) as conn:
        assert mig.applied_version(wh, conn) == mig.LATEST
        assert wh.execute(conn, "select audience, version, size from audiences.audience_versions") == \
            [("vip", 1, 2)]
        assert wh.execute(conn, "select run_id, pid, host, sent from delivery.delivery_runs") == \
            [("r1", 42, "old-host", 0)]
        assert wh.execute(conn, "select model, version, active from ml.model_versions") == \
            [("repurchase", 3, True)]
        names = wh.execute(conn, f"select version, name from {mig.MIGRATIONS_TABLE}")
    assert names == [(m.version, m.name) for m in mig.MIGRATIONS]
    for table in op.TABLES:  # every declared column is there, none more
        assert _columns(wh, table.schema, table.name) == sorted(table.column_names), table.name


def test_a_new_warehouse_gets_every_declared_table(target):
    wh = target.warehouse
    assert _ensure(wh) == [m.version for m in mig.MIGRATIONS]
    for table in op.TABLES:
        assert _columns(wh, table.schema, table.name) == sorted(table.column_names), table.name
    for table in RAW_TABLES.values():
        assert _columns(wh, RAW_SCHEMA, table.name) == sorted(c.name for c in table.columns)


def test_a_later_migration_changes_an_existing_table(target):
    """What a release that adds a column does: the table a warehouse already has gains it, and
    its rows keep their values."""
    wh = target.warehouse
    _make_release_0_1(wh)
    _ensure(wh)
    note = op.Column("note", "text")
    widened = op.Table(op.AUDIENCE_VERSIONS.schema, op.AUDIENCE_VERSIONS.name,
                       (*op.AUDIENCE_VERSIONS.columns, note), op.AUDIENCE_VERSIONS.doc)
    second = mig.Migration(mig.LATEST + 1, "audience versions get a note",
                           lambda w, c: mig.add_missing_columns(w, c, widened, ("note",)))
    assert _ensure(wh, (*mig.MIGRATIONS, second)) == [mig.LATEST + 1]
    assert "note" in _columns(wh, "audiences", "audience_versions")
    with wh.connect(read_only=True) as conn:
        assert wh.execute(conn, "select audience, note from audiences.audience_versions") == [("vip", None)]
        assert mig.applied_version(wh, conn) == mig.LATEST + 1


def test_a_table_changed_by_hand_is_named(target):
    wh = target.warehouse
    _ensure(wh)
    with wh.connect() as conn:
        wh.execute(conn, "alter table delivery.delivery_log drop column external_id")
        wh.execute(conn, "alter table audiences.audience_members drop column id_value")
    with pytest.raises(ConfigError, match=r"audiences\.audience_members lacks id_value; delivery\."
                                          r"delivery_log lacks external_id\. They were changed outside "
                                          r"OpenAudience: restore them from a backup, or drop them"):
        _ensure(Warehouse(target.settings))


def test_a_table_dropped_by_hand_is_made_again_empty(target):
    wh = target.warehouse
    _ensure(wh)
    with wh.connect() as conn:
        wh.execute(conn, "drop table delivery.delivery_log")
        wh.execute(conn, "drop table raw.customers")
    again = Warehouse(target.settings)
    with again.connect() as conn:
        again.ensure_schema(conn)
        assert not again._schema_ensured  # it changed something: checked again next time
    assert _columns(wh, "delivery", "delivery_log") == sorted(op.DELIVERY_LOG.column_names)
    assert _columns(wh, "raw", "customers") == sorted(c.name for c in RAW_TABLES["customers"].columns)
    with again.connect() as conn:
        again.ensure_schema(conn)
        assert again._schema_ensured  # current now: not asked again by this handle


def test_a_rolled_back_upgrade_is_made_again_by_the_same_handle(target):
    wh = target.warehouse
    with pytest.raises(RuntimeError, match="the caller failed"):
        with wh.connect() as conn:
            wh.ensure_schema(conn)
            raise RuntimeError("the caller failed")
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        wh.execute(conn, "insert into ml.pool_items values ('p', 'i')")  # the table is there


def test_a_warehouse_from_a_newer_release_is_refused(target):
    wh = target.warehouse
    _ensure(wh)
    with wh.connect() as conn:
        wh.execute(conn, f"insert into {mig.MIGRATIONS_TABLE} values (%s, 'from the future', %s)",
                   [mig.LATEST + 1, NOW])
    with pytest.raises(ConfigError, match=f"schema version {mig.LATEST + 1}, newer than this release "
                                          f"knows \\({mig.LATEST}\\): upgrade OpenAudience"):
        _ensure(wh)


def test_a_reader_creates_nothing(target):
    reader = Warehouse(target.settings, reader=True)
    if target.name == "duckdb":  # a reader of a DuckDB warehouse that does not exist is told so
        with pytest.raises(UserError, match="there is no warehouse"):
            with reader.connect() as conn:
                pass
        _ensure(target.warehouse)
        with target.warehouse.connect() as conn:
            target.warehouse.execute(conn, "drop table ml.pool_items")
        reader = Warehouse(target.settings, reader=True)
    with reader.connect() as conn:
        with pytest.raises(RuntimeError, match="read-only handle"):  # a bug, with its traceback
            reader.ensure_schema(conn)
        assert not reader.table_exists("ml", "pool_items", conn)
