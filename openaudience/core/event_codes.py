"""The event codes of events/*.yml, for the catalogues of the condition language: an event the
collector takes is a behaviour type like the seed's (audiences and AIPL rules can name it). The
files are read leniently here; `oa events validate` checks them, and a file that cannot be read
contributes no codes (a condition naming one of them is then an unknown behaviour type)."""

from __future__ import annotations

from pathlib import Path

from openaudience.core.errors import UserError
from openaudience.core.yaml_files import load_yaml


def event_codes(folder: Path) -> set[str]:
    codes: set[str] = set()
    for path in sorted(folder.glob("*.yml")) if folder.is_dir() else []:
        if path.name.startswith("_"):
            continue
        try:
            data, _ = load_yaml(path)
        except UserError:
            continue
        events = data.get("events") if isinstance(data, dict) else None
        codes |= {e["code"] for e in events or [] if isinstance(e, dict) and isinstance(e.get("code"), str)}
    return codes
