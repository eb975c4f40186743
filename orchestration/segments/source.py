"""Reading audience files: YAML with line numbers, the typed model, and the checks against
what the project declares (tags, behaviour types, channels, RFM and AIPL models). Every error
names the file, the line and the field."""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestration.errors import UserError
from orchestration.segments.spec import ID_TYPES, MAX_VALUES, OPS_BY_TYPE, Audience, Condition
from orchestration.settings import PROJECT_ROOT

AUDIENCE_DIR = PROJECT_ROOT / "audiences"


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class AudienceErrors(UserError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Line (1-based) of every mapping key and list item, by its path."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            out[sub] = key.start_mark.line + 1
            _lines(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)
    return out


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple("not" if part == "not_" else part for part in loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _field(loc: tuple) -> str:
    parts = []
    for part in loc:
        part = "not" if part == "not_" else part
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts).lstrip(".")


@dataclass
class Catalog:
    """What an audience may refer to, read from the project's seeds and model YAML."""

    tags: dict[str, str]           # tag name -> tag type
    delimiters: dict[str, str]     # multi-value tag -> its separator
    event_types: set[str]
    channels: set[str]
    rfm_models: dict[str, None]
    rfm_segments: set[str]
    aipl_models: set[str]

    @classmethod
    def from_project(cls, root: Path = PROJECT_ROOT) -> Catalog:
        def rows(name: str) -> list[dict[str, str]]:
            with (root / "seeds" / name).open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))

        rfm = yaml.safe_load((root / "models/marts/rfm/_rfm__models.yml").read_text())
        aipl = yaml.safe_load((root / "models/marts/aipl/_aipl__models.yml").read_text())
        aipl_node = next(m for m in aipl["models"] if m["name"] == "aipl_daily")
        # the id columns of user_tags filter like text tags ("has a mobile": is_not_null)
        ids = {name: "text" for name in ID_TYPES if name != "one_id"}
        return cls(
            tags={**ids, **{r["tag_name"]: r["tag_type"] for r in rows("tag_catalogue.csv")}},
            delimiters={r["tag_name"]: r["delimiter"] for r in rows("tag_catalogue.csv")
                        if r["tag_type"] == "multi_value" and r["delimiter"]},
            event_types={r["event_type"] for r in rows("dim_behavior_types.csv")},
            channels={r["channel"] for r in rows("dim_channels.csv")},
            rfm_models={m["name"]: None for m in rfm["models"]
                        if "rfm" in (m.get("config", {}).get("meta") or {})},
            rfm_segments={r["rfm_segment"] for r in rows("rfm_segments.csv")},
            aipl_models={m["name"] for m in aipl_node["config"]["meta"]["aipl"]["models"]},
        )


def _suggest(word: str, choices: set[str] | dict) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check(cond: Condition, loc: tuple, catalog: Catalog, report) -> None:
    kind = cond.kind
    if kind in ("all", "any"):
        for i, child in enumerate(getattr(cond, kind)):
            _check(child, (*loc, kind, i), catalog, report)
    elif kind == "not":
        _check(cond.not_, (*loc, "not"), catalog, report)
    elif kind == "tag":
        leaf, here = cond.tag, (*loc, "tag")
        tag_type = catalog.tags.get(leaf.name)
        if tag_type is None:
            report(here + ("name",), f"unknown tag {leaf.name!r}{_suggest(leaf.name, catalog.tags)}")
            return
        allowed = OPS_BY_TYPE.get(tag_type, ())
        if leaf.op not in allowed:
            report(here + (leaf.op,), f"operator {leaf.op!r} does not apply to {tag_type} tag "
                                       f"{leaf.name!r} (use {', '.join(allowed)})")
            return
        _check_value(leaf, tag_type, here + (leaf.op,), report)
    elif kind == "behavior":
        leaf, here = cond.behavior, (*loc, "behavior")
        key = "did" if leaf.did else "did_not"
        if leaf.event_type not in catalog.event_types:
            report(here + (key,), f"unknown behaviour type {leaf.event_type!r}"
                                  f"{_suggest(leaf.event_type, catalog.event_types)}")
        for ch in leaf.channels or []:
            if ch not in catalog.channels:
                report(here + ("channels",), f"unknown channel {ch!r}{_suggest(ch, catalog.channels)}")
    elif kind == "rfm":
        leaf, here = cond.rfm, (*loc, "rfm")
        if leaf.model not in catalog.rfm_models:
            report(here + ("model",), f"unknown RFM model {leaf.model!r}"
                                      f"{_suggest(leaf.model, catalog.rfm_models)}")
        for seg in leaf.segments or []:
            if seg not in catalog.rfm_segments:
                report(here + ("segments",), f"unknown RFM segment {seg!r}"
                                             f"{_suggest(seg, catalog.rfm_segments)}")
    elif kind == "aipl":
        leaf, here = cond.aipl, (*loc, "aipl")
        if leaf.model not in catalog.aipl_models:
            report(here + ("model",), f"unknown AIPL model {leaf.model!r}"
                                      f"{_suggest(leaf.model, catalog.aipl_models)}")


def _check_value(leaf, tag_type: str, loc: tuple, report) -> None:
    op, value = leaf.op, leaf.value
    if op in ("is_null", "is_not_null", "this_week", "this_month"):
        if value not in (True, None):
            report(loc, f"{op} takes no value (write {op}: true)")
        return
    if op == "between":
        if not (isinstance(value, list) and len(value) == 2):
            report(loc, "between takes two values: [low, high]")
        return
    if op in ("last_days", "before_days_ago"):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            report(loc, f"{op} takes a whole number of days >= 1")
        return
    if op in ("=", "!=", ">", ">=", "<", "<="):
        if not isinstance(value, int | float) or isinstance(value, bool):
            report(loc, f"{op} on a numeric tag takes a number, not {value!r}")
        return
    values = leaf.values()
    if len(values) > MAX_VALUES:
        report(loc, f"{len(values)} values; a condition takes at most {MAX_VALUES}")
    if any(not isinstance(v, str | int | float) or isinstance(v, bool) for v in values):
        report(loc, "values must be strings or numbers")


def load_audience(path: Path, catalog: Catalog | None = None) -> Audience:
    """The typed audience of one file, or AudienceErrors listing every problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise AudienceErrors([Problem(path, line, "", f"not valid YAML: {exc.problem or exc}")]) from exc
    if not isinstance(data, dict):
        raise AudienceErrors([Problem(path, 1, "", "an audience file is a mapping with name and where")])
    lines = _lines(node)
    try:
        audience = Audience.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            message = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(path, _line_of(lines, loc), _field(loc), message))
        raise AudienceErrors(problems) from None
    problems: list[Problem] = []

    def report(loc: tuple, message: str) -> None:
        problems.append(Problem(path, _line_of(lines, loc), _field(loc), message))

    if path.stem != audience.name:
        report(("name",), f"the file is {path.name}; name it {audience.name}.yml or the name {path.stem}")
    _check(audience.where, ("where",), catalog or Catalog.from_project(), report)
    if problems:
        raise AudienceErrors(problems)
    return audience


def audience_files(folder: Path = AUDIENCE_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("*.yml")) + sorted(folder.glob("*.yaml"))


def find_audience(name: str, folder: Path = AUDIENCE_DIR) -> Path:
    for path in audience_files(folder):
        if path.stem == name:
            return path
    known = [p.stem for p in audience_files(folder)]
    raise UserError(f"no audience {name!r} in {folder}{_suggest(name, set(known))}")
