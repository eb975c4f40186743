"""File export: an audience's ids (optionally hashed) as CSV or Parquet, for any system that
takes a file.

A run writes one part file per planned batch, ``<folder>/<run id>/part-00000.csv`` with the
columns ``op`` (add or remove), ``id_type`` and ``id``, each written to a temporary name and
renamed, so a part is whole or absent; a batch written again after a crash replaces its part
instead of adding rows. When every batch is written, ``_manifest.json`` lists the parts and the
counts, and ``latest.json`` beside the run folders points at the newest complete run.

A CSV is opened by people too, so by default a raw id a spreadsheet would read as a formula (one
starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written with a leading
``'`` (see ``connectors/spreadsheet.py``); ``spreadsheet_safe: false`` writes the ids as they are
for a consumer that is no spreadsheet, and the manifest says which was done. Hashed and encrypted
ids are never changed: nobody typed them, and the receiver must get them exact (AES base64 may
start with ``+``). Parquet is typed and never changed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connectors.base import ID_FORMS, Capabilities, Connector, Member, Outcome
from connectors.identifiers import audience_id_types
from connectors.spreadsheet import neutralise_all

FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class FileSettings:
    folder: Path
    format: str = "csv"
    id_form: str = "raw"
    spreadsheet_safe: bool = True
    """CSV of raw ids only: quote cells a spreadsheet would run as formulas."""

    @property
    def neutralises(self) -> bool:
        """Whether ids are written spreadsheet-safe: a CSV of raw (typed, not hashed) ids."""
        return self.spreadsheet_safe and self.format == "csv" and self.id_form == "raw"


class FileConnector(Connector):
    capabilities = Capabilities(
        channel="file",
        id_forms={t: ID_FORMS for t in audience_id_types()},
        supports_removals=True,
        is_message=False,
        max_batch_size=1_000_000,
    )

    def __init__(self, settings: FileSettings, run_id: str) -> None:
        self.settings = settings
        self.run_dir = settings.folder / run_id

    def deliver(self, batch: list[Member], batch_no: int = 0) -> list[Outcome]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ids = [m.id_value for m in batch]
        if self.settings.neutralises:
            ids = neutralise_all(ids)
        table = pa.table({"op": [m.op for m in batch], "id_type": [m.id_type for m in batch], "id": ids})
        target = self.run_dir / f"part-{batch_no:05d}.{self.settings.format}"
        temporary = target.with_name("." + target.name + ".tmp")
        if self.settings.format == "parquet":
            pq.write_table(table, temporary)
        else:
            pacsv.write_csv(table, temporary)
        os.replace(temporary, target)
        return [Outcome(m.key, True, "written", external_id=target.name) for m in batch]

    def finish(self, summary: dict[str, int]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        parts = sorted(p.name for p in self.run_dir.glob(f"part-*.{self.settings.format}"))
        manifest = {"run_id": self.run_dir.name, "format": self.settings.format,
                    "id_form": self.settings.id_form, "parts": parts, **summary}
        if self.settings.format == "csv":
            manifest["spreadsheet_safe"] = self.settings.neutralises
        _write_json(self.run_dir / "_manifest.json", manifest)
        _write_json(self.settings.folder / "latest.json",
                    {"run_id": self.run_dir.name, "manifest": f"{self.run_dir.name}/_manifest.json"})


def _write_json(path: Path, body: dict) -> None:
    temporary = path.with_name("." + path.name + ".tmp")
    temporary.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
