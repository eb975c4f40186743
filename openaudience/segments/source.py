"""Reading audience files: YAML with line numbers, the typed model, and the checks against
what the project declares (tags, behaviour types, channels, RFM and AIPL models). Every error
names the file, the line and the field."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from openaudience.conditions import check_condition, modernize, reporter, validate_rewritten
from openaudience.core.errors import UserError
from openaudience.core.event_codes import event_codes
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.yaml_files import (
    FileErrors,
    Problem,
    field_of,
    line_of,
    load_yaml,
    read_yaml,
    suggest,
)
from openaudience.segments.spec import ID_TYPES, MAX_SET_DEPTH, Audience, Operand
from openaudience.segments.uploads import Upload, UploadError, read_upload

AUDIENCE_DIR = PROJECT_ROOT / "audiences"


class AudienceErrors(FileErrors):
    """Problems of one or more audience files."""


@dataclass
class Catalog:
    """What an audience may refer to, read from the project's seeds and model YAML."""

    tags: dict[str, str]           # tag name -> tag type
    delimiters: dict[str, str]     # multi-value tag -> its separator
    event_types: set[str]
    channels: set[str]
    rfm_models: dict[str, dict[str, int]]  # RFM model -> its highest r, f and m score
    rfm_segments: set[str]
    aipl_models: set[str]
    id_types: set[str] = field(default_factory=lambda: set(ID_TYPES))
    recommend_tasks: set[str] = field(default_factory=set)  # the tasks of ml/recommend.yml
    pools: set[str] = field(default_factory=set)            # the product pools of ml/pools/
    live_event_types: set[str] = field(default_factory=set)  # the event codes of events/*.yml

    @classmethod
    def from_project(cls, root: Path = PROJECT_ROOT) -> Catalog:
        def rows(name: str) -> list[dict[str, str]]:
            with (root / "seeds" / name).open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))

        rfm, _ = load_yaml(root / "models/marts/rfm/_rfm__models.yml")
        aipl, _ = load_yaml(root / "models/marts/aipl/_aipl__models.yml")
        aipl_node = next(m for m in aipl["models"] if m["name"] == "aipl_daily")
        # the id columns of user_tags filter like text tags ("has a mobile": is_not_null; everyone:
        # one_id is_not_null)
        ids = {name: "text" for name in ID_TYPES}
        return cls(
            tags={**ids, **{r["tag_name"]: r["tag_type"] for r in rows("tag_catalogue.csv")}},
            delimiters={r["tag_name"]: r["delimiter"] for r in rows("tag_catalogue.csv")
                        if r["tag_type"] == "multi_value" and r["delimiter"]},
            event_types=({r["event_type"] for r in rows("dim_behavior_types.csv")}
                         | event_codes(root / "events")),
            # an event code that is also a seed type (say purchase) is built like the shop's
            live_event_types=(event_codes(root / "events")
                              - {r["event_type"] for r in rows("dim_behavior_types.csv")}),
            channels={r["channel"] for r in rows("dim_channels.csv")},
            # a metric's scores are 1 to its number of breakpoints (macros/rfm/rfm_model.sql)
            rfm_models={m["name"]: {k: len(m["config"]["meta"]["rfm"][metric]) for k, metric in
                                    (("r", "recency_days"), ("f", "frequency"), ("m", "monetary"))}
                        for m in rfm["models"] if "rfm" in (m.get("config", {}).get("meta") or {})},
            rfm_segments={r["rfm_segment"] for r in rows("rfm_segments.csv")},
            aipl_models={m["name"] for m in aipl_node["config"]["meta"]["aipl"]["models"]},
            id_types={r["id_type"] for r in rows("id_types.csv")},
            recommend_tasks=_task_names(root / "ml" / "recommend.yml"),
            pools={p.stem for p in (root / "ml" / "pools").glob("*.yml")},
        )


def _task_names(path: Path) -> set[str]:
    """The task names of ml/recommend.yml (the file itself is checked by `oa ml`)."""
    try:
        data, _ = load_yaml(path)
    except UserError:
        return set()
    tasks = data.get("tasks") if isinstance(data, dict) else None
    return {t["name"] for t in tasks or [] if isinstance(t, dict) and isinstance(t.get("name"), str)}


class _Env:
    """What the leaves of one audience file are checked against: the catalog, and reading the
    upload files it names."""

    def __init__(self, catalog: Catalog, read_upload) -> None:
        self._catalog, self.read_upload = catalog, read_upload

    def __getattr__(self, name: str):
        return getattr(self._catalog, name)


@dataclass
class _Loaded:
    audience: Audience
    lines: dict[tuple, int]
    uploads: dict[tuple[str, str], Upload]


def _load(path: Path, catalog: Catalog) -> _Loaded:
    data, lines = read_yaml(path, AudienceErrors, "a mapping with name and where")
    rewritten = []
    if "where" in data:
        rewritten.append(modernize(data["where"], ("where",)))
        data = {**data, "where": rewritten[0].data}
    audience = validate_rewritten(Audience, data, path, lines, rewritten, AudienceErrors)
    problems: list[Problem] = []
    uploads: dict[tuple[str, str], Upload] = {}
    report = reporter(path, lines, problems, rewritten)

    def read(leaf, loc: tuple) -> None:
        try:  # resolved in the audience file's folder, and confined to it, by read_upload
            uploads[(leaf.file, leaf.id_type)] = read_upload(leaf.file, path.parent / leaf.file,
                                                             leaf.id_type, path.parent)
        except UploadError as exc:
            where = f" ({leaf.file}:{exc.line})" if exc.line else ""
            report(loc + ("file",), f"{exc}{where}")

    if path.stem != audience.name:
        report(("name",), f"the file is {path.name}; name it {audience.name}.yml or the name {path.stem}")
    if audience.where is not None:
        check_condition(audience.where, ("where",), _Env(catalog, read), report)
    if audience.limit and audience.limit.order_by:
        tag = audience.limit.order_by.tag
        if tag not in catalog.tags:
            report(("limit", "order_by", "tag"), f"unknown tag {tag!r}{suggest(tag, catalog.tags)}")
    if problems:
        raise AudienceErrors(problems)
    return _Loaded(audience, lines, uploads)


def load_audience(path: Path, catalog: Catalog | None = None) -> Audience:
    """The typed audience of one file, or AudienceErrors listing every problem with its line.
    References to other audiences are checked by load_project."""
    return _load(path, catalog or Catalog.from_project()).audience


def references(audience: Audience) -> list[tuple[tuple, str, bool]]:
    """(location, audience name, is a set operand) of every other audience it reads."""
    found: list[tuple[tuple, str, bool]] = []

    def operands(ops: list[Operand], loc: tuple) -> None:
        for i, op in enumerate(ops):
            if op.audience is not None:
                found.append(((*loc, i), op.audience, True))
            else:
                operands(getattr(op, op.op), (*loc, i, op.op))

    if audience.where is not None:
        for loc, cond in audience.where.walk():
            if cond.kind == "audience":
                found.append(((*loc, "audience", "name"), cond.audience.name, False))
    else:
        operands(audience.operands(), (audience.set_op,))
    return found


def _own_depth(ops: list[Operand]) -> int:
    """Nesting of set operations inside one file: `union: [a, b]` is 1."""
    return 1 + max((_own_depth(getattr(o, o.op)) for o in ops if o.op), default=0)


@dataclass
class Project:
    """Every audience file of a folder, checked together: references resolve, set operations
    combine audiences of one id type, no cycles, at most MAX_SET_DEPTH layers of set operations."""

    folder: Path
    catalog: Catalog
    audiences: dict[str, Audience]
    paths: dict[str, Path]
    uploads: dict[tuple[str, str], Upload]  # (file, id type) -> the list read
    order: list[str]                       # every audience after the audiences it reads
    external: dict[str, str] = field(default_factory=dict)  # audiences journeys generate -> journey

    def audience(self, name: str) -> Audience:
        if name not in self.audiences:
            raise UserError(f"no audience {name!r} in {self.folder}{suggest(name, self.audiences)}")
        return self.audiences[name]

    def reads(self, name: str) -> set[str]:
        """The audiences it reads (none for one a journey generates)."""
        if name not in self.audiences:
            return set()
        return {ref for _, ref, _ in references(self.audiences[name])}

    def upstream(self, names: list[str]) -> list[str]:
        """The audiences named and every audience they read, in build order."""
        wanted, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(self.reads(name))
        return [n for n in self.order if n in wanted]

    def reads_models(self, name: str) -> bool:
        """Whether the audience, or one it reads, needs a model's output (repurchase scores,
        recommendations): it can be built only after the models ran."""
        return any(cond.kind in ("score", "recommended") for upstream in self.upstream([name])
                   for _, cond in self.audiences[upstream].condition().walk())

    def layers(self, names: list[str]) -> list[list[str]]:
        """`names` split so that each layer reads only audiences of earlier layers (or outside
        the set): the batch evaluator runs one layer per pass."""
        chosen, layer_of = set(names), {}
        for name in self.order:
            if name in chosen:
                layer_of[name] = 1 + max((layer_of.get(r, -1) for r in self.reads(name)
                                          if r in chosen), default=-1)
        out: list[list[str]] = [[] for _ in range(max(layer_of.values(), default=-1) + 1)]
        for name in self.order:
            if name in layer_of:
                out[layer_of[name]].append(name)
        return out

    def upload_digests(self) -> dict[tuple[str, str], str]:
        return {key: u.digest for key, u in self.uploads.items()}

    def definition_hash(self, name: str) -> str:
        """Changes when the definition does (or an upload it reads); not on comments or layout."""
        audience = self.audiences[name]
        body = audience.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["_uploads"] = sorted(self.uploads[(u.file, u.id_type)].digest
                                  for u in audience.condition().leaves("upload"))
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def compile(self, name: str, today: dt.date, relations=None):
        from openaudience.segments.compiler import compile_audience

        return compile_audience(self.audience(name), self.catalog, today, relations,
                                self.upload_digests())


def load_project(folder: Path = AUDIENCE_DIR, catalog: Catalog | None = None,
                 files: list[Path] | None = None) -> Project:
    """Load and check every audience file of `folder` (problems of all files together). `files`
    names extra files (e.g. a definition outside the folder) that replace their namesakes."""
    catalog = catalog or Catalog.from_project()
    external = {name: journey for name, journey in generated_audiences(folder.parent / "journeys").items()
                if name not in {p.stem for p in audience_files(folder)}}
    problems: list[Problem] = []
    loaded: dict[str, _Loaded] = {}
    paths: dict[str, Path] = {}
    by_stem = {p.stem: p for p in audience_files(folder)}
    for extra in files or []:
        by_stem[extra.stem] = extra
    for path in by_stem.values():
        try:
            item = _load(path, catalog)
        except AudienceErrors as exc:
            problems.extend(exc.problems)
            continue
        loaded[item.audience.name] = item
        paths[item.audience.name] = path

    def report(name: str, loc: tuple, message: str) -> None:
        item = loaded[name]
        problems.append(Problem(paths[name], line_of(item.lines, loc), field_of(loc), message))

    graph: dict[str, set[str]] = {}
    for name, item in loaded.items():
        graph[name] = set()
        for loc, ref, operand in references(item.audience):
            if ref == name:
                report(name, loc, f"audience {name!r} cannot read itself")
            elif ref in external and ref not in by_stem:
                if operand and item.audience.id_type != "one_id":
                    report(name, loc, f"set operations combine audiences of one id type: {ref!r} (generated "
                                      f"by journey {external[ref]}) saves one_id, {name!r} saves "
                                      f"{item.audience.id_type}")
            elif ref not in loaded:
                known = set(by_stem) - {name}
                hint = (" (its file has errors)" if ref in by_stem
                        else suggest(ref, known) or f" (no audiences/{ref}.yml)")
                report(name, loc, f"unknown audience {ref!r}{hint}")
            else:
                graph[name].add(ref)
                other = loaded[ref].audience
                if operand and other.id_type != item.audience.id_type:
                    report(name, loc, f"set operations combine audiences of one id type: {ref!r} "
                                      f"saves {other.id_type}, {name!r} saves {item.audience.id_type}")
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        # reversed, [x, y, x]: each reads the next; reported at x's reference to y
        cycle = list(reversed(exc.args[1]))
        first, closing = cycle[0], cycle[1]
        loc = next(loc for loc, ref, _ in references(loaded[first].audience) if ref == closing)
        report(first, loc, "audiences read each other in a cycle: " + " -> ".join(cycle))
        order = []
    if order:
        depth: dict[str, int] = {}
        for name in order:
            audience = loaded[name].audience
            if audience.set_op is None:
                depth[name] = 0
                continue
            below = max((depth.get(ref, 0) for _, ref, op in references(audience) if op), default=0)
            depth[name] = _own_depth(audience.operands()) + below
            if depth[name] > MAX_SET_DEPTH:
                report(name, (audience.set_op,), f"{depth[name]} layers of set operations (counting "
                                                 f"the audiences it combines); at most {MAX_SET_DEPTH}")
    if problems:
        raise AudienceErrors(problems)
    uploads = {key: u for item in loaded.values() for key, u in item.uploads.items()}
    return Project(folder=folder, catalog=catalog, audiences={n: i.audience for n, i in loaded.items()},
                   paths=paths, uploads=uploads, order=order, external=external)


def generated_audiences(folder: Path) -> dict[str, str]:
    """The audiences journeys generate (name -> journey file stem), read leniently: what the
    audience files may name before the journeys themselves are checked."""
    out: dict[str, str] = {}

    def scan(value: Any, stem: str) -> None:
        if isinstance(value, dict):
            g = value.get("generate_audience")
            if isinstance(g, dict) and isinstance(g.get("name"), str):
                out.setdefault(g["name"], stem)
            for v in value.values():
                scan(v, stem)
        elif isinstance(value, list):
            for v in value:
                scan(v, stem)

    files = sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    for path in files:
        try:
            data, _ = load_yaml(path)
        except UserError:
            continue
        scan(data, path.stem)
    return out


def audience_files(folder: Path = AUDIENCE_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("*.yml")) + sorted(folder.glob("*.yaml"))


def find_audience(name: str, folder: Path = AUDIENCE_DIR) -> Path:
    for path in audience_files(folder):
        if path.stem == name:
            return path
    known = [p.stem for p in audience_files(folder)]
    raise UserError(f"no audience {name!r} in {folder}{suggest(name, set(known))}")
