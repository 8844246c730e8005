"""A real SMTP server for tests: aiosmtpd on a free port, keeping every message it receives."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Inbox:
    """Messages received by the test SMTP server, with a way to wait for them."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(  # noqa: N802  (aiosmtpd calls its hooks by this name)
        self, server: Any, session: Any, envelope: Any
    ) -> str:  # aiosmtpd's hook name
        """Aiosmtpd hook: parse and keep the message."""
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)  # policy.default always builds EmailMessage
        with self._cond:
            self.messages.append(msg)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, *, timeout: float = 60.0) -> list[EmailMessage]:
        """Block until ``count`` messages arrived (or fail after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} email(s), got {len(self.messages)} in {timeout}s"
                    )
                self._cond.wait(left)
            return list(self.messages)

    def to(self, address: str) -> list[EmailMessage]:
        """Messages addressed to ``address``."""
        with self._cond:
            return [m for m in self.messages if m["To"] == address]


@contextmanager
def smtp_server() -> Iterator[Inbox]:
    """Run an SMTP server on 127.0.0.1 and a free port for the duration of the block."""
    port = free_port()
    inbox = Inbox(host="127.0.0.1", port=port)
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
