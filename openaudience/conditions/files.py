"""Conditions read from YAML files: the current spelling, validated, errors at their lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from openaudience.conditions.deprecations import Rewritten, announce
from openaudience.core.yaml_files import FileErrors, Problem, field_of, line_of

M = TypeVar("M", bound=BaseModel)


def validate_rewritten(model: type[M], data: Any, path: Path, lines: dict[tuple, int],
                       rewritten: list[Rewritten], errors: type[FileErrors] = FileErrors,
                       at: tuple = ()) -> M:
    """`model` from `data`, whose conditions `rewritten` put in the current spelling: the old
    spellings are announced, and every error names the line and field as written in the file."""
    problems: list[Problem] = []

    def place(loc: tuple) -> tuple:
        for r in rewritten:
            written = r.written(loc)
            if written != loc:
                return written
        return loc

    for r in rewritten:
        announce(path, lines, r.notes)
        problems += [Problem(path, line_of(lines, loc), field_of(loc), msg) for loc, msg in r.problems]
    if problems:
        raise errors(problems)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            parts = (p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            loc = place((*at, *parts))
            message = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(path, line_of(lines, loc), field_of(loc), message))
        raise errors(problems) from None


def reporter(path: Path, lines: dict[tuple, int], problems: list[Problem], rewritten: list[Rewritten] = ()):
    """report(loc, message) for checks: a Problem at the line where `loc` was written."""

    def report(loc: tuple, message: str) -> None:
        for r in rewritten:
            loc = r.written(loc)
        problems.append(Problem(path, line_of(lines, loc), field_of(loc), message))

    return report
