"""The access log never records a token or a requester's address, and stays one line."""

from __future__ import annotations

import logging
import time

import pytest

from downloader.api.base import MAX_LOGGED_URI, redact_uri
from tests.unit.downloader.conftest import ACER, Api


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tornado.access"]


def test_tokens_and_addresses_given_in_the_query_never_reach_the_log(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="tornado.access"):
        asked = api.get("/v2/download/", params={"rq": ACER, "email": "victim@example.org"}).json()
        api.get(f"/v1/jobs/{asked['id']}", params={"token": "s3cret-admin-token"})
        api.get("/v2/download/", params={"rq": '{"recordedby": "who@example.org"}'})
        api.get(f"/v2/download/{asked['id']}", params={"cancel_token": "s3cret-cancel"})
        # The server thread logs a request just after its response is sent.
        deadline = time.monotonic() + 10
        while len(_access_lines(caplog)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = _access_lines(caplog)
    assert len(lines) == 4
    text = "\n".join(lines)
    for secret in ("victim", "s3cret-admin-token", "s3cret-cancel", "who@example.org"):
        assert secret not in text
    assert "email=[redacted]" in text and "token=[redacted]" in text
    assert '{"genus":+"acer"}' in text  # the rest of the query stays readable
    assert '{"recordedby":+"[email]"}' in text


def test_an_oversized_uri_is_cut_and_stays_on_one_line() -> None:
    uri = "/v2/download/?rq=" + "%7B" * 10_000 + "&x=a%0Ab"
    logged = redact_uri(uri)
    assert len(logged) < MAX_LOGGED_URI + 40
    assert f"({len(uri)} characters)" in logged
    assert "\n" not in redact_uri("/v2/download/?x=a%0Ab&email=a%0A@b.org")
