"""Reading a test receiver after the sender died."""

from __future__ import annotations

import time

from connectors.webhook_receiver import WebhookReceiver


def settled(receiver: WebhookReceiver) -> set[str]:
    """The keys the receiver acted on, once the requests it was handling at the kill are done."""
    before, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 0.5:
        time.sleep(0.1)
        with receiver.state.lock:
            now = (receiver.state.requests, len(receiver.state.accepted))
        if now != before:
            before, quiet_since = now, time.monotonic()
    return set(receiver.state.accepted)
