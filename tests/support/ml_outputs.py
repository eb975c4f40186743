"""Model outputs for the audience tests, without training: every person of user_tags gets a
repurchase probability (a hash of their one_id), and every task of ml/recommend.yml gets three
products per person for a third of the people, drawn the same way; ml.pool_items holds the real
pools. The segment leaves `score:` and `recommended:` read these tables like any others."""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa

from ml.pools import load_pools, write_pool_items
from ml.recommend import load_config
from ml.repurchase import SCORES_TABLE


def _unit(text: str) -> float:
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def write_ml_outputs(wh) -> None:
    people = sorted(r[0] for r in wh.query("select one_id from marts.user_tags"))
    items = sorted(r[0] for r in wh.query("select item_id from marts.product_tags"))
    probability = {p: round(_unit("score:" + p), 6) for p in people}
    order = sorted(people, key=lambda p: (-probability[p], p))
    now = dt.datetime(2026, 6, 29, 12)
    scores = pa.table({"one_id": order, "probability": [probability[p] for p in order],
                       "rank": list(range(1, len(order) + 1)),
                       "decile": [min(i * 10 // len(order) + 1, 10) for i in range(len(order))],
                       "model_version": [1] * len(order), "as_of_date": [now.date()] * len(order),
                       "scored_at": [now] * len(order)})
    rows = {k: [] for k in ("task", "pool", "one_id", "item_id", "rank", "score", "model", "model_version",
                            "as_of_date", "made_at")}
    for task in load_config().tasks:
        for p in people:
            if _unit(task.name + p) > 1 / 3:
                continue
            picks = sorted({items[int(_unit(f"{task.name}:{p}:{k}") * len(items)) % len(items)]
                            for k in range(3)})
            for rank, item in enumerate(picks, start=1):
                for key, value in (("task", task.name), ("pool", task.pool), ("one_id", p),
                                   ("item_id", item), ("rank", rank), ("score", _unit(f"s:{p}:{item}")),
                                   ("model", "ease"), ("model_version", 1), ("as_of_date", now.date()),
                                   ("made_at", now)):
                    rows[key].append(value)
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        wh.empty_table(conn, SCORES_TABLE)
        wh.insert_arrow(conn, SCORES_TABLE, scores)
        wh.empty_table(conn, "ml.recommendations")
        wh.insert_arrow(conn, "ml.recommendations", pa.table({
            **{k: rows[k] for k in ("task", "pool", "one_id", "item_id")},
            "rank": pa.array(rows["rank"], pa.int32()), "score": rows["score"], "model": rows["model"],
            "model_version": pa.array(rows["model_version"], pa.int32()),
            "as_of_date": rows["as_of_date"], "made_at": rows["made_at"]}))
    write_pool_items(wh, load_pools())
