"""Looking at audiences without building them: preview, diff against the built version or a
git revision, explain one person, export a built version."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pandas as pd
from sqlglot import exp

from connectors.spreadsheet import neutralise
from openaudience.core.errors import UserError
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.warehouse import Warehouse, qualified
from openaudience.segments.compiler import Relations, describe, explain_query, to_sql
from openaudience.segments.engine import MEMBERS, latest, ready_sql
from openaudience.segments.source import Project, load_project

HASHES = ("none", "md5", "sha256")


def _saved(sql: str) -> str:
    """Only members that have the audience's id are saved: the same filter on a live query."""
    return f"select one_id from ({sql}) as q where id_value is not null"


# -- preview ------------------------------------------------------------------------------------
def preview(wh: Warehouse, project: Project, name: str, today: dt.date, rows: int = 100) -> pd.DataFrame:
    """Up to `rows` members of the live definition with their id and the tags it filters on."""
    audience = project.audience(name)
    sql = ready_sql(wh, project, name, today)
    tags = list(dict.fromkeys([*(t.name for t in audience.condition().leaves("tag")), "gender", "age", "city",
                               "member_level", "spend_365d"]))
    tags = [t for t in tags if t != audience.id_type][:10]
    cols = ", ".join(f't."{t}"' for t in tags)
    users = qualified("marts", "user_tags")
    id_col = "" if audience.id_type == "one_id" else f'q.id_value as "{audience.id_type}", '
    return wh.query_df(f"select q.one_id, {id_col}{cols} from ({sql}) as q "
                       f"join {users} as t on t.one_id = q.one_id order by q.one_id limit {int(rows)}")


# -- diff -----------------------------------------------------------------------------------------
@dataclass
class Diff:
    name: str
    before: str            # what the old side is, e.g. "built version 3" or "HEAD~1"
    old_size: int
    new_size: int
    added: int
    removed: int
    added_sample: list[str]
    removed_sample: list[str]
    definition_diff: str


def project_at(rev: str) -> tuple[Project, tempfile.TemporaryDirectory]:
    """The audiences/ folder as it was at git revision `rev`, loaded (uploads included)."""
    try:
        # the revision comes from the user: after --end-of-options git never reads it as an option
        # (`--against=--output=FILE` would otherwise make git archive write FILE)
        archive = subprocess.run(["git", "archive", "--format=tar", "--end-of-options", rev, "audiences"],
                                 cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    except FileNotFoundError:
        raise UserError("git is not installed; --against needs it") from None
    except subprocess.CalledProcessError as exc:
        message = exc.stderr.decode(errors="replace").strip().splitlines()
        raise UserError(f"--against {rev}: {message[-1] if message else 'git archive failed'}") from None
    tmp = tempfile.TemporaryDirectory(prefix="oa-audiences-")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp.name, filter="data")
    return load_project(Path(tmp.name) / "audiences"), tmp


def diff(wh: Warehouse, project: Project, name: str, today: dt.date, against: str | None = None,
         sample: int = 5) -> Diff:
    """+added/−removed members between the built version (or the definition at git revision
    `against`, evaluated now) and the working-tree definition evaluated now."""
    import difflib

    project.audience(name)
    new_sql = _saved(ready_sql(wh, project, name, today))
    new_text = project.paths[name].read_text(encoding="utf-8")
    tmp = None
    if against:
        old_project, tmp = project_at(against)
        if name not in old_project.audiences:
            tmp.cleanup()
            raise UserError(f"audience {name!r} does not exist at {against}")
        old_sql = _saved(ready_sql(wh, old_project, name, today))
        old_text = old_project.paths[name].read_text(encoding="utf-8")
        before = against
    else:
        built = latest(wh, name)
        if built is None:
            raise UserError(f"audience {name!r} has never been built; compare with --against REV "
                            f"or build it (oa audience build {name})")
        old_sql = (f"select one_id from {MEMBERS} where audience = "
                   f"{exp.Literal.string(name).sql()} and version = {int(built['version'])}")
        old_text = ""
        before = f"built version {built['version']}"
    try:
        with wh.connect() as conn:
            old_size = wh.execute(conn, f"select count(*) from ({old_sql}) as o")[0][0]
            new_size = wh.execute(conn, f"select count(*) from ({new_sql}) as n")[0][0]
            added = wh.execute(conn, f"select one_id from ({new_sql}) as n except {old_sql}")
            removed = wh.execute(conn, f"select one_id from ({old_sql}) as o except {new_sql}")
    finally:
        if tmp:
            tmp.cleanup()
    text = "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                        f"{name}.yml@{against}", f"{name}.yml")) if against else ""
    return Diff(name, before, int(old_size), int(new_size), len(added), len(removed),
                sorted(r[0] for r in added)[:sample], sorted(r[0] for r in removed)[:sample], text)


# -- explain --------------------------------------------------------------------------------------
@dataclass
class ExplainLine:
    depth: int
    text: str
    value: bool


def explain(wh: Warehouse, project: Project, name: str, one_id: str, today: dt.date) -> list[ExplainLine]:
    audience = project.audience(name)
    ready_sql(wh, project, name, today)
    query, paths = explain_query(audience, project.catalog, today, one_id, Relations(),
                                 project.upload_digests())
    rows = wh.query(to_sql(query, wh.engine, pretty=False))
    if not rows:
        raise UserError(f"no person with one_id {one_id!r} in user_tags")
    nodes = dict(audience.condition().walk())
    row = rows[0]
    tags = list(dict.fromkeys(leaf.name for leaf in audience.condition().leaves("tag")))
    values = dict(zip(tags, row[len(paths):], strict=True))
    lines = []
    for p, v in zip(paths, row[:len(paths)], strict=True):
        text = describe(nodes[p])
        if nodes[p].kind == "tag":
            value = values[nodes[p].tag.name]
            text += f"  [{nodes[p].tag.name} = {'NULL' if value is None else repr(value)}]"
        lines.append(ExplainLine(depth=sum(1 for part in p if part in ("all", "any", "not")),
                                 text=text, value=bool(v)))
    return lines


# -- export ---------------------------------------------------------------------------------------
def export(wh: Warehouse, project: Project, name: str, out: Path, id_type: str | None = None,
           hash_name: str = "none", version: int | None = None, raw: bool = False) -> tuple[int, int, int]:
    """Write a built version's ids to CSV (one column, `<id type>` or `<id type>_<hash>`).
    Returns (version, rows written, members without that id). Written to a temporary file and
    renamed, so a failed export leaves no half file. The file is for people, who open it in a
    spreadsheet: a text id that would run as a formula gets a leading `'` (see
    connectors/spreadsheet.py) unless `raw`, for a machine that reads the ids exactly."""
    audience = project.audience(name)
    id_type = id_type or audience.id_type
    if hash_name not in HASHES:
        raise UserError(f"--hash {hash_name!r} is not one of {', '.join(HASHES)}")
    if id_type not in project.catalog.tags and id_type != "one_id":
        raise UserError(f"--id-type {id_type!r}: user_tags has no such id column")
    built = latest(wh, name) if version is None else next(
        (v for v in _kept(wh, name) if v["version"] == version), None)
    if built is None:
        raise UserError(f"audience {name!r} has no built version"
                        + (f" {version}" if version else "; run oa audience build " + name))
    v = int(built["version"])
    if id_type == audience.id_type:
        sql = (f"select id_value from {MEMBERS} where audience = %s and version = %s "
               "order by id_value")
    else:
        column = exp.column(id_type, table="t", quoted=True).sql(dialect=wh.engine)
        sql = (f"select {column} from {MEMBERS} as m join {qualified('marts', 'user_tags')} as t "
               f"on t.one_id = m.one_id where m.audience = %s and m.version = %s order by 1")
    rows = wh.query(sql, [name, v])
    ids = [r[0] for r in rows if r[0] is not None]
    digest = {"md5": hashlib.md5, "sha256": hashlib.sha256}.get(hash_name)
    header = id_type if hash_name == "none" else f"{id_type}_{hash_name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([header])
            for value in ids:
                cell = digest(str(value).encode()).hexdigest() if digest else value
                writer.writerow([cell if raw else neutralise(cell)])
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return v, len(ids), len(rows) - len(ids)


def _kept(wh: Warehouse, name: str) -> list[dict]:
    from openaudience.segments.engine import versions

    return versions(wh, name)
