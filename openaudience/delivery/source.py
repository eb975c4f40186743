"""Reading destinations/: each file checked on its own and against the audiences, the tag
catalogue and its channel's capabilities; every error names the file, the line and the field.

A destination file is written by whoever may open a pull request, so loading it also refuses
what would let it act beyond sending its audience: e-mail templates that do more than print
variables, template files outside destinations/ (absolute, `..`, symbolic links), and endpoints
on link-local or cloud-metadata addresses. Credentials live in the environment, so they are
checked when a delivery starts (`Destinations.ready`), before a run is planned: a missing or
malformed one leaves no run behind."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from openaudience.core.errors import UserError
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
from openaudience.delivery.spec import (
    CHANNELS,
    ENDPOINT_FIELDS,
    HOST_FIELDS,
    SERVER_LIST_FIELDS,
    Destination,
    Policies,
    endpoint_problem,
    host_problem,
    servers_problem,
)
from openaudience.segments.source import Project, load_project
from openaudience.segments.spec import ID_TYPES
from openaudience.segments.uploads import OutsideFolder, confined_path

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
    lines: dict[str, dict[tuple, int]] = field(default_factory=dict)
    """Each destination's YAML lines by field path, for errors found after loading."""

    def get(self, name: str) -> Destination:
        if name not in self.destinations:
            raise UserError(f"no destination {name!r} in {self.folder}"
                            f"{suggest(name, self.destinations)}")
        return self.destinations[name]

    def ready(self, name: str, environ: Mapping[str, str] | None = None) -> Destination:
        """The destination, once every environment variable it names is set and well formed
        (endpoints http(s) and not link-local, an AES key of 16 characters, no line breaks in a
        secret); DestinationErrors names each variable and the file:line that names it. Call it
        before planning a run, so that a missing credential leaves no run behind."""
        d = self.get(name)
        lines = self.lines.get(name, {})
        problems = [Problem(self.paths[name], line_of(lines, loc), field_of(loc), message)
                    for loc, message in credential_problems(d, os.environ if environ is None else environ)]
        if problems:
            raise DestinationErrors(problems)
        return d

    def id_type(self, name: str) -> str:
        d = self.destinations[name]
        return d.id_type or self.audiences.audiences[d.audience].id_type

    def for_audience(self, audience: str) -> list[str]:
        return [n for n, d in self.destinations.items() if d.audience == audience]


def _check_email(d: Destination, folder: Path, report) -> None:
    """The template files lie inside `folder`; the templates parse, use only variables, allowed
    filters and if/else (connectors.smtp.template_problems), and name only the member's
    variables, email and unsubscribe_url."""
    import jinja2

    from connectors.base import ConnectorConfigError
    from connectors.smtp import TEMPLATE_NAMES, template_problems, undeclared
    from openaudience.core.errors import ConfigError
    from openaudience.delivery.channels import email_templates

    e = d.email
    for name, file in (("html_file", e.html_file), ("text_file", e.text_file)):
        try:
            if file is not None:
                confined_path(folder, file)
        except OutsideFolder as exc:
            report(("email", name), f"template file {exc}")
            return
    try:
        html, text = email_templates(e, folder)
    except (ConfigError, ConnectorConfigError) as exc:
        report(("email", "html_file" if e.html_file else "text_file"), str(exc))
        return
    known = set(d.variables) | set(TEMPLATE_NAMES)
    for name, source, is_html, file in (("subject", e.subject, False, None),
                                        ("html_file" if e.html_file else "html", html, True, e.html_file),
                                        ("text_file" if e.text_file else "text", text, False, e.text_file)):
        if source is None:
            continue
        where = f"{file} line" if file else "template line"
        try:
            problems, names = template_problems(source, is_html), undeclared(source, is_html)
        except jinja2.TemplateSyntaxError as exc:
            report(("email", name), f"{where} {exc.lineno}: template error: {exc.message}")
            continue
        for line, message in problems:
            report(("email", name), f"{where} {line}: {message}; a template may use only variables "
                                    "({{ name }}), filters with literal arguments, and if/else")
        for var in sorted(names - known) if not problems else ():
            report(("email", name), f"the template uses {{{{ {var} }}}}, which is neither a variable "
                                    f"of this destination nor one of {', '.join(TEMPLATE_NAMES)}"
                                    f"{suggest(var, known)}")


def _settings(model: BaseModel, loc: tuple = ()) -> Iterator[tuple[tuple, object]]:
    """(field path, value) of every setting of a block, nested blocks included."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _settings(value, (*loc, name))
        else:
            yield (*loc, name), value


def _endpoint_problem(loc: tuple, value: str, allow_private_network: bool) -> str | None:
    """Why an endpoint setting (a URL, an SMTP host, Kafka brokers) is refused, or None. The SMS
    phone files' address is not one: the platform fetches from it, this process never does."""
    name = loc[-1]
    if "phone_files" in loc:
        return None
    if name in ENDPOINT_FIELDS:
        return endpoint_problem(value, allow_private_network)
    if name in HOST_FIELDS:
        return host_problem(value.strip(), allow_private_network)
    if name in SERVER_LIST_FIELDS:
        return servers_problem(value, allow_private_network)
    return None


def endpoint_problems(d: Destination) -> Iterator[tuple[tuple, str]]:
    """(field path, message) for each endpoint written in the file that is no http(s) URL or
    names a link-local or cloud-metadata host."""
    block = getattr(d, d.channel)
    for loc, value in _settings(block, (d.channel,)) if block is not None else ():
        problem = _endpoint_problem(loc, value, d.allow_private_network) if isinstance(value, str) else None
        if problem:
            yield loc, problem


def credential_problems(d: Destination, environ: Mapping[str, str]) -> Iterator[tuple[tuple, str]]:
    """(field path, message) for each environment variable the destination names that is unset,
    holds a control character, or (an endpoint, an AES key) is malformed. Values are never shown."""
    from connectors.identifiers import IdError, check_aes_key

    block = getattr(d, d.channel)
    named = list(_settings(block, (d.channel,))) if block is not None else []
    named.append((("aes_key_env",), d.aes_key_env))
    for loc, variable in named:
        if not loc[-1].endswith("_env") or not isinstance(variable, str):
            continue
        value = environ.get(variable, "")
        if not value:
            yield loc, (f"the environment variable {variable} is not set "
                        f"(export {variable}=... before delivering)")
            continue
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            yield loc, f"the environment variable {variable} holds a control character (a line break?)"
            continue
        problem = _endpoint_problem((*loc[:-1], loc[-1].removesuffix("_env")), value,
                                    d.allow_private_network)
        if loc == ("aes_key_env",):
            try:
                check_aes_key(value)
            except IdError as exc:
                problem = str(exc)
        if problem:
            yield loc, f"the environment variable {variable}: {problem}"


def destination_files(folder: Path = DESTINATION_DIR) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in [*folder.glob("*.yml"), *folder.glob("*.yaml")]
                  if not p.name.startswith("_"))


def load_destinations(folder: Path = DESTINATION_DIR, audiences: Project | None = None) -> Destinations:
    """Every destination of `folder` with the shared policies; DestinationErrors lists every
    problem of every file."""
    from openaudience.delivery.channels import capabilities

    audiences = audiences or load_project()
    problems: list[Problem] = []
    destinations: dict[str, Destination] = {}
    paths: dict[str, Path] = {}
    all_lines: dict[str, dict[tuple, int]] = {}
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
        for loc, message in endpoint_problems(d):
            report(loc, message)
        if d.email is not None:
            _check_email(d, path.parent, report)
        for var, spec in d.variables.items():
            if spec.tag is not None and spec.tag not in audiences.catalog.tags:
                report(("variables", var, "tag"),
                       f"unknown tag {spec.tag!r}{suggest(spec.tag, audiences.catalog.tags)}")
            if spec.event is not None and d.schedule != "journey":
                report(("variables", var, "event"),
                       "an event variable is filled when an event-triggered journey sends; give the "
                       "destination schedule: journey (it then sends only for journeys)")
        destinations.setdefault(d.name, d)
        paths.setdefault(d.name, path)
        all_lines.setdefault(d.name, lines)
    policies = Policies()
    policy_path = folder / POLICIES_FILE
    if policy_path.exists():
        try:
            data, lines = read_yaml(policy_path, DestinationErrors, "a mapping with frequency_caps")
            policies = validate_model(Policies, data, policy_path, lines, DestinationErrors)
            from openaudience.delivery.channels import CHANNEL_NAMES, CONNECTORS

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
                        audiences=audiences, lines=all_lines)
