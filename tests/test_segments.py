"""The segment language: the example audiences compile for every dialect, validation errors
name file, line and field, values never become SQL, and the compiled SQL on DuckDB and
PostgreSQL selects exactly the members an independent pandas evaluator finds — for the
examples and for random condition trees."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openaudience.segments.compiler import DIALECTS, audience_query, to_sql
from openaudience.segments.source import (
    AUDIENCE_DIR,
    AudienceErrors,
    Catalog,
    audience_files,
    load_audience,
    load_project,
)
from openaudience.segments.spec import Audience
from tests.conftest import AIPL_HISTORY_START, AS_OF

TODAY = dt.date.fromisoformat(AS_OF)
CATALOG = Catalog.from_project()
PROJECT = load_project(AUDIENCE_DIR, CATALOG)


# -- an evaluator written from the documented rules, sharing no code with the compiler ---------
class Evaluator:
    def __init__(self, target) -> None:
        wh = target.warehouse
        self.tags = wh.query_df("select * from marts.user_tags").set_index("one_id", drop=False)
        self.behaviors = wh.query_df(
            "select one_id, behavior_date, event_type, channel, object_attribute, object_value, "
            "behavior_count, behavior_amount from marts.fct_behaviors")
        self.behaviors["behavior_date"] = pd.to_datetime(self.behaviors["behavior_date"]).dt.date
        self.rfm = {m: wh.query_df(f"select * from marts.{m}") for m in CATALOG.rfm_models}
        self.aipl = wh.query_df("select * from marts.aipl_daily")
        self.aipl["stat_date"] = pd.to_datetime(self.aipl["stat_date"]).dt.date
        self.scores = wh.query_df("select one_id, probability, rank from ml.repurchase_scores")
        self.recommendations = wh.query_df("select task, one_id, item_id, rank, score "
                                           "from ml.recommendations")
        self.pool_items = wh.query_df("select pool, item_id from ml.pool_items")
        ids = wh.query_df("select id_type, id_value, one_id from marts.dim_identities")
        self.identities = {(t, v): o for t, v, o in ids.itertuples(index=False)}
        self.wh = wh
        self.saved: dict[str, set[str]] = {}  # audiences this evaluator saved, by name

    def members(self, audience: Audience) -> set[str]:
        """Everyone meeting the condition (before the id filter and the limit)."""
        if audience.set_op:
            return self.set_members(audience.set_op, audience.operands())
        mask = self.cond(audience.where)
        return set(self.tags.index[mask])

    def set_members(self, op: str, operands) -> set[str]:
        sets = [self.saved[o.audience] if o.audience else self.set_members(o.op, getattr(o, o.op))
                for o in operands]
        if op == "union":
            return set().union(*sets)
        if op == "intersect":
            return set.intersection(*sets)
        return sets[0] - set().union(*sets[1:])

    def save(self, audience: Audience) -> set[str]:
        """The members a build saves: those with the audience's id, then the limit."""
        import hashlib

        members = self.members(audience)
        ids = self.tags["one_id"] if audience.id_type == "one_id" else self.tags[audience.id_type]
        kept = [m for m in members if pd.notna(ids[m])]
        if audience.limit:
            lim = audience.limit
            if lim.order_by:
                col = self.tags[lim.order_by.tag]
                have = sorted((m for m in kept if pd.notna(col[m])), key=lambda m: m)
                have.sort(key=lambda m: col[m], reverse=lim.order_by.direction == "desc")
                kept = have + sorted(m for m in kept if pd.isna(col[m]))
            else:
                kept.sort(key=lambda m: (hashlib.md5(f"{lim.sample.seed}:{m}".encode()).hexdigest(), m))
            kept = kept[:lim.size]
        self.saved[audience.name] = set(kept)
        return set(kept)

    def resolve(self, id_type: str, values) -> pd.Series:
        if id_type == "one_id":
            found = {str(v) for v in values}
        else:
            found = {self.identities.get((id_type, str(v).strip())) for v in values} - {None}
        return pd.Series(self.tags.index.isin(found), index=self.tags.index)

    def cond(self, c) -> pd.Series:
        if c.all is not None:
            out = pd.Series(True, index=self.tags.index)
            for child in c.all:
                out &= self.cond(child)
            return out
        if c.any is not None:
            out = pd.Series(False, index=self.tags.index)
            for child in c.any:
                out |= self.cond(child)
            return out
        if c.not_ is not None:
            return ~self.cond(c.not_)
        if c.tag is not None:
            return self.tag(c.tag)
        if c.behavior is not None:
            return self.behavior(c.behavior)
        if c.rfm is not None:
            df = self.rfm[c.rfm.model]
            if c.rfm.segments is not None:
                ids = set(df.loc[df["rfm_segment"].isin(c.rfm.segments), "one_id"])
            else:
                keep = pd.Series(True, index=df.index)
                for k, v in c.rfm.min_scores.items():
                    keep &= df[f"{k}_score"] >= v
                ids = set(df.loc[keep, "one_id"])
            return self.tags.index.isin(ids)
        if c.score is not None:  # the documented rules: probability, rank, the first p % by rank
            sc, n = self.scores, len(self.scores)
            if c.score.min_probability is not None:
                ids = set(sc.loc[sc["probability"] >= c.score.min_probability, "one_id"])
            elif c.score.top is not None:
                ids = set(sc.loc[sc["rank"] <= c.score.top, "one_id"])
            else:
                ids = set(sc.loc[sc["rank"] <= math.ceil(c.score.top_percent / 100 * n), "one_id"])
            return self.tags.index.isin(ids)
        if c.recommended is not None:
            r = self.recommendations[self.recommendations["task"] == c.recommended.task]
            if c.recommended.top is not None:
                r = r[r["rank"] <= c.recommended.top]
            if c.recommended.item is not None:
                r = r[r["item_id"] == c.recommended.item]
            elif c.recommended.pool is not None:
                pool = self.pool_items.loc[self.pool_items["pool"] == c.recommended.pool, "item_id"]
                r = r[r["item_id"].isin(set(pool))]
            else:
                r = r[r["score"] >= c.recommended.min_score]
            return self.tags.index.isin(set(r["one_id"]))
        if c.audience is not None:
            return pd.Series(self.tags.index.isin(self.saved[c.audience.name]), index=self.tags.index)
        if c.upload is not None:
            lines = (AUDIENCE_DIR / c.upload.file).read_text().split()
            return self.resolve(c.upload.id_type, [x for x in lines[1:] if x])  # a header line
        if c.table is not None:
            rows = self.wh.query(f"select user_unique_id from {c.table.name}")
            return self.resolve(c.table.id_type, [r[0] for r in rows])
        a = self.aipl[self.aipl["aipl_model"] == c.aipl.model]
        if c.aipl.stages is None:
            start = c.aipl.between[0] if c.aipl.between else TODAY - dt.timedelta(days=c.aipl.last_days)
            end = c.aipl.between[1] if c.aipl.between else TODAY
            was = set(a.loc[(a["stat_date"] == start) & a["stage"].isin(c.aipl.from_), "one_id"])
            now = set(a.loc[(a["stat_date"] == end) & a["stage"].isin(c.aipl.to), "one_id"])
            return pd.Series(self.tags.index.isin(was & now), index=self.tags.index)
        a = a[a["stat_date"] <= TODAY]
        day = a["stat_date"].max()
        ids = set(a.loc[(a["stat_date"] == day) & a["stage"].isin(c.aipl.stages), "one_id"])
        return pd.Series(self.tags.index.isin(ids), index=self.tags.index)

    def tag(self, leaf) -> pd.Series:
        col = self.tags[leaf.name]
        tag_type = CATALOG.tags[leaf.name]
        present = col.notna()
        op, value = leaf.op, leaf.value
        if op == "is_null":
            return ~present
        if op == "is_not_null":
            return present
        if op.startswith("not_"):
            return ~self.tag(leaf.model_copy(update={"op": op.removeprefix("not_")}))

        def each(test) -> pd.Series:
            return pd.Series([bool(p) and test(v) for p, v in zip(present, col, strict=True)],
                             index=col.index)

        if tag_type == "date":
            def as_day(v):
                return pd.Timestamp(v).date()
            if op == "between":
                lo, hi = (dt.date.fromisoformat(str(x)) for x in value)
                return each(lambda v: lo <= as_day(v) <= hi)
            if op == "last_days":
                return each(lambda v: TODAY - dt.timedelta(days=value) < as_day(v) <= TODAY)
            if op == "before_days_ago":
                return each(lambda v: as_day(v) <= TODAY - dt.timedelta(days=value))
            day_tests = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
                         ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
            if op in day_tests:
                day = dt.date.fromisoformat(str(value))
                return each(lambda v: day_tests[op](as_day(v), day))
            start = (TODAY - dt.timedelta(days=TODAY.weekday()) if op == "this_week"
                     else TODAY.replace(day=1))
            return each(lambda v: start <= as_day(v) <= TODAY)
        if op == "between":
            return each(lambda v: value[0] <= float(v) <= value[1])
        compare = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
                   ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
        if op in compare:
            return each(lambda v: compare[op](float(v), value))
        values = [str(v) for v in leaf.values()]
        sep = CATALOG.delimiters.get(leaf.name, ",")
        tests = {
            "in": lambda v: str(v) in values,
            "equals": lambda v: str(v) in values,
            "contains": lambda v: any(x in str(v) for x in values),
            "starts_with": lambda v: any(str(v).startswith(x) for x in values),
            "ends_with": lambda v: any(str(v).endswith(x) for x in values),
            "contains_any": lambda v: bool(set(str(v).split(sep)) & set(values)),
            "contains_all": lambda v: set(values) <= set(str(v).split(sep)),
        }
        return each(tests[op])

    def behavior(self, leaf) -> pd.Series:
        b = self.behaviors
        keep = b["event_type"] == leaf.event_type
        if leaf.last_days:
            keep &= (b["behavior_date"] > TODAY - dt.timedelta(days=leaf.last_days)) & (
                b["behavior_date"] <= TODAY)
        else:
            keep &= (b["behavior_date"] >= leaf.between[0]) & (b["behavior_date"] <= leaf.between[1])
        if leaf.channels:
            keep &= b["channel"].isin(leaf.channels)
        if leaf.object_attribute:
            keep &= b["object_attribute"] == leaf.object_attribute
        if leaf.object_values:
            keep &= b["object_value"].isin(leaf.object_values)
        sums = b[keep].groupby("one_id")[["behavior_count", "behavior_amount"]].sum()
        n = sums["behavior_count"].reindex(self.tags.index).fillna(0)
        amount = sums["behavior_amount"].astype(float).reindex(self.tags.index).fillna(0)
        compare = {"=": n.__class__.__eq__, "!=": n.__class__.__ne__, ">": n.__class__.__gt__,
                   ">=": n.__class__.__ge__, "<": n.__class__.__lt__, "<=": n.__class__.__le__}
        ok = compare[leaf.count.op](n, leaf.count.value) if leaf.count else n >= 1  # default >= 1
        if leaf.amount:
            ok &= compare[leaf.amount.op](amount, leaf.amount.value)
        return ~ok if leaf.did_not else ok


@pytest.fixture(scope="module")
def evaluators(built_engines):
    return {engine: Evaluator(target) for engine, target in built_engines.items()}


def _sql_members(target, audience: Audience) -> set[str]:
    query = audience_query(audience, CATALOG, TODAY)
    sql = to_sql(query, target.name, pretty=False)
    return {row[0] for row in target.warehouse.query(sql)}


# -- examples -------------------------------------------------------------------------------
EXAMPLES = audience_files()


def test_there_are_example_audiences_for_every_leaf_kind_and_set_operation():
    kinds, shapes = set(), set()

    def walk(c):
        kinds.add(c.kind)
        for child in (c.all or []) + (c.any or []) + ([c.not_] if c.not_ else []):
            walk(child)

    for path in EXAMPLES:
        audience = load_audience(path, CATALOG)
        if audience.where is not None:
            walk(audience.where)
        shapes.add(audience.set_op or "where")
        if audience.limit:
            shapes.add("limit_" + ("order_by" if audience.limit.order_by else "sample"))
        if audience.where is not None and audience.where.aipl and audience.where.aipl.from_:
            shapes.add("aipl_flow")
    assert len(EXAMPLES) >= 8
    assert kinds >= {"all", "any", "not", "tag", "behavior", "rfm", "aipl", "audience", "upload",
                     "table", "score", "recommended"}
    assert shapes >= {"where", "union", "intersect", "difference", "limit_order_by",
                      "limit_sample", "aipl_flow"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_compile_for_every_dialect(path):
    query = PROJECT.compile(path.stem, TODAY).query
    for dialect in DIALECTS:
        sql = to_sql(query, dialect)
        sqlglot.parse_one(sql, read=dialect)  # the dialect's own parser reads it back


# -- random trees ---------------------------------------------------------------------------
TRICKY = ["O'Brien", "x'; drop table marts.user_tags; --", "a\"b", "/* c */", "上海", "%", "_"]


# What the small generated data holds (tests/conftest.py: 180 days of behaviour up to END_DATE,
# AIPL computed from AIPL_HISTORY_START to AS_OF), so that generated leaves select someone.
BEHAVIOR_DAYS = (dt.date(2026, 1, 1), TODAY)
AIPL_DAYS = (dt.date.fromisoformat(AIPL_HISTORY_START), TODAY)
EVENT_OBJECTS = {  # behaviour type -> the kinds of object its events are about
    "view": ["category", "brand", "page", "product"], "purchase": ["product"],
    "add_to_cart": ["product"], "login": ["page"], "favourite": ["brand", "product"],
    "share": ["page", "product"]}
OBJECT_VALUES = {
    "category": ["womenswear", "skincare", "beauty", "shoes", "electronics"],
    "brand": ["Glowlab", "Aurelle", "Lumina", "Mulan Studio", "Northwind"],
    "page": ["login", "home", "member_center", "coupon_center"],
    "product": ["Lumina Knit Cardigan E207", "Aurelle Mascara X248", "Glowlab Moisturiser F256",
                "Pixelon Earbuds G263"],
}


def _day_range(days: tuple[dt.date, dt.date], spans: list[int]):
    """[start, end] within `days` (the end may pass the last day by at most max(spans))."""
    return st.builds(lambda start, span: [start, start + dt.timedelta(days=span)],
                     st.dates(*days), st.sampled_from(spans))


@st.composite
def _event_and_object(draw, objects: str):
    """A behaviour type and, by `objects` (none, attribute or values), no object filter, a kind
    of object the type's events have, or that kind and values of it."""
    kind = draw(st.sampled_from(sorted(EVENT_OBJECTS)))
    if objects == "none":
        return kind, {}
    attr = draw(st.sampled_from(EVENT_OBJECTS[kind]))
    if objects == "attribute":
        return kind, {"object_attribute": attr}
    values = draw(st.lists(st.sampled_from(OBJECT_VALUES[attr]), min_size=1, max_size=3, unique=True))
    return kind, {"object_attribute": attr, "object_values": values}


def _behavior(objects: str, between: bool):
    window = (_day_range(BEHAVIOR_DAYS, [0, 6, 30, 90]).map(lambda d: {"between": d}) if between
              else st.sampled_from([7, 30, 90, 365]).map(lambda n: {"last_days": n}))
    return st.builds(
        lambda did, kind_object, window, channels, count, amount: {"behavior": {
            ("did" if did else "did_not"): kind_object[0], **kind_object[1], **window,
            **({"channels": channels} if channels else {}),
            **({"count": {count[0]: count[1]}} if count else {}),
            **({"amount": {">=": amount}} if amount else {})}},
        st.booleans(), _event_and_object(objects), window,
        st.one_of(st.none(), st.lists(st.sampled_from(["app", "web", "store"]), min_size=1, max_size=2)),
        st.one_of(st.none(), st.tuples(st.sampled_from([">=", "<", "="]), st.integers(0, 4))),
        st.one_of(st.none(), st.sampled_from([50, 500])))


def _leaves():
    tag = st.one_of(
        st.builds(lambda v, neg: {"tag": {"name": "city", ("not_in" if neg else "in"): v}},
                  st.lists(st.sampled_from(["Shanghai", "Beijing", "Hangzhou", "Chengdu", *TRICKY]),
                           min_size=1, max_size=3), st.booleans()),
        st.builds(lambda v: {"tag": {"name": "member_level", "in": v}},
                  st.lists(st.sampled_from(["none", "silver", "gold", "platinum"]),
                           min_size=1, max_size=2)),
        st.builds(lambda op, v: {"tag": {"name": "email_domain", op: v}},
                  st.sampled_from(["equals", "not_equals", "contains", "not_contains", "starts_with",
                                   "ends_with", "not_starts_with", "not_ends_with"]),
                  st.lists(st.sampled_from(["qq.com", "gmail", "163", "example.com", "mail", *TRICKY]),
                           min_size=1, max_size=2)),
        st.builds(lambda op, v: {"tag": {"name": "categories_bought", op: v}},
                  st.sampled_from(["contains_any", "contains_all"]),
                  st.lists(st.sampled_from(["shoes", "bags", "beauty", "home", "kids"]),
                           min_size=1, max_size=3)),
        st.builds(lambda op, v: {"tag": {"name": "spend_90d", op: v}},
                  st.sampled_from(["=", "!=", ">", ">=", "<", "<="]),
                  st.sampled_from([0, 100, 500, 2000])),
        st.builds(lambda lo, span: {"tag": {"name": "age", "between": [lo, lo + span]}},
                  st.integers(15, 60), st.integers(0, 20)),
        st.builds(lambda op, n: {"tag": {"name": "registered_at", op: n}},
                  st.sampled_from(["last_days", "before_days_ago"]), st.integers(1, 400)),
        st.builds(lambda op: {"tag": {"name": "registered_at", op: True}},
                  st.sampled_from(["this_week", "this_month"])),
        st.builds(lambda name, op, day: {"tag": {"name": name, op: day}},
                  st.sampled_from(["registered_at", "last_active_at"]),
                  st.sampled_from(["=", "!=", ">", ">=", "<", "<="]),
                  st.sampled_from([dt.date(2025, 1, 1), dt.date(2026, 6, 1), TODAY])),
        # absolute dates: registrations span 2023-07 to AS_OF, purchases and activity 2026
        st.builds(lambda name, days: {"tag": {"name": name, "between": days}},
                  st.sampled_from(["registered_at", "first_purchase_at", "last_active_at"]),
                  _day_range((dt.date(2025, 10, 1), TODAY), [0, 7, 60, 365])),
        st.builds(lambda name, op: {"tag": {"name": name, op: True}},
                  st.sampled_from(["mobile", "email", "city", "favourite_category",
                                   "categories_bought", "channels_used"]),
                  st.sampled_from(["is_null", "is_not_null"])),
    )
    # one_of flattens nested one_ofs: each branch is drawn about as often as any tag branch
    behavior = st.one_of(*[_behavior(objects, between) for objects in ("none", "attribute", "values")
                           for between in (False, True)])
    model = st.one_of(
        st.builds(lambda segs: {"rfm": {"model": "rfm_default", "segments": segs}},
                  st.lists(st.sampled_from(sorted(CATALOG.rfm_segments)), min_size=1, max_size=3)),
        st.builds(lambda r, m: {"rfm": {"model": "rfm_lifetime", "min_scores": {"r": r, "m": m}}},
                  st.integers(1, 4), st.integers(1, 4)),
        st.builds(lambda stages: {"aipl": {"model": "default", "stages": stages}},
                  st.lists(st.sampled_from(["A", "I", "P", "L"]), min_size=1, max_size=2)),
        *[st.builds(lambda a, b, window: {"aipl": {"model": "default", "from": a, "to": b, **window}},
                    st.lists(st.sampled_from(["A", "I", "P", "L"]), min_size=1, max_size=2),
                    st.lists(st.sampled_from(["A", "I", "P", "L"]), min_size=1, max_size=2),
                    window) for window in (
            st.sampled_from([1, 3, 7]).map(lambda n: {"last_days": n}),
            # both days computed: the dates stay within the AIPL history
            st.builds(lambda a, b: {"between": sorted([a, b])}, st.dates(*AIPL_DAYS),
                      st.dates(*AIPL_DAYS)))],
    )
    ml = st.one_of(
        st.builds(lambda p: {"score": {"model": "repurchase", "min_probability": p}},
                  st.sampled_from([0.0, 0.3, 0.75, 0.99])),
        st.builds(lambda k: {"score": {"top": k}}, st.sampled_from([1, 50, 400, 10_000])),
        st.builds(lambda p: {"score": {"top_percent": p}}, st.sampled_from([0.5, 10, 33.3, 100])),
        st.builds(lambda task, pool, top: {"recommended": {"task": task, "pool": pool,
                                                           **({"top": top} if top else {})}},
                  st.sampled_from(["shanghai_beauty_picks", "vip_flagship_preference"]),
                  st.sampled_from(["skincare_and_beauty", "skincare_only", "flagship_product"]),
                  st.sampled_from([None, 1, 2])),
        st.builds(lambda item, top: {"recommended": {"task": "shanghai_beauty_picks", "item": item,
                                                     **({"top": top} if top else {})}},
                  st.sampled_from(["P000001", "P000002", "P000100"]), st.sampled_from([None, 1, 3])),
        st.builds(lambda v: {"recommended": {"task": "shanghai_beauty_picks", "min_score": v}},
                  st.sampled_from([0.0, 0.5, 0.9])),
    )
    return st.one_of(tag, behavior, model, ml)


TREES = st.recursive(
    _leaves(),
    lambda children: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, children)),
    max_leaves=6)


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_random_trees_select_what_the_evaluator_selects(built_engines, evaluators, engine):
    target, evaluator = built_engines[engine], evaluators[engine]

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(TREES)
    def check(tree):
        audience = Audience.model_validate({"name": "random", "where": tree})
        assert _sql_members(target, audience) == evaluator.members(audience), tree

    check()


# -- values stay values ---------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_quotes_semicolons_comments_and_unicode_are_matched_literally(built_engines, engine):
    target = built_engines[engine]
    wh = target.warehouse
    tricky = ["x'); drop table marts.user_tags; --", "a\"b /* c */", "上海'", "100%_off"]
    ids = [r[0] for r in wh.query("select one_id from marts.user_tags order by one_id limit 4")]
    before = {r[0]: r[1] for r in wh.query("select one_id, email_domain from marts.user_tags "
                                           "where one_id in (%s, %s, %s, %s)", ids)}
    try:
        with wh.connect() as conn:
            for one_id, value in zip(ids, tricky, strict=True):
                wh.execute(conn, "update marts.user_tags set email_domain = %s where one_id = %s",
                           [value, one_id])
        for one_id, value in zip(ids, tricky, strict=True):
            for op in ("equals", "contains", "starts_with", "ends_with"):
                audience = Audience.model_validate(
                    {"name": "t", "where": {"tag": {"name": "email_domain", op: [value]}}})
                assert _sql_members(target, audience) == {one_id}, (op, value)
        assert wh.row_count("marts", "user_tags") > 1000
    finally:
        with wh.connect() as conn:
            for one_id, value in before.items():
                wh.execute(conn, "update marts.user_tags set email_domain = %s where one_id = %s",
                           [value, one_id])


# -- validation errors ----------------------------------------------------------------------
def _problems(tmp_path: Path, text: str, name: str = "bad") -> list[str]:
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    with pytest.raises(AudienceErrors) as info:
        load_audience(path, CATALOG)
    return [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems]


@pytest.mark.parametrize(("body", "expected"), [
    ("where:\n  all:\n    - tag: {name: citty, in: [Shanghai]}\n",
     "bad.yml:4: where.all[0].tag.name: unknown tag 'citty' (did you mean 'city'?)"),
    ("where:\n  tag: {name: city, \">=\": 3}\n",
     "bad.yml:3: where.tag.>=: operator '>=' does not apply to enum tag 'city' (use in, not_in, "
     "is_null, is_not_null)"),
    ("where:\n  tag:\n    name: email_domain\n    equals: [" + ", ".join(f"d{i}" for i in range(201)) + "]\n",
     "bad.yml:5: where.tag.equals: 201 values; a condition takes at most 200"),
    ("where:\n  rfm: {model: rfm_default, segments: [high_valu]}\n",
     "bad.yml:3: where.rfm.segments: unknown RFM segment 'high_valu' (did you mean 'high_value'?)"),
    ("where:\n  aipl: {model: defualt, stages: [L]}\n",
     "bad.yml:3: where.aipl.model: unknown AIPL model 'defualt' (did you mean 'default'?)"),
    ("where:\n  any:\n    - behavior: {did: purchse, last_days: 30}\n",
     "bad.yml:4: where.any[0].behavior.did: unknown behaviour type 'purchse' (did you mean 'purchase'?)"),
    ("where:\n  any:\n    - behavior: {did: purchase}\n",
     "bad.yml:4: where.any[0].behavior: give the window as last_days or as between: [start, end]"),
    ("where:\n  all:\n    - tag: {name: city, in: [a]}\n      behavior: {did: view, last_days: 3}\n",
     "bad.yml:4: where.all[0]: each condition is exactly one of all, any, not, tag, behavior, rfm, "
     "aipl, audience, upload, table, score, recommended; got tag, behavior"),
    ("where:\n  behavior: {did: view, last_days: 7, object_values: [shoes]}\n",
     "bad.yml:3: where.behavior.object_values: object_values needs object_attribute (one of product, "
     "category, brand, page): the kind of object the values name"),
    ("where:\n  behavior:\n    did: view\n    last_days: 7\n    object_attribute: categry\n"
     "    object_values: [shoes]\n",
     "bad.yml:6: where.behavior.object_attribute: unknown object attribute 'categry' (did you mean "
     "'category'?); one of product, category, brand, page"),
    ("where:\n  rfm:\n    model: rfm_default\n    min_scores: {r: 6, f: 0}\n",
     "bad.yml:5: where.rfm.min_scores.r: r score 6 is out of range: RFM model 'rfm_default' scores r "
     "from 1 to 5"),
    ("where:\n  rfm:\n    model: rfm_default\n    min_scores: {r: 6, f: 0}\n",
     "bad.yml:5: where.rfm.min_scores.f: f score 0 is out of range: RFM model 'rfm_default' scores f "
     "from 1 to 5"),
    ("where:\n  rfm: {model: rfm_lifetime, min_scores: {m: 5}}\n",  # four bins
     "bad.yml:3: where.rfm.min_scores.m: m score 5 is out of range: RFM model 'rfm_lifetime' scores m "
     "from 1 to 4"),
    ("where:\n  recommended: {task: shanghai_beauty_pick, pool: skincare}\n",
     "bad.yml:3: where.recommended.task: unknown recommendation task 'shanghai_beauty_pick' (did you "
     "mean 'shanghai_beauty_picks'?); the tasks are in ml/recommend.yml (a removed task takes the "
     "conditions that read it along: remove this condition, or this audience)"),
    ("where:\n  recommended: {task: shanghai_beauty_picks, pool: skincare}\n",
     "bad.yml:3: where.recommended.pool: unknown product pool 'skincare' (did you mean "
     "'skincare_only'?); the pools are ml/pools/<name>.yml"),
    ("where:\n  recommended: {task: shanghai_beauty_picks, pool: skincare_only, item: P1}\n",
     "bad.yml:3: where.recommended: a recommended condition takes one of item, pool or min_score"),
    ("where:\n  score: {model: repurchase, top: 10, top_percent: 5}\n",
     "bad.yml:3: where.score: a score condition takes one of min_probability, top or top_percent"),
    ("where:\n  score: {model: churn, top: 10}\n",
     "bad.yml:3: where.score.model: Input should be 'repurchase'"),
    ("where:\n  rfm: {model: rfm_default, min_scores: {}}\n",
     "bad.yml:3: where.rfm: min_scores needs at least one of r, f, m"),
    ("id_type: wechat\nwhere:\n  tag: {name: city, in: [a]}\n",
     "bad.yml:2: id_type: id_type 'wechat' is not one of one_id, unionid, mobile, email, imei, "
     "idfa, oaid, openid, member_id"),
])
def test_validation_errors_name_file_line_and_field(tmp_path, body, expected):
    assert expected in _problems(tmp_path, "name: bad\n" + body)


@pytest.mark.parametrize(("body", "expected"), [
    ("where:\n  upload: {file: ids.txt, id_type: mobile}\n",
     "bad.yml:3: where.upload.file: '1380013800' is not a valid mobile; fix or remove the line (ids.txt:3)"),
    ("where:\n  upload: {file: missing.csv, id_type: mobile}\n",
     "bad.yml:3: where.upload.file: upload file missing.csv does not exist (looked for "),
    ("where:\n  table: {name: reference.guests, id_type: wechat}\n",
     "bad.yml:3: where.table.id_type: unknown id type 'wechat'"),
    ("where:\n  tag: {name: city, in: [a]}\nlimit:\n  size: 10\n  order_by: {tag: spend_9d}\n",
     "bad.yml:6: limit.order_by.tag: unknown tag 'spend_9d' (did you mean 'spend_90d'?)"),
    ("where:\n  tag: {name: city, in: [a]}\nlimit: {size: 10}\n",
     "bad.yml:4: limit: limit takes order_by: {tag: .., direction: desc} or sample: {seed: ..}"),
    ("refresh: 0 25 * * *\nwhere:\n  tag: {name: city, in: [a]}\n",
     "bad.yml:2: refresh: refresh '0 25 * * *' is not manual, hourly, daily or a five-field cron"),
    ("where:\n  tag: {name: city, in: [a]}\nunion: [a, b]\n",
     "bad.yml:1: an audience has where: (a condition) or one set operation (union, intersect, "
     "difference); got where, union"),
    ("union: [a]\n",
     "bad.yml:2: union: List should have at least 2 items after validation, not 1"),
    ("where:\n  aipl: {model: default, stages: [L, X]}\n",
     "bad.yml:3: where.aipl.stages[1]: unknown AIPL stage 'X'; stages are A, I, P, L"),
    ("where:\n  aipl:\n    model: default\n    from: [A]\n    to: [p]\n    last_days: 7\n",
     "bad.yml:6: where.aipl.to[0]: unknown AIPL stage 'p' (did you mean 'P'?); stages are A, I, P, L"),
    ("where:\n  aipl: {model: default, stages: [purchase]}\n",
     "bad.yml:3: where.aipl.stages[0]: unknown AIPL stage 'purchase' (did you mean 'P'?); stages are "
     "A, I, P, L"),
    ("where:\n  aipl: {model: default, stages: [L], from: [A], to: [P], last_days: 3}\n",
     "bad.yml:3: where.aipl: an aipl condition takes stages: [...] or a flow (from, to and a window), "
     "not both"),
])
def test_validation_errors_of_inputs_limits_and_set_operations(tmp_path, body, expected):
    (tmp_path / "ids.txt").write_text("mobile\n13800138000\n1380013800\n")
    problems = [p.replace(str(tmp_path) + "/", "", 1) for p in _problems(tmp_path, "name: bad\n" + body)]
    assert any(p.startswith(expected) for p in problems), problems


def _project_problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / f"{name}.yml").write_text(text)
    with pytest.raises(AudienceErrors) as info:
        load_project(tmp_path, CATALOG)
    return [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems]


WHERE = "where:\n  tag: {name: city, in: [Shanghai]}\n"


def test_references_must_exist_and_set_operations_share_an_id_type(tmp_path):
    problems = _project_problems(tmp_path, {
        "a": "name: a\nid_type: mobile\n" + WHERE,
        "b": "name: b\nid_type: email\n" + WHERE,
        "u": "name: u\nid_type: mobile\nunion:\n  - a\n  - b\n  - {audience: c, version: 2}\n",
        "w": "name: w\nwhere:\n  all:\n    - audience: {name: aa}\n",
    })
    assert "u.yml:5: union[1]: set operations combine audiences of one id type: 'b' saves email, " \
           "'u' saves mobile" in problems
    assert "u.yml:6: union[2]: unknown audience 'c' (no audiences/c.yml)" in problems
    assert "w.yml:4: where.all[0].audience.name: unknown audience 'aa' (did you mean 'a'?)" in problems


def test_cycles_and_more_than_three_layers_of_set_operations_are_errors(tmp_path):
    problems = _project_problems(tmp_path, {
        "x": "name: x\nwhere:\n  audience: {name: y}\n",
        "y": "name: y\nunion: [x, z]\n",
        "z": "name: z\n" + WHERE,
    })
    # at the reference that closes the cycle, in the file it starts from
    assert [p for p in problems if "cycle" in p] in (
        ["x.yml:3: where.audience.name: audiences read each other in a cycle: x -> y -> x"],
        ["y.yml:2: union[0]: audiences read each other in a cycle: y -> x -> y"]), problems
    for f in tmp_path.glob("*.yml"):
        f.unlink()
    problems = _project_problems(tmp_path, {
        "a": "name: a\n" + WHERE, "b": "name: b\n" + WHERE,
        "l1": "name: l1\nunion: [a, b]\n",
        "l2": "name: l2\nintersect: [l1, a]\n",
        "l3": "name: l3\ndifference:\n  - union: [l2, b]\n  - a\n",
    })
    assert problems == ["l3.yml:2: difference: 4 layers of set operations (counting the audiences it "
                        "combines); at most 3"]
    assert (tmp_path / "self.yml").write_text("name: self\nwhere:\n  audience: {name: self}\n")
    problems = _project_problems(tmp_path, {})
    assert "self.yml:3: where.audience.name: audience 'self' cannot read itself" in problems


def test_object_attributes_are_the_raw_contracts():
    from openaudience.core.schema.raw import OBJECT_ATTRIBUTES
    from openaudience.segments.spec import OBJECT_ATTRIBUTES as SPEC_OBJECT_ATTRIBUTES

    assert SPEC_OBJECT_ATTRIBUTES == OBJECT_ATTRIBUTES
    # the random trees try every type of the shop's behaviour events (the event codes of
    # events/*.yml are types too, tested with the collector's events in tests/test_events.py)
    from openaudience.events.source import load_events

    codes = set(load_events().events)
    assert codes <= CATALOG.event_types
    assert set(EVENT_OBJECTS) == CATALOG.event_types - codes


def test_invalid_yaml_and_a_misnamed_file(tmp_path):
    problems = _problems(tmp_path, "name: bad\nwhere:\n  - [\n")  # the list never closes
    assert any(p.startswith("bad.yml:4: not valid YAML: expected the node content") for p in problems)
    problems = _problems(tmp_path, "name: other\nwhere:\n  tag: {name: city, in: [a]}\n")
    assert "bad.yml:1: name: the file is bad.yml; name it other.yml or the name bad" in problems


def test_validate_command_exits_non_zero_and_lists_every_problem(built_engines, tmp_path):
    (tmp_path / "a.yml").write_text("name: a\nwhere:\n  tag: {name: citty, in: [x]}\n")
    (tmp_path / "b.yml").write_text("name: b\nwhere:\n  tag: {name: city, in: [x]}\n")
    duck = built_engines["duckdb"]
    done = duck.oa("audience", "validate", str(tmp_path / "a.yml"), str(tmp_path / "b.yml"))
    assert done.returncode == 2
    assert "1 problem(s)" in done.stderr and "a.yml:3: where.tag.name: unknown tag 'citty'" in done.stderr
    done = built_engines["duckdb"].oa("audience", "validate")
    assert done.returncode == 0, done.stderr
    assert f"{len(EXAMPLES)} audience file(s) valid" in done.stdout


def test_the_published_json_schema_is_current_and_accepts_the_examples():
    import json

    import jsonschema
    import yaml

    from openaudience.core.settings import PROJECT_ROOT
    from openaudience.segments.spec import json_schema

    published = json.loads((PROJECT_ROOT / "docs/audience.schema.json").read_text())
    assert published == json_schema(), "regenerate docs/audience.schema.json (see docs/segments.md)"
    validator = jsonschema.Draft202012Validator(published)
    for path in EXAMPLES:
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name
    bad = {"name": "x", "where": {"tag": {"name": "city", "inn": ["a"]}}}
    assert list(validator.iter_errors(bad))


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_count_and_sql_commands(built_engines, evaluators, engine):
    target = built_engines[engine]
    audience = load_audience(EXAMPLES[0], CATALOG)
    members = evaluators[engine].members(audience)
    done = target.oa("audience", "count", audience.name, "--as-of", AS_OF)
    assert done.returncode == 0, done.stderr
    assert f"{audience.name}: {len(members):,} members;" in " ".join(done.stdout.split())
    done = target.oa("audience", "sql", audience.name, "--dialect", "trino")
    assert done.returncode == 0 and done.stdout.lstrip().startswith(("SELECT", "WITH")), done.stderr
    done = target.oa("audience", "sql", "no_such_audience")
    assert done.returncode == 2 and "no audience 'no_such_audience'" in done.stderr


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_everyone_is_one_id_is_not_null(built_engines, evaluators, engine, tmp_path):
    """The "everyone" audience: every person of user_tags."""
    path = tmp_path / "everyone.yml"
    path.write_text("name: everyone\nid_type: one_id\nwhere:\n  tag: {name: one_id, is_not_null: true}\n")
    audience = load_audience(path, CATALOG)
    members = evaluators[engine].members(audience)
    [(people,)] = built_engines[engine].warehouse.query("select count(*) from marts.user_tags")
    assert len(members) == people > 1000
