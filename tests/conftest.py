"""Fixtures shared by the whole suite (kept small: package fixtures live beside their tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.smtp import Inbox, smtp_server


@pytest.fixture
def smtp() -> Iterator[Inbox]:
    """A real SMTP server (aiosmtpd) on a free port, collecting what it receives."""
    with smtp_server() as inbox:
        yield inbox
