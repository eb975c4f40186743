"""The raw tables as external assets (``oa load`` fills them) and their GX suites as checks."""


import dagster as dg

from openaudience.core.schema.raw import RAW_SCHEMA, RAW_TABLES, RawTable
from openaudience.raw.checks import validate_table
from orchestration.resources import WarehouseResource


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_SCHEMA, table])


RAW_ASSETS = [
    dg.AssetSpec(
        key=raw_asset_key(t.name),
        description=t.description + " Loaded by `oa load`" + (
            "; declared for the return-flow capability." if t.declared_only else "."),
        group_name="raw",
        kinds={"duckdb", "postgres"},
        metadata={
            "dagster/column_schema": dg.TableSchema(columns=[
                dg.TableColumn(c.name, c.type, description=c.description,
                               constraints=dg.TableColumnConstraints(nullable=c.nullable,
                                                                     unique=c.name == t.key))
                for c in t.columns]),
            "key": t.key,
        },
    )
    for t in RAW_TABLES.values()
]


def _check_for(table: RawTable) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=raw_asset_key(table.name),
        name=f"gx_suite_{table.name}",
        description=f"Great Expectations suite raw_{table.name}: keys unique and non-null, types, "
                    "formats, enums, amounts and timestamps in range.",
        blocking=True,
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        outcome = validate_table(warehouse.get(), table)
        return dg.AssetCheckResult(
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows": dg.MetadataValue.int(outcome.rows),
                "failing_rows": dg.MetadataValue.int(outcome.failing_rows),
                "failed_expectations": dg.MetadataValue.json(outcome.by_expectation),
                "examples": dg.MetadataValue.md(outcome.examples_markdown()),
            },
        )

    return _check


RAW_CHECKS = [_check_for(t) for t in RAW_TABLES.values()]
