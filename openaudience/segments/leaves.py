"""The condition kinds only audiences use: rfm, aipl, audience, upload, table, score and
recommended. Each registers in the condition language's registry (openaudience.conditions) like
tag and behavior; their SQL reads the audience compiler's shared joins (`ctx.joined`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator
from sqlglot import exp

from openaudience.conditions import Leaf, Relations, Requirement, Window
from openaudience.conditions.sql import and_, col, lit, never_null
from openaudience.core.schema.operational import MEMBERS_TABLE, UPLOADS_TABLE, VERSIONS_TABLE
from openaudience.core.yaml_files import suggest

AIPL_STAGES = ("A", "I", "P", "L")
_AIPL_NAMES = {"awareness": "A", "interest": "I", "purchase": "P", "loyalty": "L"}
NAME = r"^[a-z][a-z0-9_]{0,62}$"


class RfmLeaf(Leaf):
    kind: ClassVar[str] = "rfm"

    model: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    segments: list[str] | None = None
    min_scores: dict[Literal["r", "f", "m"], int] | None = None

    @model_validator(mode="after")
    def _one(self) -> RfmLeaf:
        if (self.segments is None) == (self.min_scores is None):
            raise ValueError("an rfm condition takes segments: [...] or min_scores: {r: .., f: .., m: ..}")
        if self.min_scores == {}:
            raise ValueError("min_scores needs at least one of r, f, m")
        return self

    def check(self, loc: tuple, env: Any, report) -> None:
        if self.model not in env.rfm_models:
            report((*loc, "model"), f"unknown RFM model {self.model!r}{suggest(self.model, env.rfm_models)}")
        for seg in self.segments or []:
            if seg not in env.rfm_segments:
                report((*loc, "segments"), f"unknown RFM segment {seg!r}{suggest(seg, env.rfm_segments)}")
        top = env.rfm_models.get(self.model)
        for k, score in sorted((self.min_scores or {}).items()):
            if top is not None and not 1 <= score <= top[k]:
                report((*loc, "min_scores", k), f"{k} score {score} is out of range: RFM model "
                                                f"{self.model!r} scores {k} from 1 to {top[k]}")

    def compile(self, ctx) -> exp.Expression:
        rfm = exp.select(*[col(c, None) for c in ("one_id", "rfm_segment", "r_score", "f_score",
                                                   "m_score")]).from_(ctx.relations.table(self.model))
        alias = ctx.joined(rfm)
        if self.segments is not None:
            e = exp.In(this=col("rfm_segment", alias), expressions=[lit(s) for s in self.segments])
        else:
            e = and_([exp.GTE(this=col(f"{k}_score", alias), expression=lit(v))
                      for k, v in sorted(self.min_scores.items())])
        return never_null(e)

    def describe(self) -> str:
        what = (f"segments {', '.join(self.segments)}" if self.segments is not None
                else ", ".join(f"{k} >= {v}" for k, v in sorted(self.min_scores.items())))
        return f"rfm {self.model}: {what}"


def _stage(value: Any) -> Any:
    """An AIPL stage letter, or a clear error (with the letter meant, for `p` or `purchase`)."""
    if isinstance(value, str) and value not in AIPL_STAGES:
        meant = value.upper() if value.upper() in AIPL_STAGES else _AIPL_NAMES.get(value.lower())
        hint = f" (did you mean {meant!r}?)" if meant else ""
        raise ValueError(f"unknown AIPL stage {value!r}{hint}; stages are {', '.join(AIPL_STAGES)}")
    return value


# the check runs before the Literal's, and leaves the JSON Schema an enum of the four letters
Stage = Annotated[Literal["A", "I", "P", "L"], BeforeValidator(_stage)]


class AiplLeaf(Leaf):
    """`{model: default, stages: [P, L]}`: the stage on the refresh date; or a flow,
    `{model: default, from: [A], to: [P], last_days: 7}`: in a `from` stage at the start of the
    window and in a `to` stage at its end (the refresh date for last_days)."""

    kind: ClassVar[str] = "aipl"

    model: str
    stages: list[Stage] | None = None
    from_: Annotated[list[Stage] | None, Field(alias="from")] = None
    to: list[Stage] | None = None
    last_days: int | None = Field(default=None, ge=1, le=366)
    between: tuple[dt.date, dt.date] | None = None

    @model_validator(mode="after")
    def _shape(self) -> AiplLeaf:
        flow = (self.from_, self.to, self.last_days, self.between)
        if self.stages is not None:
            if any(v is not None for v in flow):
                raise ValueError("an aipl condition takes stages: [...] or a flow (from, to and a "
                                 "window), not both")
            return self
        if self.from_ is None or self.to is None:
            raise ValueError("an aipl condition takes stages: [...], or from: [...] and to: [...] "
                             "with last_days or between")
        Window(last_days=self.last_days, between=self.between)
        return self

    def check(self, loc: tuple, env: Any, report) -> None:
        if self.model not in env.aipl_models:
            report((*loc, "model"), f"unknown AIPL model {self.model!r}"
                                    f"{suggest(self.model, env.aipl_models)}")

    def _window(self, ctx) -> tuple[dt.date, dt.date]:
        return self.between or (ctx.literal_today - dt.timedelta(days=self.last_days), ctx.literal_today)

    def requirements(self, ctx) -> list[Requirement]:
        if self.stages is not None:
            return []
        return [Requirement("aipl_date", self.model, day.isoformat()) for day in self._window(ctx)]

    def compile(self, ctx) -> exp.Expression:
        table = ctx.relations.table("aipl_daily")
        model = exp.EQ(this=col("aipl_model", None), expression=lit(self.model))

        def stage_on(day: exp.Expression, stages: list[str]) -> exp.Expression:
            day_rows = (exp.select(col("one_id", None), col("stage", None)).from_(table.copy())
                        .where(exp.and_(model.copy(), exp.EQ(this=col("stat_date", None), expression=day))))
            return exp.In(this=col("stage", ctx.joined(day_rows)), expressions=[lit(s) for s in stages])

        if self.stages is not None:
            up_to_today = exp.LTE(this=col("stat_date", None), expression=ctx.today_sql())
            latest = (exp.select(exp.func("MAX", col("stat_date", None))).from_(table.copy())
                      .where(exp.and_(model.copy(), up_to_today)))
            return never_null(stage_on(latest.subquery(), self.stages))
        start, end = self._window(ctx)
        return never_null(exp.and_(stage_on(lit(start), self.from_), stage_on(lit(end), self.to)))

    def describe(self) -> str:
        if self.stages is not None:
            return f"aipl {self.model}: stage {'/'.join(self.stages)} on the refresh date"
        window = f"last {self.last_days} days" if self.last_days else f"{self.between[0]}..{self.between[1]}"
        return f"aipl {self.model}: {'/'.join(self.from_)} -> {'/'.join(self.to)} ({window})"


def latest_version(name: str, relations: Relations) -> exp.Expression:
    if relations.latest_versions is not None:  # resolved from the state store (Spark)
        return lit(relations.latest_version(name) or 0)
    return (exp.select(exp.func("MAX", col("version", None)))
            .from_(relations.audience_table(VERSIONS_TABLE))
            .where(exp.EQ(this=col("audience", None), expression=lit(name))))


class AudienceLeaf(Leaf):
    """`{name: big_spenders}`: a member of another audience's latest built version, or of one of
    its kept snapshots with `version: 3`."""

    kind: ClassVar[str] = "audience"

    name: str = Field(pattern=NAME)
    version: int | None = Field(default=None, ge=1)

    def requirements(self, ctx) -> list[Requirement]:
        return [Requirement("audience", self.name, str(self.version or ""))]

    def compile(self, ctx) -> exp.Expression:
        latest = latest_version(self.name, ctx.relations)
        version = (lit(self.version) if self.version is not None
                   else latest.subquery() if isinstance(latest, exp.Select) else latest)
        members = (exp.select(col("one_id", None))
                   .from_(ctx.relations.audience_table(MEMBERS_TABLE))
                   .where(exp.and_(exp.EQ(this=col("audience", None), expression=lit(self.name)),
                                   exp.EQ(this=col("version", None), expression=version))))
        return ctx.member_of(members)

    def describe(self) -> str:
        return f"member of audience {self.name}" + (f" version {self.version}" if self.version else "")


def _check_id_type(leaf, loc: tuple, env: Any, report) -> bool:
    if leaf.id_type not in env.id_types:
        report((*loc, "id_type"), f"unknown id type {leaf.id_type!r}{suggest(leaf.id_type, env.id_types)}")
        return False
    return True


class UploadLeaf(Leaf):
    """`{file: uploads/vip.csv, id_type: mobile}`: people holding one of the ids in a CSV or TXT
    file (one id per line; a header line naming user_unique_id or the id type is skipped),
    found through the identity graph. The path is relative to the audience file."""

    kind: ClassVar[str] = "upload"

    file: str = Field(min_length=1)
    id_type: str

    def check(self, loc: tuple, env: Any, report) -> None:
        if _check_id_type(self, loc, env, report) and getattr(env, "read_upload", None) is not None:
            env.read_upload(self, loc)

    def _digest(self, ctx) -> str:
        digest = ctx.uploads.get((self.file, self.id_type))
        if digest is None:
            raise AssertionError(f"upload {self.file} reached the compiler unread")
        return digest

    def requirements(self, ctx) -> list[Requirement]:
        return [Requirement("upload", self._digest(ctx), self.file)]

    def compile(self, ctx) -> exp.Expression:
        ids = (exp.select(col("id_value", None)).from_(ctx.relations.audience_table(UPLOADS_TABLE))
               .where(exp.EQ(this=col("upload", None), expression=lit(self._digest(ctx)))))
        return ctx.member_of(ctx.resolved(ids, self.id_type))

    def describe(self) -> str:
        return f"in upload {self.file} ({self.id_type})"


class TableLeaf(Leaf):
    """`{name: reference.store_event_guests, id_type: member_id}`: people holding one of the ids
    in a warehouse table's single `user_unique_id` column (unique, never NULL)."""

    kind: ClassVar[str] = "table"

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}\.[A-Za-z_][A-Za-z0-9_]{0,62}$")
    id_type: str = "one_id"

    @property
    def schema_table(self) -> tuple[str, str]:
        schema, table = self.name.split(".")
        return schema, table

    def check(self, loc: tuple, env: Any, report) -> None:
        _check_id_type(self, loc, env, report)

    def requirements(self, ctx) -> list[Requirement]:
        return [Requirement("table", self.name, self.id_type)]

    def compile(self, ctx) -> exp.Expression:
        schema, name = self.schema_table
        ids = exp.select(exp.alias_(exp.cast(col("user_unique_id", None), "TEXT"), "id_value")).from_(
            exp.table_(name, db=schema, quoted=True))
        return ctx.member_of(ctx.resolved(ids, self.id_type))

    def describe(self) -> str:
        return f"in table {self.name} ({self.id_type})"


class ScoreLeaf(Leaf):
    """`{model: repurchase, min_probability: 0.6}`, `{model: repurchase, top: 5000}` or
    `{model: repurchase, top_percent: 10}`: people by their repurchase score (ml.repurchase_scores,
    written by the active model version): a probability at least this, the first `top` by rank,
    or the first `top_percent` % of everyone scored."""

    kind: ClassVar[str] = "score"

    model: Literal["repurchase"] = "repurchase"
    min_probability: float | None = Field(default=None, ge=0, le=1)
    top: int | None = Field(default=None, ge=1)
    top_percent: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="after")
    def _one(self) -> ScoreLeaf:
        given = [k for k in ("min_probability", "top", "top_percent") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a score condition takes one of min_probability, top or top_percent")
        return self

    def requirements(self, ctx) -> list[Requirement]:
        return [Requirement("ml_scores", self.model)]

    def compile(self, ctx) -> exp.Expression:
        total = exp.Window(this=exp.func("COUNT", exp.Star()))
        scores = exp.select(col("one_id", None), col("probability", None), col("rank", None),
                            exp.alias_(total, "scored")).from_(ctx.relations.ml_table("repurchase_scores"))
        alias = ctx.joined(scores)
        if self.min_probability is not None:
            e = exp.GTE(this=col("probability", alias), expression=lit(self.min_probability))
        elif self.top is not None:
            e = exp.LTE(this=col("rank", alias), expression=lit(self.top))
        else:  # the first p % of everyone scored: rank <= ceil(p / 100 * scored)
            e = exp.LT(this=exp.Mul(this=exp.paren(exp.Sub(this=col("rank", alias), expression=lit(1))),
                                    expression=lit(100)),
                       expression=exp.Mul(this=lit(self.top_percent), expression=col("scored", alias)))
        return never_null(e)

    def describe(self) -> str:
        what = (f"probability >= {self.min_probability:g}" if self.min_probability is not None
                else f"top {self.top:,}" if self.top is not None else f"top {self.top_percent:g}%")
        return f"{self.model} score: {what}"


class RecommendedLeaf(Leaf):
    """`{task: shanghai_beauty_picks, item: P000123}` or `{task: ..., pool: skincare_and_beauty}`:
    people whose recommendations from the task (ml/recommend.yml) include the product, or any
    product of the pool (ml/pools/), within their first `top` (default: all the task made);
    `{task: ..., min_score: 0.8}`: a preference of at least this (0-1; one-product tasks)."""

    kind: ClassVar[str] = "recommended"

    task: str = Field(pattern=NAME)
    item: str | None = Field(default=None, min_length=1)
    pool: str | None = Field(default=None, pattern=NAME)
    min_score: float | None = Field(default=None, ge=0, le=1)
    top: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def _one(self) -> RecommendedLeaf:
        given = [k for k in ("item", "pool", "min_score") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a recommended condition takes one of item, pool or min_score")
        return self

    def check(self, loc: tuple, env: Any, report) -> None:
        if self.task not in env.recommend_tasks:
            report((*loc, "task"), f"unknown recommendation task {self.task!r}"
                                   f"{suggest(self.task, env.recommend_tasks)}; the tasks are in "
                                   "ml/recommend.yml (a removed task takes the conditions that read it "
                                   "along: remove this condition, or this audience)")
        if self.pool is not None and self.pool not in env.pools:
            report((*loc, "pool"), f"unknown product pool {self.pool!r}{suggest(self.pool, env.pools)}"
                                   f"; the pools are ml/pools/<name>.yml")

    def requirements(self, ctx) -> list[Requirement]:
        found = [Requirement("ml_task", self.task)]
        return found + [Requirement("ml_pool", self.pool)] if self.pool is not None else found

    def compile(self, ctx) -> exp.Expression:
        rec = ctx.relations.ml_table("recommendations")
        where = [exp.EQ(this=col("task", "r"), expression=lit(self.task))]
        if self.top is not None:
            where.append(exp.LTE(this=col("rank", "r"), expression=lit(self.top)))
        if self.item is not None:
            where.append(exp.EQ(this=col("item_id", "r"), expression=lit(self.item)))
        if self.min_score is not None:
            where.append(exp.GTE(this=col("score", "r"), expression=lit(self.min_score)))
        people = exp.select(col("one_id", "r")).distinct().from_(exp.alias_(rec, "r", table=True))
        if self.pool is not None:
            same_item = exp.EQ(this=col("item_id", "pi"), expression=col("item_id", "r"))
            people = people.join(exp.alias_(ctx.relations.ml_table("pool_items"), "pi", table=True),
                                 on=exp.and_(same_item, exp.EQ(this=col("pool", "pi"),
                                                               expression=lit(self.pool))))
        return ctx.member_of(people.where(and_(where)))

    def describe(self) -> str:
        what = (f"item {self.item}" if self.item else f"a product of pool {self.pool}" if self.pool
                else f"preference >= {self.min_score:g}")
        return f"recommended by {self.task}: {what}" + (f" in the top {self.top}" if self.top else "")
