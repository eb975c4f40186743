"""Reading destinations/: each file checked on its own and against the audiences, the tag
catalogue and its channel's capabilities; every error names the file, the line and the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestration.delivery.spec import CHANNELS, Destination, Policies
from orchestration.errors import UserError
from orchestration.segments.source import Project, load_project
from orchestration.segments.spec import ID_TYPES
from orchestration.settings import PROJECT_ROOT
from orchestration.yaml_files import (
    FileErrors,
    Problem,
    field_of,
    line_of,
    read_yaml,
    suggest,
    validate_model,
)

DESTINATION_DIR = PROJECT_ROOT / "destinations"
POLICIES_FILE = "_policies.yml"


class DestinationErrors(FileErrors):
    """Problems of one or more destination files."""


@dataclass
class Destinations:
    folder: Path
    destinations: dict[str, Destination]
    paths: dict[str, Path]
    policies: Policies
    audiences: Project

    def get(self, name: str) -> Destination:
        if name not in self.destinations:
            raise UserError(f"no destination {name!r} in {self.folder}"
                            f"{suggest(name, self.destinations)}")
        return self.destinations[name]

    def id_type(self, name: str) -> str:
        d = self.destinations[name]
        return d.id_type or self.audiences.audiences[d.audience].id_type

    def for_audience(self, audience: str) -> list[str]:
        return [n for n, d in self.destinations.items() if d.audience == audience]


def _check_email(d: Destination, folder: Path, report) -> None:
    """The templates parse, and name only the member's variables, email and unsubscribe_url."""
    import jinja2

    from connectors.smtp import TEMPLATE_NAMES, undeclared
    from orchestration.delivery.channels import email_templates
    from orchestration.errors import ConfigError

    e = d.email
    try:
        html, text = email_templates(e, folder)
    except ConfigError as exc:
        report(("email", "html_file" if e.html_file else "text_file"), str(exc))
        return
    known = set(d.variables) | set(TEMPLATE_NAMES)
    for field, source, is_html in (("subject", e.subject, False),
                                   ("html_file" if e.html_file else "html", html, True),
                                   ("text_file" if e.text_file else "text", text, False)):
        if source is None:
            continue
        try:
            names = undeclared(source, is_html)
        except jinja2.TemplateSyntaxError as exc:
            report(("email", field), f"template error on its line {exc.lineno}: {exc.message}")
            continue
        for name in sorted(names - known):
            report(("email", field), f"the template uses {{{{ {name} }}}}, which is neither a variable "
                                     f"of this destination nor one of {', '.join(TEMPLATE_NAMES)}"
                                     f"{suggest(name, known)}")


def destination_files(folder: Path = DESTINATION_DIR) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in [*folder.glob("*.yml"), *folder.glob("*.yaml")]
                  if not p.name.startswith("_"))


def load_destinations(folder: Path = DESTINATION_DIR, audiences: Project | None = None) -> Destinations:
    """Every destination of `folder` with the shared policies; DestinationErrors lists every
    problem of every file."""
    from orchestration.delivery.channels import capabilities

    audiences = audiences or load_project()
    problems: list[Problem] = []
    destinations: dict[str, Destination] = {}
    paths: dict[str, Path] = {}
    for path in destination_files(folder):
        try:
            data, lines = read_yaml(path, DestinationErrors, "a mapping with name, audience and channel")
            d = validate_model(Destination, data, path, lines, DestinationErrors)
        except DestinationErrors as exc:
            problems.extend(exc.problems)
            continue

        def report(loc: tuple, message: str, path=path, lines=lines) -> None:
            problems.append(Problem(path, line_of(lines, loc), field_of(loc), message))

        for channel in CHANNELS:
            block = getattr(d, channel)
            if channel == d.channel and block is None and channel != "file":
                report(("channel",), f"channel: {channel} needs a {channel}: block")
            if channel != d.channel and block is not None:
                report((channel,), f"a {channel}: block belongs to channel: {channel}, not {d.channel}")
        if d.channel == "baidu_ads" and d.mode != "full":
            report(("mode",), "Baidu takes whole crowds, with no adds to or removes from one: "
                              "use mode: full (each run pushes the audience as a new crowd)")
        if path.stem != d.name:
            report(("name",), f"the file is {path.name}; name it {d.name}.yml or the name {path.stem}")
        if d.name in destinations:
            report(("name",), f"destination {d.name!r} is also defined in {paths[d.name]}")
        audience = audiences.audiences.get(d.audience)
        if audience is None:
            hint = suggest(d.audience, audiences.audiences) or f" (no audiences/{d.audience}.yml)"
            report(("audience",), f"unknown audience {d.audience!r}{hint}")
        id_type = d.id_type or (audience.id_type if audience else None)
        if d.id_type is not None and d.id_type not in ID_TYPES:
            report(("id_type",), f"unknown id type {d.id_type!r}{suggest(d.id_type, ID_TYPES)}; "
                                 f"one of {', '.join(ID_TYPES)}")
        elif id_type is not None:
            caps = capabilities(d.channel)
            forms = caps.id_forms.get(id_type)
            if forms is None:
                report(("id_type",) if d.id_type else ("audience",),
                       f"{d.channel} does not take {id_type} ids; it takes "
                       f"{', '.join(sorted(caps.id_forms))}")
            elif d.id_form not in forms:
                report(("id_form",), f"{d.channel} takes {id_type} as {' or '.join(forms)}, not {d.id_form}")
            if d.batch_size > caps.max_batch_size:
                report(("batch_size",), f"{d.channel} takes at most {caps.max_batch_size:,} per batch")
        used = d.webhook.uses() if d.webhook is not None else set()
        for name in sorted(used - set(d.variables)):
            report(("webhook", "params"), f"the params use ${{{name}}} but variables: does not define it")
        if d.channel == "webhook":
            for name in sorted(set(d.variables) - used):
                report(("variables", name), f"variable {name!r} is defined but no webhook parameter "
                                            f"uses ${{{name}}}")
        if d.email is not None:
            _check_email(d, path.parent, report)
        for var, spec in d.variables.items():
            if spec.tag not in audiences.catalog.tags:
                report(("variables", var, "tag"),
                       f"unknown tag {spec.tag!r}{suggest(spec.tag, audiences.catalog.tags)}")
        destinations.setdefault(d.name, d)
        paths.setdefault(d.name, path)
    policies = Policies()
    policy_path = folder / POLICIES_FILE
    if policy_path.exists():
        try:
            data, lines = read_yaml(policy_path, DestinationErrors, "a mapping with frequency_caps")
            policies = validate_model(Policies, data, policy_path, lines, DestinationErrors)
            from orchestration.delivery.channels import CHANNEL_NAMES, CONNECTORS

            message_channels = tuple(c for c in CHANNEL_NAMES if CONNECTORS[c].capabilities.is_message)
            for i, cap in enumerate(policies.frequency_caps):
                if cap.channel in CHANNEL_NAMES and cap.channel not in message_channels:
                    problems.append(Problem(policy_path, line_of(lines, ("frequency_caps", i, "channel")),
                                            field_of(("frequency_caps", i, "channel")),
                                            f"{cap.channel} keeps a list, it sends nobody a message: "
                                            f"caps apply to {', '.join(message_channels)} or '*'"))
                elif cap.channel != "*" and cap.channel not in CHANNEL_NAMES:
                    problems.append(Problem(policy_path, line_of(lines, ("frequency_caps", i, "channel")),
                                            field_of(("frequency_caps", i, "channel")),
                                            f"unknown channel {cap.channel!r}"
                                            f"{suggest(cap.channel, CHANNEL_NAMES)}; use one of "
                                            f"{', '.join(CHANNEL_NAMES)} or '*'"))
        except DestinationErrors as exc:
            problems.extend(exc.problems)
    if problems:
        raise DestinationErrors(problems)
    return Destinations(folder=folder, destinations=destinations, paths=paths, policies=policies,
                        audiences=audiences)
