"""Uploaded id lists: a CSV or TXT file with one id per line, read, normalised like the
warehouse normalises ids (macros/normalize.sql), and fingerprinted so that a build loads each
distinct list once and an edited file is a new list.

A list is named by a file that anyone editing audiences/ can write, so its path is confined to
the folder of the audience file (`confined_path`): an absolute path, a `..` or a symbolic link
that leads out is refused, and an error about a line of the list shows a short escaped excerpt
of it, never the line itself."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from connectors.identifiers import IdError, normalise

MAX_UPLOAD_IDS = 5_000_000
HEADERS = {"user_unique_id", "id", "id_value"}


EXCERPT_CHARS = 40


class UploadError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(message)


class OutsideFolder(ValueError):
    """A file a project file names lies outside the folder it must stay in."""


def confined_path(folder: Path, name: str) -> Path:
    """The file `name` (as written in a project file) resolved inside `folder`, symbolic links
    followed; OutsideFolder when it is absolute, climbs with `..`, resolves outside, or names
    something that is not a regular file (a folder, a device, a pipe). A file that does not exist
    is the caller's to report. Destination templates go through it too."""
    where = f"{folder.name}/"
    relative = Path(name)
    if relative.is_absolute():
        raise OutsideFolder(f"{name} is not relative; name a file inside {where} relative to it")
    if ".." in relative.parts:
        raise OutsideFolder(f"{name} climbs out with '..'; name a file inside {where}")
    try:
        root, target = folder.resolve(), (folder / relative).resolve()
        exists, regular = target.exists(), target.is_file()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symbolic link loop
        raise OutsideFolder(f"{excerpt(name)} is not a usable file name ({exc})") from None
    if not target.is_relative_to(root):
        raise OutsideFolder(f"{name} is a symbolic link (or passes one) that leads outside {where}; "
                            "copy the file into the folder")
    if exists and not regular:
        what = "a folder" if target.is_dir() else "not a regular file"
        raise OutsideFolder(f"{name} is {what}; name a file inside {where}")
    return target


def excerpt(text: str) -> str:
    """At most EXCERPT_CHARS of `text`, quoted, control characters escaped, and `[` and `<` written
    as \\x5b and \\x3c: safe to print through rich markup or into HTML."""
    short = text[:EXCERPT_CHARS]
    quoted = repr(short).replace("[", "\\x5b").replace("<", "\\x3c")
    return quoted + ("..." if len(text) > EXCERPT_CHARS else "")


def normalize_id(id_type: str, value: str) -> str | None:
    """The canonical form of an id, as the warehouse holds it (the id-type registry's rule, the
    same function the channels use), or None when it cannot be one."""
    try:
        return normalise(id_type, value)
    except IdError:
        return None


@dataclass(frozen=True)
class Upload:
    file: str              # as written in the audience file
    path: Path
    id_type: str
    ids: tuple[str, ...]   # normalised, distinct, sorted
    digest: str


def read_upload(file: str, path: Path, id_type: str, folder: Path | None = None) -> Upload:
    """Read one list. A first line naming user_unique_id, id, id_value or the id type is a
    header; blank lines are skipped; in a CSV only the first column counts. Raises UploadError
    with the line of the first id that is not a valid id of that type. With `folder` (the
    audience file's), `file` is resolved in it and must stay there (`path` is then ignored)."""
    if folder is not None:
        try:
            path = confined_path(folder, file)
        except OutsideFolder as exc:
            raise UploadError(0, f"upload file {exc}") from None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UploadError(0, f"upload file {file} does not exist (looked for {path})") from None
    except UnicodeDecodeError as exc:
        raise UploadError(0, f"upload file {file} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:  # a folder, no permission to read, an I/O error
        raise UploadError(0, f"upload file {file} cannot be read ({exc.strerror or exc})") from None
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
            raise UploadError(number, f"{excerpt(raw)} is not a valid {id_type}; fix or remove the line")
        ids.add(value)
        if len(ids) > MAX_UPLOAD_IDS:
            raise UploadError(number, f"more than {MAX_UPLOAD_IDS:,} ids; split the list")
    if not ids:
        raise UploadError(0, f"upload file {file} holds no ids")
    ordered = tuple(sorted(ids))
    digest = hashlib.sha256("\n".join((id_type, *ordered)).encode()).hexdigest()[:24]
    return Upload(file=file, path=path, id_type=id_type, ids=ordered, digest=digest)
