"""The purchases both models learn from: marts.ml_purchases (dbt), behaviour events of the
purchase type or paid order lines, as meta.repurchase.purchase_source says. What is read here is
which source a build used, said in words, and a clear message when there is nothing to learn
from."""

from __future__ import annotations

from dataclasses import dataclass

from openaudience.core.errors import UserError

TABLE = "marts.ml_purchases"


@dataclass(frozen=True)
class Source:
    name: str        # behaviors, orders, or none
    lines: int

    def describe(self, purchase_type: str | None = None) -> str:
        kind = f"'{purchase_type}'" if purchase_type else "purchase"
        if self.name == "orders":
            return (f"{self.lines:,} paid order lines (marts.fct_order_items; there are no {kind} "
                    "behaviour events, or purchase_source says orders)")
        return f"{self.lines:,} {kind} behaviour events (marts.fct_behaviors)"


def source(wh, purchase_type: str | None = None) -> Source:
    """Which purchases marts.ml_purchases holds; a UserError when it is missing or empty."""
    with wh.connect() as conn:
        if not wh.table_exists("marts", "ml_purchases", conn):
            raise UserError("marts.ml_purchases is not built; run the dbt build first (oa build, or the "
                            "nightly job)")
        rows = wh.execute(conn, f"select source, count(*) from {TABLE} group by source order by 2 desc")
    if not rows:
        kind = f"'{purchase_type}'" if purchase_type else "purchase"
        raise EmptyPurchases(
            f"no purchases to learn from: marts.fct_behaviors has no {kind} events "
            "with a known person and marts.fct_order_items no paid line with one. Load orders and order "
            "lines (oa load orders, order_items) or behaviour events, or check "
            "meta.repurchase.purchase_type and purchase_source in models/marts/ml/_ml__models.yml")
    return Source(str(rows[0][0]), int(sum(n for _, n in rows)))


class EmptyPurchases(UserError):
    pass
