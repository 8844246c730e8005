"""The health check through real HTTP.

A real Tornado server runs on a free port in a background thread, over a SQLite job store,
local storage and an in-memory record source; builds are run by the test when it wants
them, so both the queued and the finished states can be observed.
"""

from __future__ import annotations

from tests.unit.downloader.conftest import Api


def test_health(api: Api) -> None:
    assert api.get("/healthz").json() == {"ok": True}
