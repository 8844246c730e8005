"""Fixtures shared by the whole suite (kept small: package fixtures live beside their tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.smtp import Inbox, smtp_server

# Hypothesis's per-example deadline is a timing threshold: on a shared two-core machine a
# slow moment fails a correct test. Speed is measured by the benchmark, never by tests.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


@pytest.fixture
def smtp() -> Iterator[Inbox]:
    """A real SMTP server (aiosmtpd) on a free port, collecting what it receives."""
    with smtp_server() as inbox:
        yield inbox
