"""Reading journeys/: each file checked on its own and against the audiences, the destinations
and the catalogue, with every rule of spec §3.1 and §8; every error names the file, the line and
the field. A file with errors is `incomplete` and cannot start.

The checked journey becomes a `Plan`: its steps as nodes with ids, each knowing the node its
people go to next (per branch). The engine runs plans; the plan of a started journey is the one
stored when it started, so editing the file afterwards changes nothing that runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from openaudience.core.errors import UserError
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.yaml_files import FileErrors, Problem, field_of, line_of, read_yaml, suggest
from openaudience.journeys.spec import (
    ACTIONS,
    FORKS,
    MAX_STEPS,
    BehaviorSplit,
    Fork,
    Journey,
    Step,
    walk,
)

JOURNEY_DIR = PROJECT_ROOT / "journeys"
ROOT = "start"
RESULT_CHANNELS = ("sms", "email", "webhook")


class JourneyErrors(FileErrors):
    """Problems of one or more journey files."""


@dataclass(frozen=True)
class Node:
    id: str
    kind: str                       # a step kind, or "start" for the root
    loc: tuple
    config: dict[str, Any]          # the step's body as JSON
    children: tuple[tuple[str, str], ...] = ()   # (branch, node id): "next" for the step after
    body: Any = None                # the step's body as its model

    def child(self, branch: str = "next") -> str | None:
        return next((n for b, n in self.children if b == branch), None)


@dataclass
class Plan:
    """A journey ready to run: the model, its nodes by id (the root first, then depth first),
    and the file's data it was read from (what a started journey stores and runs again)."""

    journey: Journey
    nodes: dict[str, Node]
    digest: str
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.journey.name

    def to_json(self) -> str:
        return json.dumps(self.data, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        return build_plan(Journey.model_validate(data), data)

    def parent_of(self, node_id: str) -> str | None:
        return next((n.id for n in self.nodes.values() if node_id in (c for _, c in n.children)), None)

    def actions(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind in ACTIONS]


def _auto_ids(journey: Journey) -> dict[tuple, str]:
    """Each step's id: written, or its kind and a number in the order written (`send_2`),
    skipping numbers a written id takes."""
    taken = {step.body.id for _, step, _, _ in walk(journey.steps) if step.body.id}
    counters: dict[str, int] = {}
    ids: dict[tuple, str] = {}
    for loc, step, _, _ in walk(journey.steps):
        if step.body.id:
            ids[loc] = step.body.id
            continue
        n = counters.get(step.kind, 0)
        while True:
            n += 1
            candidate = f"{step.kind}_{n}"
            if candidate not in taken:
                break
        counters[step.kind] = n
        taken.add(candidate)
        ids[loc] = candidate
    return ids


def build_plan(journey: Journey, data: dict[str, Any]) -> Plan:
    """The nodes of a journey whose structure is valid (ids unique), read from `data`."""
    ids = _auto_ids(journey)
    nodes: dict[str, Node] = {}

    def first(steps: list[Step], loc: tuple) -> str | None:
        return ids[(*loc, 0)] if steps else None

    def add_list(steps: list[Step], loc: tuple) -> None:
        for i, step in enumerate(steps):
            here = (*loc, i)
            children: list[tuple[str, str]] = []
            body = step.body
            if isinstance(body, Fork):
                for branch, sub, where in body.lists():
                    sub_loc = (*here, step.kind, *where)
                    target = first(sub, sub_loc)
                    if target:
                        children.append((branch, target))
            elif i + 1 < len(steps):
                children.append(("next", ids[(*loc, i + 1)]))
            config = body.model_dump(mode="json", by_alias=True, exclude_none=True)
            nodes[ids[here]] = Node(ids[here], step.kind, here, config, tuple(children), body)
            if isinstance(body, Fork):
                for _, sub, where in body.lists():
                    add_list(sub, (*here, step.kind, *where))

    root_children = (("next", first(journey.steps, ("steps",))),) if journey.steps else ()
    nodes[ROOT] = Node(ROOT, "start", ("trigger",), {}, root_children)
    add_list(journey.steps, ("steps",))
    # what runs: the file's data but its words for people (description, owner)
    body = {k: v for k, v in data.items() if k not in ("description", "owner")}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Plan(journey, nodes, digest, data)


@dataclass
class Journeys:
    folder: Path
    plans: dict[str, Plan]
    paths: dict[str, Path]
    problems: dict[str, list[Problem]] = field(default_factory=dict)   # file stem -> its problems
    generated: dict[str, str] = field(default_factory=dict)           # generated audience -> journey

    def get(self, name: str) -> Plan:
        if name in self.problems:
            raise JourneyErrors(self.problems[name])
        if name not in self.plans:
            hint = suggest(name, set(self.plans) | set(self.problems))
            raise UserError(f"no journey {name!r} in {self.folder}{hint}")
        return self.plans[name]

    @property
    def all_problems(self) -> list[Problem]:
        return [p for ps in self.problems.values() for p in ps]


def journey_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def _check(journey: Journey, path: Path, lines: dict, project, dests, report, events=None) -> None:
    from connectors.base import check_delivery
    from openaudience.conditions import check_condition
    from openaudience.delivery.channels import capabilities
    from openaudience.segments.source import _Env

    catalog = project.catalog
    event_trigger = journey.trigger.is_event
    if event_trigger:
        _check_event_trigger(journey, events, report)
    if path.stem != journey.name:
        report(("name",), f"the file is {path.name}; name it {journey.name}.yml or the name {path.stem}")
    if len(journey.name) > 80 or journey.name.startswith("simulation__"):
        report(("name",), "a journey's name has at most 80 characters and does not start with simulation__ "
                          "(simulations use it)")
    audience_name = journey.trigger.audience
    generated = getattr(project, "external", {}) or {}
    if event_trigger:
        audience_id_type = "one_id"   # people enter as the persons their events resolve to
    elif audience_name in project.audiences:
        audience_id_type = project.audiences[audience_name].id_type
    elif audience_name in generated:
        audience_id_type = "one_id"
    else:
        hint = (suggest(audience_name, set(project.audiences) | set(generated))
                or " (no audiences/" + audience_name + ".yml)")
        report(("trigger", "audience"), f"unknown audience {audience_name!r}{hint}")
        audience_id_type = None
    steps = list(walk(journey.steps))
    if not journey.steps:
        report(("steps",), "the journey has no steps; give at least one send or generate_audience")
    if len(steps) > MAX_STEPS:
        report(("steps",), f"{len(steps)} steps; at most {MAX_STEPS}")
    seen_ids: dict[str, tuple] = {}
    for loc, step, siblings, i in steps:
        body = step.body
        if body.id:
            if body.id in seen_ids or body.id == "start":
                also = field_of(seen_ids.get(body.id, ("trigger",)))
                report((*loc, step.kind, "id"), f"id {body.id!r} is used twice (also at "
                                                f"{also}); ids are unique")
            seen_ids[body.id] = loc
        last = i == len(siblings) - 1
        if step.kind in FORKS and not last:
            report((*loc, step.kind), f"a {step.kind} ends its list of steps: move the "
                                      f"{len(siblings) - i - 1} step(s) after it into its branches")
        if last and step.kind == "wait":
            report((*loc, step.kind), "the journey is incomplete: every path ends with an action (send, "
                                      "generate_audience) or end, and this one ends with a wait")
        if isinstance(body, Fork):
            for branch, sub, where in body.lists():
                if not sub:
                    report((*loc, step.kind, *where), f"branch {branch} has no steps: the journey is "
                                                      "incomplete; end it with an action or end")
            names = [b for b, _, _ in body.lists()]
            for b in set(names):
                if names.count(b) > 1:
                    report((*loc, step.kind), f"two branches are named {b!r}; name each branch once")
        if event_trigger and step.kind not in EVENT_STEPS:
            report((*loc, step.kind), f"{step.kind} is not available in an event-triggered journey (spec D "
                                      f"§2.1: people act as their events arrive); use "
                                      f"{', '.join(EVENT_STEPS)}")
            continue
        if step.kind == "send":
            _check_send(body.destination, (*loc, "send", "destination"), dests, audience_id_type, report,
                        capabilities, check_delivery)
            _check_send_events(journey, body.destination, (*loc, "send", "destination"), dests, events,
                               report)
        elif step.kind == "generate_audience":
            if body.name in project.audiences:
                report((*loc, "generate_audience", "name"),
                       f"audiences/{body.name}.yml exists; a generated audience needs a name of its own")
        elif step.kind == "result_branch":
            prev = siblings[i - 1] if i > 0 else None
            if prev is None or prev.kind != "send":
                report((*loc, "result_branch"), "a result_branch follows a send (to sms, email or webhook) "
                                                "in the same list: it branches on that send's results")
            elif prev.send.destination in dests.destinations:
                d = dests.destinations[prev.send.destination]
                if d.channel not in RESULT_CHANNELS:
                    report((*loc, "result_branch"), f"the send before it goes to {d.channel} "
                                                    f"({d.name}); results come back from sms, email "
                                                    "and webhook")
                elif d.channel == "webhook" and (d.webhook is None or d.webhook.receipts is None):
                    report((*loc, "result_branch"), f"webhook {d.name} collects no receipts "
                                                    "(webhook.receipts in "
                                                    f"destinations/{d.name}.yml): its results would all be "
                                                    "no_feedback")
        elif step.kind == "behavior_branch":
            if event_trigger:
                _check_event_behavior(journey, body, (*loc, "behavior_branch"), events, report)
            else:
                _check_behavior(body, (*loc, "behavior_branch"), catalog, report)
        elif step.kind == "tag_branch":
            env = _Env(catalog, lambda leaf, where: report(where, "upload conditions are not available in "
                                                                  "journeys; build an audience and use it"))
            for j, b in enumerate(body.branches):
                check_condition(b.where, (*loc, "tag_branch", "branches", j, "where"), env, report)
    if journey.goal is not None:
        g = journey.goal
        if g.did not in catalog.event_types:
            report(("goal", "did"), f"unknown behaviour type {g.did!r}{suggest(g.did, catalog.event_types)}")
        for ch in g.channels or []:
            if ch not in catalog.channels:
                report(("goal", "channels"), f"unknown channel {ch!r}{suggest(ch, catalog.channels)}")
    if journey.holdout is not None and journey.goal is None:
        report(("holdout",), "a holdout measures the lift on the goal: give goal: too")


EVENT_STEPS = ("send", "end", "behavior_branch", "result_branch", "copy_branch")
"""What an event-triggered journey may hold (spec D §2.1): no wait, no generate_audience, no
time, tag or random branch."""
EVENT_CHANNELS = ("sms", "email", "webhook")
"""The channels an event-triggered journey sends to (spec D §2.2: messages and the custom
component; no ad platform, no Kafka push)."""


class _Attributes:
    """What an attribute condition is checked against: the event's attributes and their types."""

    def __init__(self, event) -> None:
        self.tags = dict(event.attributes)
        self.tag_noun = self.op_noun = "attribute"


def _event_of(code: str, loc: tuple, events, report):
    """The registry's event `code`, or None after reporting why not."""
    if isinstance(events, Exception):
        report(loc, f"events/ has problems, so event {code!r} cannot be checked: {events}".splitlines()[0]
               + " (see `oa events validate`)")
        return None
    if code not in events.events:
        report(loc, f"unknown event {code!r}{suggest(code, events.events)}; events/*.yml defines the events")
        return None
    return events.events[code]


def _check_event_trigger(journey: Journey, events, report) -> None:
    from openaudience.conditions import check_condition

    t = journey.trigger
    event = _event_of(t.event, ("trigger", "event"), events, report)
    if event is None:
        return
    channel = events.channels[event.app_key]
    if t.channel not in (channel.name, channel.app_key):
        report(("trigger", "channel"), f"event {event.code} belongs to channel {channel.name!r} (app_key "
                                       f"{channel.app_key}), not {t.channel!r}")
    if t.attributes is not None:
        check_condition(t.attributes, ("trigger", "attributes"), _Attributes(event), report)


def _check_send_events(journey: Journey, name: str, loc: tuple, dests, events, report) -> None:
    """An event journey sends through sms, email and webhook only; event variables (`event:` in
    a destination's variables) need an event journey whose event has the attribute."""
    d = dests.destinations.get(name)
    if d is None:
        return
    wanted = {v: spec.event for v, spec in d.variables.items() if spec.event is not None}
    if not journey.trigger.is_event:
        if wanted:
            report(loc, f"destination {name} fills {', '.join(sorted(wanted))} from the triggering event; "
                        "only an event-triggered journey has one")
        return
    if d.channel not in EVENT_CHANNELS:
        report(loc, f"destination {name} sends to {d.channel}: an event-triggered journey sends by "
                    f"{', '.join(EVENT_CHANNELS)} only (spec D §2.2)")
    if wanted and not isinstance(events, Exception) and journey.trigger.event in events.events:
        attrs = events.events[journey.trigger.event].attributes
        for var, attr in sorted(wanted.items()):
            if attr not in attrs:
                report(loc, f"destination {name}: variable {var} reads attribute {attr!r}, which event "
                            f"{journey.trigger.event} does not have{suggest(attr, attrs)}")


def _check_event_behavior(journey: Journey, body: BehaviorSplit, loc: tuple, events, report) -> None:
    """Spec §3.3 and G10: an event of the trigger's channel, over at most a day after arriving."""
    from openaudience.conditions import check_condition
    from openaudience.journeys.spec import MAX_EVENT_WINDOW

    if body.look != "ahead":
        report((*loc, "look"), "an event-triggered journey's behaviour branch looks ahead: people wait "
                               "the window out from when they arrive (drop look: back)")
    if body.window_delta > MAX_EVENT_WINDOW:
        field = "window" if body.window is not None else "window_days"
        report((*loc, field), "the window of a behaviour branch in an event-triggered journey is at most "
                              "a day (spec D §3.3); write window: {minutes|hours: N} or window: {days: 1}")
    for k in ("channels", "object_attribute", "object_values", "amount"):
        if getattr(body, k) is not None:
            report((*loc, k), f"{k} applies to the built behaviour facts; in an event-triggered journey "
                              "give a condition on the event's attributes (attributes:)")
    event = _event_of(body.event, (*loc, "event"), events, report)
    if event is None:
        return
    trigger = events.events.get(journey.trigger.event)
    if trigger is not None and event.app_key != trigger.app_key:
        report((*loc, "event"), f"event {event.code} is of channel {event.app_key}; a behaviour branch "
                                f"uses the trigger's channel ({trigger.app_key}) (spec D §3.1 G10)")
    if body.attributes is not None:
        check_condition(body.attributes, (*loc, "attributes"), _Attributes(event), report)


def _check_send(name: str, loc: tuple, dests, audience_id_type: str | None, report, capabilities,
                check_delivery) -> None:
    from openaudience.segments.spec import ID_TYPES

    if name not in dests.destinations:
        hint = suggest(name, dests.destinations) or " (no destinations/" + name + ".yml)"
        report(loc, f"unknown destination {name!r}{hint}")
        return
    d = dests.destinations[name]
    id_type = d.id_type or audience_id_type
    if id_type is None:
        return
    if id_type not in ID_TYPES:
        report(loc, f"destination {name} sends by {id_type}, which user_tags does not hold")
        return
    problems = check_delivery(capabilities(d.channel), id_type, d.id_form, 0, d.batch_size)
    if problems:
        report(loc, f"destination {name} cannot send to this journey's people: " + "; ".join(problems))


def _check_behavior(body: BehaviorSplit, loc: tuple, catalog, report) -> None:
    if body.attributes is not None:
        report((*loc, "attributes"), "attributes: is a condition on events of an event-triggered journey; "
                                     "here use object_attribute and object_values")
    if body.event not in catalog.event_types:
        report((*loc, "event"),
               f"unknown behaviour type {body.event!r}{suggest(body.event, catalog.event_types)}")
    for ch in body.channels or []:
        if ch not in catalog.channels:
            report((*loc, "channels"), f"unknown channel {ch!r}{suggest(ch, catalog.channels)}")


def load_journey(path: Path, project, dests, events=None) -> Plan:
    """The plan of one journey file, or JourneyErrors listing every problem with its line."""
    from openaudience.conditions import reporter, validate_rewritten

    data, lines = read_yaml(path, JourneyErrors, "a mapping with name, trigger and steps")
    try:
        journey = validate_rewritten(Journey, data, path, lines, [], JourneyErrors)
    except JourneyErrors as exc:
        raise JourneyErrors(_relevant(exc.problems)) from None
    problems: list[Problem] = []
    report = reporter(path, lines, problems, [])
    if journey.trigger.is_event and events is None:
        events = _events()
    _check(journey, path, lines, project, dests, report, events)
    if problems:
        raise JourneyErrors(problems)
    return build_plan(journey, data)


def _relevant(problems: list[Problem]) -> list[Problem]:
    """Without the alternatives of a union the value was not meant as: `schedule: {daily: ...}`
    with an error inside is not also told it "should be 'once'"."""
    out = []
    for p in problems:
        head, sep, _ = p.field.partition(".literal[")
        if sep and any(q is not p and q.field.startswith(head + ".") and "literal[" not in q.field
                       for q in problems):
            continue
        where = p.field.replace(".str", "") if p.field.endswith(".str") else p.field
        out.append(Problem(p.file, p.line, where, p.message))
    return out


def _events(folder: Path | None = None):
    """The event registry, or the EventErrors that stop reading it (reported per journey)."""
    from openaudience.events.source import EVENT_DIR, EventErrors, load_events

    try:
        return load_events(folder or EVENT_DIR)
    except EventErrors as exc:
        return exc


def load_journeys(folder: Path = JOURNEY_DIR, project=None, dests=None, events_folder: Path | None = None
                  ) -> Journeys:
    """Every journey file of `folder`, each checked; a file with problems is kept out of `plans`
    and its problems are in `problems` (a bad file never stops the others). Also checked across
    files: generated audience names are unique, and no journey feeds its own trigger through
    generated audiences."""
    from openaudience.delivery.source import load_destinations
    from openaudience.segments.source import load_project

    project = project or load_project()
    dests = dests or load_destinations(audiences=project)
    out = Journeys(folder, {}, {})
    events = None
    for path in journey_files(folder):
        if events is None and b"event:" in path.read_bytes():
            events = _events(events_folder)
        try:
            plan = load_journey(path, project, dests, events)
        except JourneyErrors as exc:
            out.problems[path.stem] = exc.problems
            continue
        if plan.name in out.plans:
            out.problems[path.stem] = [Problem(path, 1, "name", f"journey {plan.name!r} is also "
                                                                  f"{out.paths[plan.name].name}")]
            continue
        out.plans[plan.name] = plan
        out.paths[plan.name] = path
    _check_across(out, project)
    return out


def _check_across(out: Journeys, project) -> None:
    owner: dict[str, str] = {}
    for name, plan in list(out.plans.items()):
        for node in plan.actions():
            if node.kind != "generate_audience":
                continue
            generated = node.config["name"]
            if generated in owner and owner[generated] != name:
                _fail(out, name, node.loc + ("generate_audience", "name"),
                      f"journey {owner[generated]} generates audience {generated!r} too; "
                      "give each its own name")
            owner.setdefault(generated, name)
    out.generated = dict(owner)
    graph: dict[str, set[str]] = {name: set() for name in out.plans}
    for name, plan in out.plans.items():
        trigger = plan.journey.trigger.audience
        if trigger is None:
            continue
        reads = set(project.upstream([trigger])) | {trigger} if trigger in project.audiences else {trigger}
        reads |= {r for a in list(reads) if a in project.audiences for r in project.reads(a)}
        for audience in reads:
            if audience in owner:
                graph[name].add(owner[audience])
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = list(reversed(exc.args[1]))
        first = cycle[0]
        text = " -> ".join(cycle)
        _fail(out, first, ("trigger", "audience"),
              f"journeys feed each other's triggers through generated audiences in a cycle: {text} "
              "(each enters people from an audience the next one generates)")


def _fail(out: Journeys, name: str, loc: tuple, message: str) -> None:
    path = out.paths[name]
    data_lines = read_yaml(path, JourneyErrors)[1]
    problem = Problem(path, line_of(data_lines, loc), field_of(loc), message)
    out.problems.setdefault(path.stem, []).append(problem)
    out.plans.pop(name, None)


def used_events(folder: Path = JOURNEY_DIR) -> dict[str, list[str]]:
    """Event code -> the journey files that trigger on it or branch on it (what the event
    management rules keep from being removed, spec D §7.2). Read from the files as written, so
    that a journey with other problems still protects its events."""
    import yaml

    used: dict[str, set[str]] = {}
    for path in journey_files(folder):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("trigger"), dict):
            continue
        event = data["trigger"].get("event")
        if not isinstance(event, str):
            continue
        name = str(data.get("name") or path.stem)
        used.setdefault(event, set()).add(name)
        stack = list(data.get("steps") or [])
        while stack:
            step = stack.pop()
            if not isinstance(step, dict):
                continue
            for value in step.values():
                if isinstance(value, dict):
                    if isinstance(value.get("event"), str):
                        used.setdefault(value["event"], set()).add(name)
                    for key in ("did", "did_not", "other", "steps"):
                        if isinstance(value.get(key), list):
                            stack.extend(value[key])
                    for branch in value.get("branches") or []:
                        if isinstance(branch, dict) and isinstance(branch.get("steps"), list):
                            stack.extend(branch["steps"])
    return {code: sorted(names) for code, names in sorted(used.items())}

