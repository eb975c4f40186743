"""Running compiled audiences against the warehouse."""

from __future__ import annotations

import datetime as dt

from orchestration.segments.compiler import audience_query, to_sql
from orchestration.segments.source import Catalog
from orchestration.segments.spec import Audience
from orchestration.warehouse import Warehouse


def count_members(warehouse: Warehouse, audience: Audience, catalog: Catalog,
                  today: dt.date) -> tuple[int, int]:
    """(members, members that have the audience's id type), without saving anything."""
    query = audience_query(audience, catalog.tags, today, delimiters=catalog.delimiters)
    sql = to_sql(query, warehouse.engine, pretty=False)
    members, with_id = warehouse.query(f"select count(*), count(id_value) from ({sql}) as a")[0]
    return int(members), int(with_id)
