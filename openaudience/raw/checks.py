"""Run a raw table's Great Expectations suite over what is loaded in the warehouse.

The checks agree with ``oa load``'s: "not in the future" is measured in ``OA_TIMEZONE`` (raw
timestamps are wall-clock times there) and keys are compared trimmed, as staging reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from openaudience.core.schema.raw import RAW_SCHEMA, RawTable
from openaudience.core.warehouse import Warehouse, qident, qualified
from openaudience.raw.validation import UNIQUE, build_suite, local_now, run_suite, show_value

EXAMPLES = 10


@dataclass
class TableValidation:
    table: str
    rows: int = 0
    failing_rows: int = 0
    by_expectation: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0

    def examples_markdown(self) -> str:
        if not self.examples:
            return "No failing rows."
        return "\n".join(f"- {e}" for e in self.examples)


def validate_table(warehouse: Warehouse, table: RawTable, batch_rows: int = 500_000) -> TableValidation:
    """Stream the table through its suite; key uniqueness is one SQL query over the table."""
    outcome = TableValidation(table=table.name)
    if not warehouse.table_exists(RAW_SCHEMA, table.name):
        return outcome
    suite = build_suite(table, now=local_now(warehouse.settings.timezone), include_unique=False)
    cols = ", ".join(qident(c) for c in table.column_names)
    seen = 0
    for frame in warehouse.iter_batches(f"select {cols} from {qualified(RAW_SCHEMA, table.name)}",
                                        batch_rows):
        for col in table.columns:
            if col.type in ("date", "timestamp"):
                frame[col.name] = pd.to_datetime(frame[col.name])
        failures = run_suite(frame, suite)
        outcome.failing_rows += len(failures.by_row)
        for name, n in failures.by_expectation.items():
            outcome.by_expectation[name] = outcome.by_expectation.get(name, 0) + n
        for row in sorted(failures.by_row):
            if len(outcome.examples) >= EXAMPLES:
                break
            key = frame.iloc[row][table.key] if row < len(frame) else None
            outcome.examples.append(f"{table.key}={key!r}: " + "; ".join(failures.by_row[row]))
        seen += len(frame)
    outcome.rows = seen
    _check_keys(warehouse, table, outcome)
    return outcome


def _check_keys(warehouse: Warehouse, table: RawTable, outcome: TableValidation) -> None:
    """Blank and duplicated keys, compared trimmed like the loader and staging do."""
    key = f"trim({qident(table.key)})"
    source = qualified(RAW_SCHEMA, table.name)
    blank = int(warehouse.query(f"select count(*) from {source} where {key} = ''")[0][0])
    if blank:
        outcome.failing_rows += blank
        outcome.by_expectation["key_not_blank"] = blank
        if len(outcome.examples) < EXAMPLES:
            outcome.examples.append(f"{table.key}: blank once spaces are trimmed ({blank} rows)")
    dupes = warehouse.query(
        f"select {key}, count(*) from {source} where {key} <> '' "
        f"group by {key} having count(*) > 1 order by {key}")
    if dupes:
        n = sum(int(c) for _, c in dupes)
        outcome.failing_rows += n
        outcome.by_expectation[UNIQUE] = n
        for value, count in dupes[: max(0, EXAMPLES - len(outcome.examples))]:
            outcome.examples.append(f"{table.key}={show_value(value)}: {UNIQUE} ({count} rows)")
