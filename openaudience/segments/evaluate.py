"""Running a compiled audience against the warehouse without saving it."""

from __future__ import annotations

import datetime as dt

from openaudience.core.warehouse import Warehouse
from openaudience.segments.engine import ready_sql
from openaudience.segments.source import Project


def count_members(warehouse: Warehouse, project: Project, name: str,
                  today: dt.date) -> tuple[int, int]:
    """(members, members that have the audience's id type), without saving anything. With a
    limit, both count the members the limit keeps."""
    sql = ready_sql(warehouse, project, name, today)
    members, with_id = warehouse.query(f"select count(*), count(id_value) from ({sql}) as a")[0]
    return int(members), int(with_id)
