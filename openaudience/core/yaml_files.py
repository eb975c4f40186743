"""Reading the project's YAML files (audiences, destinations, product pools, ml/recommend.yml,
the meta of the dbt models that Python reads) with line numbers, so that every error names the
file, the line and the field.

Every reader goes through `load_yaml`, which refuses what a plain `yaml.safe_load` accepts but a
person never means: a key written twice in one mapping (the second silently wins), a date that
does not exist (`2026-02-30`, which safe_load turns into a traceback), and input that costs far
more to read than its size suggests. The bounds are checked on the parser's event stream before
any node is built: the file's size, the nesting depth, and the number of values the document
holds once every alias is expanded into a copy of its anchor. The last one stops a "billion
laughs" file: the count is exact (each alias adds the size of what it names, so no arrangement of
anchors gets past it), and the file is refused at the first alias that takes it over the bound,
before a single node is built.
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from openaudience.core.errors import UserError

M = TypeVar("M", bound=BaseModel)

MAX_BYTES = 1_000_000
"""A project YAML file is configuration written by people; a megabyte is a hundred times the
largest one the project ships."""
MAX_DEPTH = 64
"""Nesting of mappings and lists; far deeper input would exhaust the composer's recursion."""
MAX_VALUES = 100_000
"""Values (scalars, mappings, lists) of a document with every alias expanded: whatever walks the
data later (pydantic, hashing, SQL generation) pays for the expanded tree, not for the text."""

_KINDS = {"tag:yaml.org,2002:timestamp": "a date", "tag:yaml.org,2002:int": "a whole number",
          "tag:yaml.org,2002:float": "a number"}
_MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class FileErrors(UserError):
    """Problems found in one or more YAML files, each with its file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _Refused(Exception):
    """Problems at lines (line, field, message); load_yaml turns them into the caller's
    FileErrors. Not a YAMLError, so it leaves PyYAML's constructor untouched."""

    def __init__(self, line: int, message: str, field: str = "",
                 more: tuple[tuple[int, str, str], ...] = ()) -> None:
        super().__init__(message)
        self.found = [(line, field, message), *more]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader whose scalars fail at their line: an impossible date or an integer of
    thousands of digits raise a bare ValueError deep inside safe_load otherwise. `paths` holds
    the location of every node (filled by _walk) so that such an error names its field."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.paths: dict[int, tuple] = {}

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            shown = str(node.value)[:40] if isinstance(node, yaml.ScalarNode) else node.tag
            kind = _KINDS.get(node.tag, f"a {node.tag.rsplit(':', 1)[-1]}")
            reason = str(exc).split(":")[0]  # Python's int limit goes on to name a sys function
            raise _Refused(node.start_mark.line + 1, f"{shown!r} is not {kind} ({reason})",
                           field_of(self.paths.get(id(node), ()))) from None


def _read_text(path: Path) -> str:
    """The file as text, refusing a file over MAX_BYTES before reading it whole."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(raw) > MAX_BYTES:
        raise _Refused(0, f"the file is larger than {MAX_BYTES:,} bytes, the most a project YAML file "
                          "may be; split it")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise _Refused(line, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None


def _check_bounds(text: str) -> None:
    """Depth and expanded size from the event stream, which the parser produces without
    recursion and without building anything. libyaml's parser, when PyYAML has it, is some thirty
    times faster; on a syntax error the pure-Python parser (the composer's) runs instead, so that
    the message is the one the composer would give and no input gets past the bounds by parsing
    differently in the two."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            _count(yaml.parse(text, Loader=fast))
            return
        except yaml.YAMLError:
            pass
    _count(yaml.parse(text, Loader=_Loader))


def _count(events) -> None:
    """Refuses at the first event past MAX_DEPTH or MAX_VALUES; an alias counts the expanded size
    of its anchor, so the count is that of the tree a reader would walk."""
    open_sizes: list[int] = []             # values so far in each open mapping or list
    open_anchors: list[str | None] = []
    sizes: dict[str, int] = {}             # expanded size of every closed anchor
    total = 0
    for event in events:
        line = event.start_mark.line + 1
        added = 0
        if isinstance(event, yaml.DocumentStartEvent):
            sizes.clear()
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_sizes) >= MAX_DEPTH:
                raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep")
            open_sizes.append(1)
            open_anchors.append(event.anchor)
            total += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            added = open_sizes.pop()
            anchor = open_anchors.pop()
            if anchor is not None:
                sizes[anchor] = added
        elif isinstance(event, yaml.ScalarEvent):
            added = 1
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            added = _alias_size(event.anchor, sizes, open_anchors, line)
            total += added
            if total > MAX_VALUES:
                raise _Refused(line, f"too many aliases: expanding *{event.anchor} and the aliases "
                                     f"before it makes more than {MAX_VALUES:,} values; write the values "
                                     "out instead of nesting aliases")
        if open_sizes and added:
            open_sizes[-1] += added
        if total > MAX_VALUES:
            raise _Refused(line, f"more than {MAX_VALUES:,} values in one file; split it")


def _alias_size(anchor: str, sizes: dict[str, int], open_anchors: list[str | None], line: int) -> int:
    if anchor in sizes:
        return sizes[anchor]
    if anchor in open_anchors:
        raise _Refused(line, f"alias *{anchor} is inside the value it names (a recursive structure); "
                             "a value cannot contain itself")
    raise _Refused(line, f"alias *{anchor} names no anchor (&{anchor}) written before it")


def _walk(node: yaml.Node, path: tuple, loader: _Loader) -> list[tuple[int, str, str]]:
    """Records where each node is, and returns (line, field, message) of every key written
    twice in one mapping, at the line of its second occurrence; a node reached again through an
    alias is walked once."""
    found: list[tuple[int, str, str]] = []
    if id(node) in loader.paths:
        return found
    loader.paths[id(node)] = path
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                name = loader.construct_object(key, deep=True)
                line = key.start_mark.line + 1
                if name in first:
                    found.append((line, field_of((*path, key.value)),
                                  f"key {key.value!r} appears twice (first at line {first[name]}); keep one"))
                else:
                    first[name] = line
            found += _walk(value, (*path, key.value), loader)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _walk(item, (*path, i), loader)
    return found


def _parse(text: str) -> tuple[Any, yaml.Node | None]:
    """The data and the node tree of a text within the bounds, or _Refused / yaml.YAMLError."""
    _check_bounds(text)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        duplicates = _walk(node, (), loader)
        if duplicates:
            (line, field, message), *more = duplicates
            raise _Refused(line, message, field, tuple(more))
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def load_yaml(path: Path, errors: type[FileErrors] = FileErrors) -> tuple[Any, dict[tuple, int]]:
    """The data of a YAML file (any YAML value; None when empty) and the line of every key, or
    `errors` naming the line: not YAML, a duplicate key, an impossible date, or beyond the bounds."""
    try:
        data, node = _parse(_read_text(path))
    except _Refused as exc:
        raise errors([Problem(path, line, field, message) for line, field, message in exc.found]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise errors([Problem(path, line, "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]
                     ) from None
    return data, (lines_of(node) if node is not None else {(): 1})


def read_yaml(path: Path, errors: type[FileErrors] = FileErrors,
              what: str = "a mapping") -> tuple[dict[str, Any], dict[tuple, int]]:
    """The mapping of a YAML file and the line of every key, or `errors` naming the line."""
    data, lines = load_yaml(path, errors)
    if not isinstance(data, dict):
        raise errors([Problem(path, 1, "", f"the file must be {what}")])
    return data, lines


def lines_of(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Line (1-based) of every mapping key and list item, by its path."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            out[sub] = key.start_mark.line + 1
            lines_of(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines_of(item, (*path, i), out)
    return out


def line_of(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple("not" if part == "not_" else part for part in loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def field_of(loc: tuple) -> str:
    parts = []
    for part in loc:
        part = "not" if part == "not_" else part
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts).lstrip(".")


def suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_model(model: type[M], data: Any, path: Path, lines: dict[tuple, int],
                   errors: type[FileErrors] = FileErrors, at: tuple = ()) -> M:
    """`model` from `data`, or `errors` with one problem per pydantic error, each at its line.
    `at` is where `data` sits in the file, for a model read from part of it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = (*at, *(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
            message = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(path, line_of(lines, loc), field_of(loc), message))
        raise errors(problems) from None


def as_date(value: Any) -> dt.date | None:
    """A date written in YAML (unquoted, or a quoted ISO date), or None for anything else; a
    date-time is not a date (the compiler compares days)."""
    if isinstance(value, dt.datetime):
        return None
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None
