"""E-mail over SMTP: one message per member, rendered from Jinja2 templates.

Each message carries `List-Unsubscribe` (the member's unsubscribe link, and a mailto when one is
configured) with `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), and a
`Message-ID` made from the idempotency key, so a resend after a crash is recognisable as the
same message. Templates see the member's variables, `email` and `unsubscribe_url`; an unknown
name in a template is an error when the destination is checked, not an empty string in a sent
mail. A recipient the server refuses (5xx) fails for good; a 4xx, a refused connection or a
dropped one is transient, and the batch is retried.

Templates are written by whoever edits destinations/, so they are data, not code: they render in
Jinja2's immutable sandbox, and `template_problems` (run when a destination is loaded) refuses
any template that does more than print variables through a few filters, with `if`/`else` and
comparisons of them. Attribute and item access, calls, `{% set %}`, `{% import %}`,
`{% include %}`, `{% extends %}`, `{% macro %}`, loops and the rest of the language are refused,
so a template can neither reach Python objects (`self.__init__.__globals__`) nor read files.
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from connectors.base import Capabilities, Connector, ConnectorConfigError, Member, Outcome, TransientError

TEMPLATE_NAMES = ("email", "unsubscribe_url")


def unsubscribe_token(secret: str, destination: str, key: str) -> str:
    """`<idempotency key>.<16 hex of HMAC-SHA256(secret, destination|key)>`."""
    mac = hmac.new(secret.encode(), f"{destination}|{key}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"{key}.{mac}"


def check_token(secret: str, destination: str, token: str) -> str | None:
    """The idempotency key a genuine token names, or None."""
    key, _, _mac = token.partition(".")
    if len(key) != 32 or not hmac.compare_digest(unsubscribe_token(secret, destination, key).encode(),
                                                 token.encode("utf-8", "replace")):
        return None
    return key


TEMPLATE_FILTERS = frozenset({
    "capitalize", "d", "default", "e", "escape", "float", "int", "length", "lower", "round",
    "string", "striptags", "title", "trim", "truncate", "upper", "urlencode"})
"""Filters a template may use, each with literal arguments only. Not `safe` (it would let a
member's value write HTML into the mail), nor filters that reach objects (`attr`, `map`, ...) or
multiply a string's length (`replace`: ten chained replacements of one character by ten make
ten billion; `center`, `indent`, `format` with a width). What is left grows a value by a few
characters each at most, and a rendered message is capped as well (MAX_SUBJECT_CHARS,
MAX_BODY_BYTES)."""
MAX_SUBJECT_CHARS = 998
"""A header line's limit (RFC 5322): a longer rendered subject refuses the member's message."""
MAX_BODY_BYTES = 1024 * 1024
"""The largest rendered body (each of html and text, UTF-8): a larger one refuses the message."""
TEMPLATE_TESTS = frozenset({"defined", "undefined", "none", "number", "string"})
_REFUSED = {"Assign": "{% set %}", "AssignBlock": "{% set %}", "Import": "{% import %}",
            "FromImport": "{% from ... import %}", "Include": "{% include %}",
            "Extends": "{% extends %}", "Macro": "{% macro %}", "CallBlock": "{% call %}",
            "Block": "{% block %}", "For": "{% for %}", "FilterBlock": "{% filter %}",
            "With": "{% with %}", "Scope": "{% with %}", "ScopedEvalContextModifier": "{% autoescape %}",
            "EvalContextModifier": "{% autoescape %}", "ExprStmt": "{% do %}",
            "Getattr": "attribute access (.name)", "Getitem": "item access ([...])",
            "Slice": "slicing ([a:b])", "Call": "a call (...)", "List": "a list", "Tuple": "a tuple",
            "Dict": "a dict"}


def template_environment(html: bool):
    """Jinja2's immutable sandbox: no unsafe attribute, no mutation of what a template sees;
    unknown names raise instead of printing nothing; HTML bodies escape every value."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=html,
                                        keep_trailing_newline=True)
    env.globals.clear()  # range, lipsum, cycler, ...: a template sees the member's values only
    return env


def undeclared(source: str, html: bool = False) -> set[str]:
    """The names a template reads."""
    import jinja2.meta

    env = template_environment(html)
    return set(jinja2.meta.find_undeclared_variables(env.parse(source)))


def template_problems(source: str, html: bool = False) -> list[tuple[int, str]]:
    """(template line, message) for every construct beyond variables, allow-listed filters and
    tests with literal arguments, if/else, comparisons, and/or/not and `~`. Raises
    jinja2.TemplateSyntaxError for a template that does not parse."""
    tree = template_environment(html).parse(source)
    problems: list[tuple[int, str]] = []
    _check_node(tree, problems)
    return problems


def _check_node(node, problems: list[tuple[int, str]]) -> None:
    """Walk the parsed template with an allow-list: a node type not named here is refused."""
    from jinja2 import nodes

    allowed = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.If, nodes.CondExpr,
               nodes.Compare, nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Concat)
    line = getattr(node, "lineno", 0) or 0
    if isinstance(node, nodes.Name):
        if node.ctx != "load" or node.name.startswith("_") or node.name == "self":
            problems.append((line, f"the name {node.name!r} cannot be used"))
    elif isinstance(node, nodes.Filter | nodes.Test):
        _check_call(node, line, problems)
    elif type(node) not in allowed:
        kind = type(node).__name__
        what = _REFUSED.get(kind, f"{kind} ({'an operator' if isinstance(node, nodes.Expr) else 'a tag'})")
        problems.append((line, f"{what} is not allowed"))
        return
    for child in node.iter_child_nodes():
        _check_node(child, problems)


def _check_call(node, line: int, problems: list[tuple[int, str]]) -> None:
    """A filter or test: allow-listed, with literal arguments only."""
    from jinja2 import nodes

    filter_ = isinstance(node, nodes.Filter)
    names = TEMPLATE_FILTERS if filter_ else TEMPLATE_TESTS
    kind = "filter" if filter_ else "test"
    if node.name not in names:
        problems.append((line, f"the {kind} {node.name!r} is not allowed; use one of "
                               f"{', '.join(sorted(names))}"))
    arguments = [*node.args, *(k.value for k in node.kwargs)]
    if node.dyn_args is not None or node.dyn_kwargs is not None or not all(
            isinstance(a, nodes.Const) for a in arguments):
        problems.append((line, f"the {kind} {node.name!r} may take literal arguments only"))


def _render(template, context: dict, what: str = "body", limit: int = MAX_BODY_BYTES,
            unit: str = "bytes") -> str:
    """A rendered template, stopped as soon as it passes `limit` (characters, or UTF-8 bytes); a
    failure to render (a value a filter cannot take) or a message too large is a ValueError,
    which fails the member's message, not the batch."""
    import jinja2

    parts, size = [], 0
    try:
        for part in template.generate(context):
            size += len(part) if unit == "characters" else len(part.encode("utf-8", "replace"))
            if size > limit:
                raise ValueError(f"the rendered {what} is longer than {limit:,} {unit}; shorten the "
                                 "template or the variables it prints")
            parts.append(part)
    except jinja2.TemplateError as exc:
        raise ValueError(f"template: {exc}") from None
    return "".join(parts)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    from_address: str
    subject: str
    destination: str
    unsubscribe_url: str
    unsubscribe_secret: str
    html: str | None = None
    text: str | None = None
    from_name: str = ""
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    starttls: bool = True
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0


class SmtpConnector(Connector):
    capabilities = Capabilities(
        channel="email",
        id_forms={"email": ("raw",)},
        supports_removals=False,
        per_recipient_receipts=False,
        is_message=True,
        max_batch_size=500,
    )

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        for name, source, html in (("subject", settings.subject, False), ("html", settings.html, True),
                                   ("text", settings.text, False)):
            problems = template_problems(source, html) if source else []
            if problems:  # destination files are checked when loaded: this guards other callers
                line, message = problems[0]
                raise ConnectorConfigError(f"destination {settings.destination}: the {name} template, "
                                           f"line {line}: {message}")
        self.subject = template_environment(False).from_string(settings.subject)
        self.html = template_environment(True).from_string(settings.html) if settings.html else None
        self.text = template_environment(False).from_string(settings.text) if settings.text else None

    def message(self, member: Member) -> EmailMessage:
        s = self.settings
        url = s.unsubscribe_url.replace("{token}", unsubscribe_token(s.unsubscribe_secret, s.destination,
                                                                     member.key))
        context = {**member.variables, "email": member.id_value, "unsubscribe_url": url}
        msg = EmailMessage()
        msg["From"] = formataddr((s.from_name, s.from_address)) if s.from_name else s.from_address
        msg["To"] = member.id_value
        msg["Subject"] = _render(self.subject, context, "subject", MAX_SUBJECT_CHARS, "characters").strip()
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = f"<{member.key}@{s.from_address.split('@', 1)[1]}>"
        if s.reply_to:
            msg["Reply-To"] = s.reply_to
        links = [f"<{url}>"] + ([f"<mailto:{s.unsubscribe_mailto}?subject=unsubscribe>"]
                                if s.unsubscribe_mailto else [])
        msg["List-Unsubscribe"] = ", ".join(links)
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["X-OpenAudience-Key"] = member.key
        if self.text:
            msg.set_content(_render(self.text, context, "text body"))
        if self.html:
            if self.text:
                msg.add_alternative(_render(self.html, context, "html body"), subtype="html")
            else:
                msg.set_content(_render(self.html, context, "html body"), subtype="html")
        return msg

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.username:
                smtp.login(s.username, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise ConnectorConfigError(f"destination {s.destination}: the SMTP server refused the login "
                                       f"({exc.smtp_code})") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(f"SMTP {s.host}:{s.port}: {type(exc).__name__}: {exc}") from None
        return smtp

    def deliver(self, batch: list[Member], batch_no: int = 0) -> list[Outcome]:
        smtp = self._connect()
        outcomes = []
        try:
            for m in batch:
                try:
                    message = self.message(m)
                except (ValueError, TypeError) as exc:  # e.g. a line break in a header's value
                    outcomes.append(Outcome(m.key, False, "invalid_message", str(exc)[:200]))
                    continue
                try:
                    refused = smtp.send_message(message)
                except smtplib.SMTPRecipientsRefused as exc:
                    code, text = next(iter(exc.recipients.values()))
                    if 400 <= code < 500:
                        raise TransientError(f"SMTP {code} for a recipient", partial=outcomes) from None
                    outcomes.append(Outcome(m.key, False, str(code), text.decode(errors="replace")))
                    continue
                except smtplib.SMTPResponseException as exc:
                    if 400 <= exc.smtp_code < 500:
                        raise TransientError(f"SMTP {exc.smtp_code}", partial=outcomes) from None
                    outcomes.append(Outcome(m.key, False, str(exc.smtp_code),
                                            exc.smtp_error.decode(errors="replace")))
                    continue
                except (OSError, smtplib.SMTPServerDisconnected) as exc:
                    raise TransientError(f"SMTP connection lost: {type(exc).__name__}",
                                         partial=outcomes) from None
                if refused:
                    code, text = next(iter(refused.values()))
                    outcomes.append(Outcome(m.key, False, str(code), text.decode(errors="replace")))
                else:
                    outcomes.append(Outcome(m.key, True, "250", external_id=m.key))
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
        return outcomes
