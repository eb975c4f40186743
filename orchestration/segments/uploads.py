"""Uploaded id lists: a CSV or TXT file with one id per line, read, normalised like the
warehouse normalises ids (macros/normalize.sql), and fingerprinted so that a build loads each
distinct list once and an edited file is a new list."""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

MAX_UPLOAD_IDS = 5_000_000
_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
HEADERS = {"user_unique_id", "id", "id_value"}


class UploadError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(message)


def normalize_id(id_type: str, value: str) -> str | None:
    """The canonical form of an id, or None when it cannot be one (mirrors normalize_id)."""
    value = value.strip()
    if id_type == "mobile":
        digits = re.sub(r"[^0-9]", "", value)
        if len(digits) == 13 and digits.startswith("86"):
            digits = digits[2:]
        return digits if _MOBILE.match(digits) else None
    if id_type in ("email", "oaid", "mac"):
        return value.lower() or None
    if id_type == "idfa":
        return value.upper() or None
    return value or None


@dataclass(frozen=True)
class Upload:
    file: str              # as written in the audience file
    path: Path
    id_type: str
    ids: tuple[str, ...]   # normalised, distinct, sorted
    digest: str


def read_upload(file: str, path: Path, id_type: str) -> Upload:
    """Read one list. A first line naming user_unique_id, id, id_value or the id type is a
    header; blank lines are skipped; in a CSV only the first column counts. Raises UploadError
    with the line of the first id that is not a valid id of that type."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UploadError(0, f"upload file {file} does not exist (looked for {path})") from None
    except UnicodeDecodeError as exc:
        raise UploadError(0, f"upload file {file} is not UTF-8 text ({exc.reason})") from None
    ids: set[str] = set()
    rows = csv.reader(text.splitlines()) if path.suffix.lower() == ".csv" else (
        [line] for line in text.splitlines())
    for number, row in enumerate(rows, start=1):
        raw = row[0].strip() if row else ""
        if not raw:
            continue
        if number == 1 and raw.lower() in HEADERS | {id_type}:
            continue
        value = normalize_id(id_type, raw)
        if value is None:
            raise UploadError(number, f"{raw!r} is not a valid {id_type}; fix or remove the line")
        ids.add(value)
        if len(ids) > MAX_UPLOAD_IDS:
            raise UploadError(number, f"more than {MAX_UPLOAD_IDS:,} ids; split the list")
    if not ids:
        raise UploadError(0, f"upload file {file} holds no ids")
    ordered = tuple(sorted(ids))
    digest = hashlib.sha256("\n".join((id_type, *ordered)).encode()).hexdigest()[:24]
    return Upload(file=file, path=path, id_type=id_type, ids=ordered, digest=digest)
