"""Standing rules of the dbt project, checked on the parsed manifest and the seeds:
every model is documented column by column and keyed; the tag catalogue and user_tags agree."""

from __future__ import annotations

import csv
import json

import pytest

from openaudience.core.dbt import ensure_manifest
from openaudience.core.settings import PROJECT_ROOT

TAG_TYPES = {"enum", "text", "multi_value", "numeric", "date"}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(ensure_manifest().read_text())


def models(manifest):
    return [n for n in manifest["nodes"].values()
            if n["resource_type"] == "model" and n["package_name"] == "openaudience"]


def test_every_model_and_column_has_a_description(manifest):
    missing = []
    for node in models(manifest):
        if not node["description"].strip():
            missing.append(node["name"])
        for col in node["columns"].values():
            if not col["description"].strip():
                missing.append(f"{node['name']}.{col['name']}")
    assert not missing, f"undocumented: {missing}"


def test_every_model_has_a_tested_key(manifest):
    tested = set()
    for node in manifest["nodes"].values():
        if node["resource_type"] == "test":
            meta = node.get("test_metadata") or {}
            if meta.get("name") in ("unique", "unique_combination"):
                tested.add(node["attached_node"])
    untested = [n["name"] for n in models(manifest) if n["unique_id"] not in tested]
    assert not untested, f"models without a uniqueness test on their key: {untested}"


def test_tag_catalogue_is_well_formed():
    rows = list(csv.DictReader(open(PROJECT_ROOT / "seeds" / "tag_catalogue.csv")))
    assert len({r["tag_name"] for r in rows}) == len(rows)
    for row in rows:
        assert row["tag_type"] in TAG_TYPES, row
        assert row["label"] and row["description"] and row["source"], row
        assert bool(row["delimiter"]) == (row["tag_type"] == "multi_value"), row


def test_user_tags_has_exactly_the_catalogue_tags_plus_ids(manifest):
    rows = list(csv.DictReader(open(PROJECT_ROOT / "seeds" / "tag_catalogue.csv")))
    id_types = {r["id_type"] for r in csv.DictReader(open(PROJECT_ROOT / "seeds" / "id_types.csv"))}
    node = next(n for n in models(manifest) if n["name"] == "user_tags")
    columns = list(node["columns"])
    identity_columns = {"one_id", "id_count", "is_shared_identity"}
    tag_columns = [c for c in columns if c not in identity_columns and c not in id_types]
    assert tag_columns == [r["tag_name"] for r in rows], "catalogue order and columns must match"
