"""E-mail over SMTP: one message per member, rendered from Jinja2 templates.

Each message carries `List-Unsubscribe` (the member's unsubscribe link, and a mailto when one is
configured) with `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), and a
`Message-ID` made from the idempotency key, so a resend after a crash is recognisable as the
same message. Templates see the member's variables, `email` and `unsubscribe_url`; an unknown
name in a template is an error when the destination is checked, not an empty string in a sent
mail. A recipient the server refuses (5xx) fails for good; a 4xx, a refused connection or a
dropped one is transient, and the batch is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from connectors.base import Capabilities, Connector, Member, Outcome, TransientError

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


def template_environment(html: bool):
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=html,
                              keep_trailing_newline=True)


def undeclared(source: str, html: bool = False) -> set[str]:
    """The names a template reads."""
    import jinja2.meta

    env = template_environment(html)
    return set(jinja2.meta.find_undeclared_variables(env.parse(source)))


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
        msg["Subject"] = self.subject.render(context).strip()
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
            msg.set_content(self.text.render(context))
        if self.html:
            if self.text:
                msg.add_alternative(self.html.render(context), subtype="html")
            else:
                msg.set_content(self.html.render(context), subtype="html")
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
            from orchestration.errors import ConfigError

            raise ConfigError(f"destination {s.destination}: the SMTP server refused the login "
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
