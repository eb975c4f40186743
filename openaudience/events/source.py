"""Reading events/: each file checked on its own (spec.py), then together: an app_key, a channel
name and an event code belong to one place only, an attribute id once per event (its own and
the channel's global ones together). Every error names the file, the line and the field.

The result is a `Registry`: what the collector accepts (an event code, its channel, the type of
each attribute) and what journeys trigger on. `changes()` holds a registry against the one a
collector last applied (spec §7.2: only names change and attributes are added) and against
the events journeys use (which cannot be removed)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from connectors.identifiers import id_types
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.yaml_files import (
    FileErrors,
    Problem,
    field_of,
    line_of,
    read_yaml,
    suggest,
    validate_model,
)
from openaudience.events.spec import EventsFile

EVENT_DIR = PROJECT_ROOT / "events"


class EventErrors(FileErrors):
    """Problems of one or more event definition files."""


@dataclass(frozen=True)
class EventDef:
    code: str
    name: str
    app_key: str                         # its channel
    attributes: dict[str, str]           # attribute id -> text | numeric (the event's and global)
    own: tuple[str, ...]                 # the event's own attribute ids (not the global ones)


@dataclass(frozen=True)
class ChannelDef:
    name: str
    app_key: str
    app_type: str
    key_env: str
    customer_id_type: str
    file: str


@dataclass
class Registry:
    channels: dict[str, ChannelDef] = field(default_factory=dict)    # by app_key
    events: dict[str, EventDef] = field(default_factory=dict)        # by event code

    def as_json(self) -> dict:
        """The registry as stored when a collector applies it (what later files are held to)."""
        return {"channels": {k: {"name": c.name, "app_type": c.app_type,
                                 "customer_id_type": c.customer_id_type}
                             for k, c in sorted(self.channels.items())},
                "events": {k: {"name": e.name, "app_key": e.app_key, "attributes": e.attributes}
                           for k, e in sorted(self.events.items())}}


def event_files(folder: Path) -> list[Path]:
    """The definition files of `folder` (not those starting with `_`), in name order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.yml") if not p.name.startswith("_"))


def load_events(folder: Path = EVENT_DIR) -> Registry:
    """Every file of `folder`, checked alone and together; EventErrors lists every problem."""
    problems: list[Problem] = []
    registry = Registry()
    where_key: dict[str, str] = {}    # app_key -> file:line of its first definition
    where_name: dict[str, str] = {}
    where_code: dict[str, str] = {}
    known_ids = set(id_types())
    for path in event_files(folder):
        try:
            data, lines = read_yaml(path, EventErrors, "a mapping with channel and events")
            spec = validate_model(EventsFile, data, path, lines, EventErrors)
        except EventErrors as exc:
            problems.extend(exc.problems)
            continue

        def report(loc: tuple, message: str, path=path, lines=lines) -> None:
            problems.append(Problem(path, line_of(lines, loc), field_of(loc), message))

        c = spec.channel
        here = f"{path.name}:{line_of(lines, ('channel', 'app_key'))}"
        if c.app_key in where_key:
            report(("channel", "app_key"), f"app_key {c.app_key!r} is already the channel of "
                                           f"{where_key[c.app_key]}; an app_key names one channel")
        where_key.setdefault(c.app_key, here)
        if c.name in where_name:
            report(("channel", "name"), f"channel name {c.name!r} is already used by {where_name[c.name]}")
        where_name.setdefault(c.name, here)
        if c.customer_id_type not in known_ids:
            report(("channel", "customer_id_type"),
                   f"unknown id type {c.customer_id_type!r}{suggest(c.customer_id_type, known_ids)}; the id "
                   "types are seeds/id_types.csv")
        global_attrs: dict[str, str] = {}
        for i, a in enumerate(spec.attributes):
            if a.id in global_attrs:
                report(("attributes", i, "id"), f"attribute {a.id!r} appears twice")
            global_attrs[a.id] = a.type
        registry.channels[c.app_key] = ChannelDef(c.name, c.app_key, c.app_type, c.key_env,
                                                  c.customer_id_type, path.name)
        for i, e in enumerate(spec.events):
            at = f"{path.name}:{line_of(lines, ('events', i, 'code'))}"
            if e.code in where_code:
                report(("events", i, "code"), f"event code {e.code!r} is already defined at "
                                              f"{where_code[e.code]}; a code names one event")
                continue
            where_code[e.code] = at
            attrs = dict(global_attrs)
            for j, a in enumerate(e.attributes):
                if a.id in attrs:
                    what = "a global attribute of the channel" if a.id in global_attrs else "listed twice"
                    report(("events", i, "attributes", j, "id"), f"attribute {a.id!r} is {what}")
                attrs[a.id] = a.type
            registry.events[e.code] = EventDef(e.code, e.name, c.app_key, attrs,
                                               tuple(a.id for a in e.attributes))
    if problems:
        raise EventErrors(problems)
    return registry


def changes(registry: Registry, applied: dict | None, used: dict[str, list[str]] | None = None) -> list[str]:
    """What the management rules refuse, in words: against `applied` (Registry.as_json of what a
    collector accepted), an attribute removed or retyped, an event moved to another channel, a
    channel's app type or id type changed; against `used` (event code -> the journeys that trigger
    on it), an event removed. Names and new attributes are free."""
    refused: list[str] = []
    used = used or {}
    if applied:
        for key, before in applied.get("channels", {}).items():
            now = registry.channels.get(key)
            if now is None:
                continue  # a channel without events is free to go (its events are checked below)
            for prop in ("app_type", "customer_id_type"):
                if before.get(prop) != getattr(now, prop):
                    refused.append(f"channel {key}: {prop} was {before.get(prop)!r} and cannot change "
                                   f"(to {getattr(now, prop)!r}); define a new channel instead")
        for code, before in applied.get("events", {}).items():
            now = registry.events.get(code)
            if now is None:
                continue  # removal is judged by use, below
            if before.get("app_key") != now.app_key:
                refused.append(f"event {code}: it belongs to channel {before.get('app_key')!r} and cannot "
                               f"move to {now.app_key!r}")
            for attr, kind in (before.get("attributes") or {}).items():
                if attr not in now.attributes:
                    refused.append(f"event {code}: attribute {attr!r} cannot be removed (attributes are only "
                                   "added); put it back")
                elif now.attributes[attr] != kind:
                    refused.append(f"event {code}: attribute {attr!r} is {kind} and cannot become "
                                   f"{now.attributes[attr]}")
    for code, journeys in sorted(used.items()):
        if code not in registry.events:
            refused.append(f"event {code} cannot be removed: journey{'s' if len(journeys) > 1 else ''} "
                           f"{', '.join(sorted(journeys))} trigger{'' if len(journeys) > 1 else 's'} on it")
    return refused


def applied_path(home: Path) -> Path:
    """The registry a collector last served: what later definitions are held to."""
    return home / "events" / "registry.json"


def read_applied(home: Path) -> dict | None:
    path = applied_path(home)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EventErrors([Problem(path, 1, "", f"unreadable ({exc}); restore it from a backup, or "
                                                "delete it to accept the current definitions as they "
                                                "are")]) from None


def apply(registry: Registry, home: Path, used: dict[str, list[str]] | None = None) -> list[str]:
    """Check the management rules against the registry served before and record this one as
    served; the refusals in words (nothing is recorded then)."""
    refused = changes(registry, read_applied(home), used)
    if not refused:
        path = applied_path(home)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(registry.as_json(), indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    return refused
