"""The purchases both models learn from: marts.ml_purchases (dbt), behaviour events of the
purchase type or paid order lines, as meta.repurchase.purchase_source says. What is read here is
which source a build used, said in words, the one as-of date of a run (marts.ml_reference_date:
the date asked for and T, the latest purchase on or before it), and a clear message when there is
nothing to learn from."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from openaudience.core.errors import UserError

TABLE = "marts.ml_purchases"
REFERENCE = "marts.ml_reference_date"
STALE_DAYS = 7
"""T this many days or more before the requested as-of date is a caution: the purchases stopped
arriving, or the as-of date is in the future."""


@dataclass(frozen=True)
class Source:
    name: str        # behaviors, orders, or none
    lines: int
    requested: dt.date | None = None   # the run's as-of date
    reference: dt.date | None = None   # T: the latest purchase on or before it

    def describe(self, purchase_type: str | None = None) -> str:
        kind = f"'{purchase_type}'" if purchase_type else "purchase"
        if self.name == "orders":
            return (f"{self.lines:,} paid order lines (marts.fct_order_items; there are no {kind} "
                    "behaviour events, or purchase_source says orders)")
        return f"{self.lines:,} {kind} behaviour events (marts.fct_behaviors)"

    def as_of(self) -> str:
        """What date the models are as of, and why when it is not the date the run asked for."""
        if self.requested is None or self.reference is None or self.reference >= self.requested:
            return f"as of {self.reference}"
        days = (self.requested - self.reference).days
        return (f"as of {self.reference}, the latest purchase on or before the requested {self.requested} "
                f"({days} day{'s' if days != 1 else ''} before it)")

    def stale(self) -> str | None:
        """A caution when T is STALE_DAYS or more before the requested date."""
        if self.requested is None or self.reference is None:
            return None
        days = (self.requested - self.reference).days
        if days < STALE_DAYS:
            return None
        return (f"the purchases end on {self.reference}, {days} days before the run's as-of date "
                f"{self.requested}: the models are as of {self.reference}. Load the latest orders or "
                "behaviour events, or build with --as-of the day the data ends")


def source(wh, purchase_type: str | None = None) -> Source:
    """Which purchases marts.ml_purchases holds and the run's as-of dates (marts.ml_reference_date);
    a UserError when they are missing or there are no purchases."""
    with wh.connect() as conn:
        for table in ("ml_purchases", "ml_reference_date"):
            if not wh.table_exists("marts", table, conn):
                raise UserError(f"marts.{table} is not built; run the dbt build first (oa build, or the "
                                "nightly job)")
        rows = wh.execute(conn, "select source, purchase_lines, requested_date, reference_date "
                                f"from {REFERENCE}")
    if len(rows) != 1:
        raise UserError(f"{REFERENCE} holds {len(rows)} rows, not one; rebuild it (oa build)")
    [(name, lines, requested, reference)] = rows
    if not lines:
        kind = f"'{purchase_type}'" if purchase_type else "purchase"
        raise EmptyPurchases(
            f"no purchases to learn from on or before the as-of date {requested}: marts.fct_behaviors has "
            f"no {kind} events with a known person and marts.fct_order_items no paid line with one. Load "
            "orders and order lines (oa load orders, order_items) or behaviour events, or check "
            "meta.repurchase.purchase_type and purchase_source in models/marts/ml/_ml__models.yml")
    return Source(str(name), int(lines), _date(requested), _date(reference))


def _date(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.date.fromisoformat(str(value)[:10])


class EmptyPurchases(UserError):
    pass
