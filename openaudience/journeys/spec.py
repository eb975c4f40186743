"""Journey files as typed models (docs/journeys.md). The YAML shape:

    name: cart_abandon_reminder
    description: People who left a cart get an SMS; three days on, the ones who still have not
      bought get an e-mail.
    owner: growth
    trigger:
      audience: cart_not_purchased
      schedule: once                    # or {daily: "18:00"}, {weekly: {day: monday, at: "16:00"}},
                                        # {monthly: {day: 1, at: "14:00"}}, {every_days: 3, at: "09:00"},
                                        # {cron: "0 9 * * 1"}
      reentry: once                     # every_cycle, or {after_days: 30}
    end_at: 2027-01-31 00:00
    holdout: {percent: 10}
    goal: {did: purchase, within_days: 7}
    steps:
      - send: {destination: cart_reminder_sms}
      - wait: {days: 3}
      - behavior_branch:
          event: purchase
          window_days: 3
          did: [end]
          did_not:
            - send: {destination: cart_reminder_email}

`steps` is a list run in order; a branch step ends its list and holds a list per branch, so the
journey is a tree (spec §3.1: no merges). Each step has an id, written (`id: first_sms`) or
given from its kind and position (`send_1`, `wait_1`, ...), by which its state and its sends'
idempotency keys are kept.
"""

from __future__ import annotations

import datetime as dt
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from openaudience.conditions import Strict, Threshold, condition_model
from openaudience.conditions.leaves import OBJECT_ATTRIBUTES
from openaudience.core.yaml_files import suggest
from openaudience.segments.spec import Condition, _valid_cron

NAME = r"^[a-z][a-z0-9_]*$"
MAX_BRANCHES = 10          # time, copy, random, tag and result branches (spec §3.1 G6)
MAX_WAIT_DAYS = 30         # a wait, a result branch's wait, a time branch's offset (spec §4.3)
MAX_BEHAVIOR_WINDOW_DAYS = 15   # a behaviour branch in an audience-triggered journey (spec §3.3)
MAX_EVENT_WINDOW = dt.timedelta(days=1)  # ... and in an event-triggered one
MAX_LIMIT_TIMES = 10       # an event trigger's limit: at most 10 entries ...
MAX_LIMIT_DAYS = 7         # ... within at most 7 days (spec §2.3)
MAX_MIN_COUNT = 100
MAX_STEPS = 200
MAX_GOAL_DAYS = 90
RESULTS = ("success", "failure", "opened", "clicked", "no_feedback")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _clock(value: str) -> str:
    if not isinstance(value, str) or not _TIME.match(value):
        raise ValueError(f"{value!r} is not a time of day; write it as HH:MM, e.g. \"09:00\"")
    return value


EventCondition = condition_model(
    "EventCondition", "event conditions", ("attribute",),
    "A condition on the attributes of an event (events/*.yml): attribute leaves combined with all, "
    "any and not.")


class Duration(Strict):
    """`{minutes: 30}`, `{hours: 2}`, `{days: 3}` or `{weeks: 1}`: exactly one unit."""

    minutes: int | None = Field(default=None, ge=1)
    hours: int | None = Field(default=None, ge=1)
    days: int | None = Field(default=None, ge=1)
    weeks: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one(self) -> Duration:
        given = [k for k in ("minutes", "hours", "days", "weeks") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of minutes, hours, days, weeks")
        if self.delta > dt.timedelta(days=MAX_WAIT_DAYS):
            raise ValueError(f"{self.describe()} is longer than {MAX_WAIT_DAYS} days, the longest wait")
        return self

    @property
    def delta(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.minutes or 0, hours=self.hours or 0, days=self.days or 0,
                            weeks=self.weeks or 0)

    def describe(self) -> str:
        unit = next(k for k in ("minutes", "hours", "days", "weeks") if getattr(self, k) is not None)
        n = getattr(self, unit)
        return f"{n} {unit if n != 1 else unit[:-1]}"


class Wait(Strict):
    """Hold people for a duration after they arrive, or until an exact time (in the project's
    time zone); at most 30 days either way."""

    minutes: int | None = Field(default=None, ge=1)
    hours: int | None = Field(default=None, ge=1)
    days: int | None = Field(default=None, ge=1)
    weeks: int | None = Field(default=None, ge=1)
    until: dt.datetime | None = None
    id: str | None = Field(default=None, pattern=NAME)

    @model_validator(mode="after")
    def _one(self) -> Wait:
        if self.until is not None:
            if any(getattr(self, k) is not None for k in ("minutes", "hours", "days", "weeks")):
                raise ValueError("a wait is a duration or until: an exact time, not both")
            if self.until.tzinfo is not None:
                raise ValueError("write until: without a time zone; it is read in the project's "
                                 "(OA_TIMEZONE)")
        else:
            self.duration  # noqa: B018 - validates
        return self

    @property
    def duration(self) -> Duration | None:
        if self.until is not None:
            return None
        return Duration(**{k: getattr(self, k) for k in ("minutes", "hours", "days", "weeks")
                           if getattr(self, k) is not None})


class Send(Strict):
    """Send the people who reach this step through a destination of destinations/: its channel,
    id form, variables, templates and policies (suppression, frequency caps, retries) apply; its
    audience and schedule do not (the journey says who and when)."""

    destination: str = Field(pattern=NAME)
    id: str | None = Field(default=None, pattern=NAME)


class GenerateAudience(Strict):
    """The people who reach this step become a version of an audience of that name (one_id),
    which audiences, destinations and other journeys read like any built audience."""

    name: str = Field(pattern=NAME)
    description: str = ""
    id: str | None = Field(default=None, pattern=NAME)


class End(Strict):
    id: str | None = Field(default=None, pattern=NAME)


class Branch(Strict):
    """A named branch of a copy branch: its own list of steps."""

    name: str = Field(pattern=NAME)
    steps: list[Step]


class RandomBranch(Branch):
    percent: float = Field(gt=0, le=100)


class TimedBranch(Branch):
    """People go on at `at` (the next such time of day after they arrive, in the project's time
    zone) or `after` a duration."""

    at: str | None = None
    after: Duration | None = None

    _at = field_validator("at")(lambda cls, v: v if v is None else _clock(v))

    @model_validator(mode="after")
    def _one(self) -> TimedBranch:
        if (self.at is None) == (self.after is None):
            raise ValueError("a time branch starts at: HH:MM or after: a duration")
        return self


class TagBranchItem(Branch):
    where: Condition


class ResultBranchItem(Branch):
    name: str | None = Field(default=None, pattern=NAME)  # the result names it by default
    result: Literal["success", "failure", "opened", "clicked", "no_feedback"]


class Fork(Strict, ABC):
    """A branch step: every person of it goes down one branch (or, for copy and time branches,
    every branch)."""

    id: str | None = Field(default=None, pattern=NAME)

    @abstractmethod
    def lists(self) -> list[tuple[str, list[Step], tuple]]:
        """(branch name, its steps, its location under the step) in order."""


class CopyBranch(Fork):
    """The same people go down every branch (spec §3.3: copy multi-branch)."""

    branches: list[Branch] = Field(min_length=2, max_length=MAX_BRANCHES)

    def lists(self):
        return [(b.name, b.steps, ("branches", i, "steps")) for i, b in enumerate(self.branches)]


class RandomSplit(Fork):
    """People are split at random by the percentages, which sum to 100; a person's branch is
    stable (a hash of the journey, the step and the person)."""

    branches: list[RandomBranch] = Field(min_length=2, max_length=MAX_BRANCHES)

    @model_validator(mode="after")
    def _hundred(self) -> RandomSplit:
        total = sum(b.percent for b in self.branches)
        if abs(total - 100) > 1e-9:
            raise ValueError(f"the percentages add up to {total:g}; they must add up to 100")
        for b in self.branches:
            if abs(b.percent * 100 - round(b.percent * 100)) > 1e-9:
                raise ValueError(f"branch {b.name}: {b.percent:g} %: at most two decimals")
        return self

    def lists(self):
        return [(b.name, b.steps, ("branches", i, "steps")) for i, b in enumerate(self.branches)]


class TimeSplit(Fork):
    """Every person goes down every branch, each at its own time (spec §3.3: a copy with a start
    time per branch)."""

    branches: list[TimedBranch] = Field(min_length=1, max_length=MAX_BRANCHES)

    def lists(self):
        return [(b.name, b.steps, ("branches", i, "steps")) for i, b in enumerate(self.branches)]


class TagSplit(Fork):
    """The first branch whose condition (the audience condition language) a person meets, in
    the order written; `other` for the rest (people with no branch end there without it)."""

    branches: list[TagBranchItem] = Field(min_length=1, max_length=MAX_BRANCHES)
    other: list[Step] | None = None

    def lists(self):
        out = [(b.name, b.steps, ("branches", i, "steps")) for i, b in enumerate(self.branches)]
        if self.other is not None:
            out.append(("other", self.other, ("other",)))
        return out


class ResultSplit(Fork):
    """After waiting (`after`, from when the send before it started), people go by what became
    of their message, in the order written: success (delivered, opened or clicked), failure,
    opened (or clicked), clicked, no_feedback (sent, nothing heard); `other` for the rest,
    including people the send did not message (suppressed, capped, held out, no id)."""

    after: Duration
    branches: list[ResultBranchItem] = Field(min_length=1, max_length=MAX_BRANCHES)
    other: list[Step] | None = None

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("branches"), list):
            data = {**data, "branches": [
                {**b, "name": b.get("name") or b.get("result")} if isinstance(b, dict) else b
                for b in data["branches"]]}
        return data

    @model_validator(mode="after")
    def _distinct(self) -> ResultSplit:
        seen = [b.result for b in self.branches]
        for r in set(seen):
            if seen.count(r) > 1:
                raise ValueError(f"result {r} has two branches; give each result one branch")
        return self

    def lists(self):
        out = [(b.name, b.steps, ("branches", i, "steps")) for i, b in enumerate(self.branches)]
        if self.other is not None:
            out.append(("other", self.other, ("other",)))
        return out


class BehaviorSplit(Fork):
    """Whether each person did a behaviour (fct_behaviors) in a window of `window_days`: the days
    before arriving (`look: back`, decided at once) or after (`look: ahead`, people wait the
    window out). `did_not` includes people who did it but not enough (count, amount) or not on
    the objects and channels named. A branch left out ends its people there."""

    event: str
    channels: list[str] | None = None
    object_attribute: str | None = None
    object_values: list[str] | None = Field(default=None, max_length=1000)
    count: Threshold | None = None
    amount: Threshold | None = None
    attributes: EventCondition | None = None
    """Event-triggered journeys: a condition on the attributes of the events counted."""
    window_days: int | None = Field(default=None, ge=1, le=MAX_BEHAVIOR_WINDOW_DAYS)
    window: Duration | None = None
    """Instead of window_days: `{minutes: 30}`, `{hours: 2}`, `{days: 1}` (at most a day in an
    event-triggered journey)."""
    look: Literal["back", "ahead"] = "ahead"
    did: list[Step] | None = None
    did_not: list[Step] | None = None

    @property
    def window_delta(self) -> dt.timedelta:
        return self.window.delta if self.window is not None else dt.timedelta(days=self.window_days or 0)

    @field_validator("object_attribute")
    @classmethod
    def _attribute(cls, value: str | None) -> str | None:
        if value is not None and value not in OBJECT_ATTRIBUTES:
            raise ValueError(f"unknown object attribute {value!r}{suggest(value, OBJECT_ATTRIBUTES)}; "
                             f"one of {', '.join(OBJECT_ATTRIBUTES)}")
        return value

    @model_validator(mode="after")
    def _some(self) -> BehaviorSplit:
        if self.did is None and self.did_not is None:
            raise ValueError("give did:, did_not: or both: the steps for each answer")
        if (self.window_days is None) == (self.window is None):
            raise ValueError("give the window as window_days: N or window: {minutes|hours|days: N}, "
                             "one of the two")
        if self.window_delta > dt.timedelta(days=MAX_BEHAVIOR_WINDOW_DAYS):
            raise ValueError(f"the window is longer than {MAX_BEHAVIOR_WINDOW_DAYS} days, the longest")
        if self.object_values and not self.object_attribute:
            raise ValueError("object_values needs object_attribute")
        return self

    def lists(self):
        return [(k, getattr(self, k), (k,)) for k in ("did", "did_not") if getattr(self, k) is not None]

    def leaf(self):
        """The condition language's behaviour leaf for the rows this branch counts."""
        from openaudience.conditions import BehaviorLeaf

        return BehaviorLeaf(did=self.event, channels=self.channels, object_attribute=self.object_attribute,
                            object_values=self.object_values,
                            last_days=max(1, -(-self.window_delta // dt.timedelta(days=1))),
                            count=self.count, amount=self.amount)


KINDS = ("send", "generate_audience", "wait", "end", "behavior_branch", "result_branch", "time_branch",
         "tag_branch", "copy_branch", "random_branch")
ACTIONS = ("send", "generate_audience")
FORKS = ("behavior_branch", "result_branch", "time_branch", "tag_branch", "copy_branch", "random_branch")


def _step_schema(schema: dict[str, Any]) -> None:
    """A step is also written as the word `end`."""
    as_object = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"const": "end"}, as_object]


class Step(Strict):
    """Exactly one of: send, generate_audience, wait, end, behavior_branch, result_branch,
    time_branch, tag_branch, copy_branch, random_branch. `end` may be written alone."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_step_schema)

    send: Send | None = None
    generate_audience: GenerateAudience | None = None
    wait: Wait | None = None
    end: End | None = None
    behavior_branch: BehaviorSplit | None = None
    result_branch: ResultSplit | None = None
    time_branch: TimeSplit | None = None
    tag_branch: TagSplit | None = None
    copy_branch: CopyBranch | None = None
    random_branch: RandomSplit | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data == "end":
            return {"end": {}}
        if isinstance(data, dict) and "end" in data and data["end"] is None:
            return {**data, "end": {}}
        if isinstance(data, dict) and len(data) == 1:
            (key, value), = data.items()
            if key not in KINDS:
                raise ValueError(f"unknown step {key!r}{suggest(str(key), KINDS)}; one of {', '.join(KINDS)}")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a step is exactly one of {', '.join(KINDS)}; got {', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def body(self):
        return getattr(self, self.kind)


for _model in (Branch, RandomBranch, TimedBranch, TagBranchItem, ResultBranchItem, CopyBranch, RandomSplit,
               TimeSplit, TagSplit, ResultSplit, BehaviorSplit, Step):
    _model.model_rebuild()


class Weekly(Strict):
    day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    at: str

    _at = field_validator("at")(lambda cls, v: _clock(v))


class Monthly(Strict):
    day: int = Field(ge=1, le=28)
    at: str

    _at = field_validator("at")(lambda cls, v: _clock(v))


class Schedule(Strict):
    """When cycles start (spec §2.4), in the project's time zone: `once` (written as the string)
    is one cycle at start; otherwise exactly one of daily, weekly, monthly, every_days, cron."""

    daily: str | None = None
    weekly: Weekly | None = None
    monthly: Monthly | None = None
    every_days: int | None = Field(default=None, ge=1, le=365)
    at: str | None = None
    cron: str | None = None

    _daily = field_validator("daily")(lambda cls, v: v if v is None else _clock(v))
    _at = field_validator("at")(lambda cls, v: v if v is None else _clock(v))

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not _valid_cron(value):
            raise ValueError(f"{value!r} is not a cron expression of five fields (minute hour day "
                             "month weekday)")
        return value

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        given = [k for k in ("daily", "weekly", "monthly", "every_days", "cron")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a periodic schedule is exactly one of daily, weekly, monthly, every_days, "
                             f"cron (or write schedule: once); got {', '.join(given) or 'none'}")
        if self.at is not None and self.every_days is None:
            raise ValueError("at: goes with every_days (daily, weekly and monthly carry their own time)")
        return self

    def cron_expression(self) -> str:
        """The schedule as cron (every_days: daily at its time; cycles skip days in between)."""
        if self.cron:
            return self.cron
        if self.daily:
            h, m = self.daily.split(":")
            return f"{int(m)} {int(h)} * * *"
        if self.weekly:
            h, m = self.weekly.at.split(":")
            return f"{int(m)} {int(h)} * * {(WEEKDAYS.index(self.weekly.day) + 1) % 7}"
        if self.monthly:
            h, m = self.monthly.at.split(":")
            return f"{int(m)} {int(h)} {self.monthly.day} * *"
        h, m = (self.at or "09:00").split(":")
        return f"{int(m)} {int(h)} * * *"

    def describe(self) -> str:
        if self.daily:
            return f"daily at {self.daily}"
        if self.weekly:
            return f"every {self.weekly.day} at {self.weekly.at}"
        if self.monthly:
            return f"monthly on day {self.monthly.day} at {self.monthly.at}"
        if self.every_days:
            return f"every {self.every_days} days at {self.at or '09:00'}"
        return f"cron {self.cron}"


class AfterDays(Strict):
    after_days: int = Field(ge=1, le=3650)


class Limit(Strict):
    """At most `times` entries per person within `within_days` days (spec §2.3: 10 and 7 at most)."""

    times: int = Field(ge=1, le=MAX_LIMIT_TIMES)
    within_days: int = Field(ge=1, le=MAX_LIMIT_DAYS)


class Trigger(Strict):
    """Who enters. Either an audience of audiences/ (its latest version at each cycle), once or
    on a schedule, where `reentry` says who may enter again in a later cycle: `once` (never),
    `every_cycle` or `{after_days: N}` (N days after their last entry), and nobody enters while
    still inside from an earlier cycle. Or an event of events/*.yml, as it happens: `event` (its
    code) of `channel`, optionally only events whose `attributes` meet a condition, a person
    entering at their `min_count`-th such event since they last entered, and `limit`: `once` or
    `{times: Y, within_days: X}` (Y <= 10, X <= 7)."""

    audience: str | None = Field(default=None, pattern=NAME)
    schedule: Literal["once"] | Schedule | None = None
    reentry: Literal["once", "every_cycle"] | AfterDays | None = None
    event: str | None = None
    channel: str | None = None
    attributes: EventCondition | None = None
    min_count: int | None = Field(default=None, ge=1, le=MAX_MIN_COUNT)
    limit: Literal["once"] | Limit | None = None

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_word(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "once":
            raise ValueError(f"{value!r} is not a schedule: write once, or one of {{daily: \"18:00\"}}, "
                             "{weekly: {day: monday, at: \"16:00\"}}, {monthly: {day: 1, at: \"14:00\"}}, "
                             "{every_days: 3, at: \"09:00\"}, {cron: \"0 9 * * 1\"}")
        return value

    @field_validator("reentry", mode="before")
    @classmethod
    def _reentry_word(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("once", "every_cycle"):
            raise ValueError(f"{value!r} is not a re-entry policy: "
                             "write once, every_cycle or {after_days: N}")
        return value

    @field_validator("limit", mode="before")
    @classmethod
    def _limit_word(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "once":
            raise ValueError(f"{value!r} is not a trigger limit: write once, or "
                             "{times: Y, within_days: X} (Y at most 10, X at most 7)")
        return value

    @model_validator(mode="after")
    def _kind(self) -> Trigger:
        if (self.audience is None) == (self.event is None):
            raise ValueError("a trigger is an audience (audience: NAME) or an event (event: CODE, "
                             "channel: NAME, limit: ...), one of the two")
        if self.audience is not None:
            extra = [k for k in ("channel", "attributes", "min_count", "limit")
                     if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)}: belong to an event trigger; an audience trigger has "
                                 "audience, schedule and reentry")
            if self.schedule is None:
                object.__setattr__(self, "schedule", "once")
            if self.reentry is None:
                object.__setattr__(self, "reentry", "once")
        else:
            extra = [k for k in ("schedule", "reentry") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)}: belong to an audience trigger; people enter an event "
                                 "trigger as their events arrive, as often as limit: allows")
            missing = [k for k in ("channel", "limit") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"an event trigger needs {' and '.join(missing)} (spec D §2.3): "
                                 "channel: the events/*.yml channel of the event; limit: once or "
                                 "{times: Y, within_days: X}")
        return self

    @property
    def periodic(self) -> bool:
        return self.event is None and self.schedule != "once"

    @property
    def is_event(self) -> bool:
        return self.event is not None

    @property
    def label(self) -> str:
        """What journeys.audience records: the audience, or event:CODE."""
        return self.audience if self.audience is not None else f"event:{self.event}"


class Holdout(Strict):
    """A stable share of entrants who go through the journey but are never sent anything: the
    control group of the report's lift."""

    percent: float = Field(gt=0, le=50)


class Goal(Strict):
    """What converts: a behaviour within `within_days` of entering (the report compares treated
    and held-out people on it)."""

    did: str
    channels: list[str] | None = None
    object_attribute: str | None = None
    object_values: list[str] | None = Field(default=None, max_length=1000)
    within_days: int = Field(ge=1, le=MAX_GOAL_DAYS)


class Journey(Strict):
    """A journey: who enters (trigger), what happens to them (steps), until when (end_at), who is
    held out, and what counts as converting (goal)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="OpenAudience journey file")

    name: str = Field(pattern=NAME, max_length=100)  # files: 80 (a simulation adds a prefix)
    description: str = ""
    owner: str = ""
    trigger: Trigger
    end_at: dt.datetime | None = None
    holdout: Holdout | None = None
    goal: Goal | None = None
    steps: list[Step]

    @field_validator("end_at")
    @classmethod
    def _naive(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            raise ValueError("write end_at without a time zone; it is read in the project's (OA_TIMEZONE)")
        return value


def walk(steps: list[Step], loc: tuple = ("steps",)) -> Iterator[tuple[tuple, Step, list[Step], int]]:
    """Every step, depth first in the order written: (location, step, its list, index in it)."""
    for i, step in enumerate(steps):
        yield (*loc, i), step, steps, i
        body = step.body
        if isinstance(body, Fork):
            for _, sub, where in body.lists():
                yield from walk(sub, (*loc, i, step.kind, *where))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a journey file (docs/journey.schema.json)."""
    schema = Journey.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
