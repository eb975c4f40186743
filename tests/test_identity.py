"""Identity resolution edge cases, built by the real dbt project on DuckDB and PostgreSQL:
long chains, the shared-device guard, and one_id stability as clusters grow, merge and split."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from openaudience.core.schema.raw import RAW_TABLES
from openaudience.raw.loading import load_file

pytestmark = pytest.mark.slow  # each test builds identity on a fresh warehouse with dbt

TS = "2026-01-01 10:00:00"


def _write(path: Path, table: str, rows: list[dict]) -> Path:
    cols = RAW_TABLES[table].column_names
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in cols})
    return path


def member(customer_id: str, mobile: str = "", email: str = "") -> dict:
    return {"customer_id": customer_id, "mobile": mobile, "email": email, "gender": "unknown",
            "member_level": "none", "registered_at": TS}


def link(n: int, left: str, right: str) -> dict:
    lt, lv = left.split(":", 1)
    rt, rv = right.split(":", 1)
    return {"link_id": f"L{n}", "left_id_type": lt, "left_id": lv, "right_id_type": rt,
            "right_id": rv, "source": "test", "observed_at": TS}


def load(target, tmp_path: Path, table: str, rows: list[dict], name: str, mode="append",
         force: bool = False) -> None:
    load_file(target.warehouse, table, _write(tmp_path / f"{name}.csv", table, rows), mode=mode,
              force=force)


def resolve(target) -> dict[str, str]:
    target.dbt("build", "--select", "+dim_identities +rpt_identity_shared_ids",
               "--indirect-selection", "cautious")
    return dict(target.warehouse.query("select node_key, one_id from marts.dim_identities"))


def test_a_long_chain_of_links_is_one_person(target, tmp_path):
    chain = [link(i, f"imei:D{i:02d}", f"imei:D{i + 1:02d}") for i in range(30)]
    chain.append(link(99, "member_id:M1", "imei:D00"))
    load(target, tmp_path, "customers", [member("M1")], "customers")
    load(target, tmp_path, "identity_links", chain, "links")
    ids = resolve(target)
    assert len(ids) == 32
    assert len(set(ids.values())) == 1
    # 31 IMEIs in one person is more than the cap allows: reported, not split
    flagged = target.warehouse.query(
        "select count(*) from marts.dim_identities where is_oversized_cluster")
    assert flagged == [(32,)]


def test_a_shared_device_does_not_merge_the_people_who_used_it(target, tmp_path):
    load(target, tmp_path, "customers",
         [member(f"M{i}", mobile=f"1380013800{i}") for i in range(1, 5)], "customers")
    load(target, tmp_path, "identity_links",
         [link(i, "imei:STORE-TABLET", f"member_id:M{i}") for i in range(1, 5)]
         + [link(9, "oaid:phone-of-m1", "member_id:M1")], "links")
    ids = resolve(target)
    people = {ids[f"member_id:M{i}"] for i in range(1, 5)}
    assert len(people) == 4, "the tablet must not merge four members"
    assert ids["mobile:13800138001"] == ids["member_id:M1"] == ids["oaid:phone-of-m1"]
    assert ids["imei:store-tablet"] not in people  # an IMEI is kept lower-case (the id registry)
    report = target.warehouse.query(
        "select node_key, tripped_by, max_neighbours from marts.rpt_identity_shared_ids")
    assert report == [("imei:store-tablet", "member_id:4>3", 4)]


def test_one_id_is_stable_as_clusters_grow_merge_and_split(target, tmp_path):
    load(target, tmp_path, "customers",
         [member("M1", mobile="13800000001"), member("M2", email="b@x.cn"),
          member("M9", email="z@x.cn")], "c1")
    first = resolve(target)
    a, b, z = first["member_id:M1"], first["member_id:M2"], first["member_id:M9"]
    assert len({a, b, z}) == 3

    # growth: a new account shares M1's mobile; the cluster keeps its id
    load(target, tmp_path, "customers", [member("M3", mobile="13800000001")], "c2")
    grown = resolve(target)
    assert grown["member_id:M1"] == grown["member_id:M3"] == a
    assert grown["member_id:M2"] == b and grown["member_id:M9"] == z

    # merge: a link joins A (3 ids) and B (2 ids); the bigger cluster's id survives
    load(target, tmp_path, "identity_links", [link(1, "mobile:13800000001", "email:b@x.cn")], "l1")
    merged = resolve(target)
    assert {merged[k] for k in ("member_id:M1", "member_id:M3", "mobile:13800000001",
                                "member_id:M2", "email:b@x.cn")} == {a}
    assert merged["member_id:M9"] == z, "an untouched cluster keeps its id"

    # split: the link goes away; the bigger part keeps A's id, the other part gets a new one
    load(target, tmp_path, "identity_links", [], "l2", mode="replace", force=True)
    split = resolve(target)
    assert split["member_id:M1"] == split["member_id:M3"] == a
    assert split["member_id:M2"] == split["email:b@x.cn"]
    assert split["member_id:M2"] not in {a, z}
    assert split["member_id:M9"] == z


def test_behaviour_keyed_by_a_device_lands_on_its_member(target, tmp_path):
    load(target, tmp_path, "customers", [member("M1")], "customers")
    load(target, tmp_path, "identity_links", [link(1, "member_id:M1", "idfa:ab-cd")], "links")
    events = [
        {"event_id": "E1", "user_id_type": "idfa", "user_id": " AB-CD ", "event_type": "view",
         "channel": "app", "occurred_at": TS, "object_attribute": "page", "object_value": "home",
         "event_count": "2"},
        {"event_id": "E2", "user_id_type": "member_id", "user_id": "M1", "event_type": "view",
         "channel": "app", "occurred_at": TS, "object_attribute": "page", "object_value": "home",
         "event_count": "1"},
    ]
    load(target, tmp_path, "behavior_events", events, "events")
    target.dbt("build", "--select", "+fct_behaviors", "--indirect-selection", "cautious")
    rows = target.warehouse.query(
        "select b.behavior_count, b.source_events from marts.fct_behaviors b "
        "join marts.dim_identities i on i.one_id = b.one_id where i.node_key = 'member_id:M1'")
    assert rows == [(3, 2)], "same person, time, type, channel and object: one row, counts summed"
