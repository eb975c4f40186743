"""Old spellings, accepted for one release with a message naming the file, the line and the new
spelling:

| Old | New |
| --- | --- |
| tag operator `not_null` | `is_not_null` |
| tag operator `within_last_days` | `last_days` |
| `{tag: category, in: [...]}` (pools) | `{tag: {name: category, in: [...]}}` |
| behaviour `event_type: login` (AIPL rules) | `did: login` |
| a list `[a, {or: b}, {and: c}]` read left to right (AIPL rules) | `all: [{any: [a, b]}, c]` |

`modernize` rewrites a condition written in YAML into the current spelling before it is
validated, and keeps where each rewritten part was in the file, so that an error in it still
names the line and field the person wrote. The messages go to the logger of this package, once
per process for each place."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openaudience.conditions.operators import DEPRECATED_OPS
from openaudience.core.yaml_files import field_of, line_of

log = logging.getLogger("openaudience.conditions")
_told: set[str] = set()

DEPRECATIONS = (
    ("not_null", "is_not_null"),
    ("within_last_days", "last_days"),
    ("{tag: <name>, <operator>: <value>}", "{tag: {name: <name>, <operator>: <value>}}"),
    ("behavior: {event_type: <type>, ...}", "behavior: {did: <type>, ...}"),
    ("[a, {or: b}, {and: c}]", "all: [{any: [a, b]}, c]"),
)


@dataclass
class Rewritten:
    """A condition in the current spelling, where its parts were, and what was old in it."""

    data: Any
    places: dict[tuple, tuple] = field(default_factory=dict)   # new location -> written location
    notes: list[tuple[tuple, str]] = field(default_factory=list)  # (written location, message)
    problems: list[tuple[tuple, str]] = field(default_factory=list)  # old spellings that cannot be read

    def written(self, loc: tuple) -> tuple:
        """The location in the file of `loc` in the rewritten data."""
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.places:
                return (*self.places[loc[:n]], *loc[n:])
        return loc


def modernize(data: Any, at: tuple, lists: bool = False, written_at: tuple | None = None) -> Rewritten:
    """`data` (a condition at `at` in the data validated, at `written_at` in its file, by
    default the same place) in the current spelling. `lists`: a list where a condition belongs
    is the AIPL rules' left-to-right form."""
    out = Rewritten(None)
    out.data = _condition(data, at, at if written_at is None else written_at, lists, out)
    return out


def _condition(data: Any, new: tuple, old: tuple, lists: bool, out: Rewritten) -> Any:
    if new != old:
        out.places[new] = old
    if lists and isinstance(data, list) and data:
        return _fold(data, new, old, lists, out)
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if isinstance(data.get("tag"), str):
        name = data.pop("tag")
        op = next(iter(data), "<operator>")
        out.notes.append((old, f"write this tag condition as {{tag: {{name: {name}, {op}: ...}}}}; "
                               f"{{tag: {name}, {op}: ...}} is the old spelling"))
        out.places[(*new, "tag")] = old
        out.places[(*new, "tag", "name")] = (*old, "tag")
        data = {"tag": {"name": name, **data}}
        old_tag = old
    else:
        old_tag = (*old, "tag")
    for key in ("all", "any"):
        if isinstance(data.get(key), list):
            data[key] = [_condition(c, (*new, key, i), (*old, key, i), lists, out)
                         for i, c in enumerate(data[key])]
    if "not" in data:
        data["not"] = _condition(data["not"], (*new, "not"), (*old, "not"), lists, out)
    if isinstance(data.get("tag"), dict):
        data["tag"] = _tag(data["tag"], (*new, "tag"), old_tag, out)
    if isinstance(data.get("behavior"), dict) and "event_type" in data["behavior"]:
        behavior = data["behavior"]
        if "did" not in behavior and "did_not" not in behavior:
            out.notes.append(((*old, "behavior", "event_type"),
                              f"write did: {behavior['event_type']}; event_type is the old spelling"))
            out.places[(*new, "behavior", "did")] = (*old, "behavior", "event_type")
            data["behavior"] = {("did" if k == "event_type" else k): v for k, v in behavior.items()}
    return data


def _tag(tag: dict, new: tuple, old: tuple, out: Rewritten) -> dict:
    renamed = {}
    for key, value in tag.items():
        if key in DEPRECATED_OPS:
            out.notes.append(((*old, key), f"write {DEPRECATED_OPS[key]}; {key} is the old spelling"))
            out.places[(*new, DEPRECATED_OPS[key])] = (*old, key)
            key = DEPRECATED_OPS[key]
        renamed[key] = value
    return renamed


def _fold(items: list, new: tuple, old: tuple, lists: bool, out: Rewritten) -> Any:
    """[a, {or: b}, {and: c}] as ((a or b) and c), with runs of one joiner flattened."""
    # each part: (its written location, its data) before the new locations are known
    tree: Any = ("leaf", (*old, 0), items[0])
    for i, item in enumerate(items[1:], start=1):
        if not (isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("and", "or")):
            out.problems.append(((*old, i), "in the old list form every item after the first is "
                                            "{and: condition} or {or: condition}; better, write the "
                                            "conditions under any: and all:"))
            continue
        joiner, cond = next(iter(item.items()))
        kind = "any" if joiner == "or" else "all"
        part = ("leaf", (*old, i, joiner), cond)
        if tree[0] == "group" and tree[1] == kind:
            tree[2].append(part)
        else:
            tree = ("group", kind, [tree, part])
    out.notes.append((old, "write these conditions nested under any: and all: instead of a list "
                           "read left to right ([a, {or: b}, {and: c}] is all: [{any: [a, b]}, c]); "
                           "the list is the old spelling"))
    return _emit(tree, new, lists, out)


def _emit(tree: Any, new: tuple, lists: bool, out: Rewritten) -> Any:
    if tree[0] == "leaf":
        return _condition(tree[2], new, tree[1], lists, out)
    _, kind, parts = tree
    return {kind: [_emit(p, (*new, kind, i), lists, out) for i, p in enumerate(parts)]}


def announce(path: Path, lines: dict[tuple, int], notes: list[tuple[tuple, str]]) -> list[str]:
    """Logs each old spelling once per process with its file, line and field; returns them."""
    messages = []
    for loc, message in notes:
        text = f"{path}:{line_of(lines, loc)}: {field_of(loc)}: deprecated: {message}"
        messages.append(text)
        if text not in _told:
            _told.add(text)
            log.warning(text)
    return messages
