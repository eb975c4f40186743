"""A real SMTP server for the tests (aiosmtpd) that keeps every message it accepts, refuses
chosen recipients for good (550) and others once, for a while (451)."""

from __future__ import annotations

from email import message_from_bytes, policy

from aiosmtpd.controller import Controller

from tests.support.postgres import free_port


class Mailbox:
    def __init__(self, refuse: set[str] | None = None, busy_once: set[str] | None = None) -> None:
        self.messages: list = []
        self.refuse = refuse or set()
        self.busy_once = set(busy_once or ())

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        if address in self.busy_once:
            self.busy_once.discard(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"


class SmtpServer:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.port = free_port()
        self.controller = Controller(mailbox, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
