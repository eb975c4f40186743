"""Reading the project's YAML files (audiences, destinations) with line numbers, so that every
error names the file, the line and the field."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from orchestration.errors import UserError

M = TypeVar("M", bound=BaseModel)


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


def read_yaml(path: Path, errors: type[FileErrors] = FileErrors,
              what: str = "a mapping") -> tuple[dict[str, Any], dict[tuple, int]]:
    """The mapping of a YAML file and the line of every key, or `errors` naming the line."""
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
        raise errors([Problem(path, line, "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]
                     ) from exc
    if not isinstance(data, dict) or node is None:
        raise errors([Problem(path, 1, "", f"the file must be {what}")])
    return data, lines_of(node)


def validate_model(model: type[M], data: dict, path: Path, lines: dict[tuple, int],
                   errors: type[FileErrors] = FileErrors) -> M:
    """`model` from `data`, or `errors` with one problem per pydantic error, each at its line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            message = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(path, line_of(lines, loc), field_of(loc), message))
        raise errors(problems) from None
