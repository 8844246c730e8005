"""The access log never records a token or a requester's address, and stays one line."""

from __future__ import annotations

import logging
import time

import pytest
import requests

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


def test_a_token_that_is_not_ascii_is_refused_not_a_server_error(api: Api) -> None:
    # hmac.compare_digest refuses non-ASCII str: every way of giving a token met it (500).
    api.ctx.settings.__dict__["admin_tokens"] = "the-admin-token"
    asked = api.get("/v2/download/", params={"rq": ACER, "token": "é"})
    assert asked.status_code == 200
    job = asked.json()["id"]
    for method, path, kw in [
        ("GET", "/v2/download/", {"params": {"rq": ACER}, "headers": {"X-Admin-Token": "\xe9"}}),
        ("DELETE", f"/v1/jobs/{job}", {"params": {"token": "é"}}),
        ("DELETE", f"/v2/download/{job}", {"headers": {"Authorization": "Bearer \xe9t\xe9"}}),
        ("GET", "/v1/occurrence/download/user/x", {"headers": {"X-Admin-Token": "\xe9"}}),
        ("DELETE", f"/v1/occurrence/download/request/{job}", {"params": {"token": "é"}}),
    ]:
        response = requests.request(method, api.url + path, timeout=30, **kw)
        assert response.status_code in (200, 401, 403), (method, path, response.text)
        if response.status_code != 200:
            assert response.json()["status"] == response.status_code
    # The right token, given in a header as UTF-8, still works.
    cancelled = requests.delete(
        f"{api.url}/v1/jobs/{job}", headers={"Authorization": "Bearer the-admin-token"}, timeout=30
    )
    assert cancelled.status_code == 200


def test_an_unexpected_error_logs_the_request_without_its_secrets(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from downloader.service import jobs

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(jobs, "get_job", broken)
    with caplog.at_level(logging.DEBUG):
        response = api.get(
            "/v1/jobs/x", params={"token": "s3cret-admin-token", "email": "victim@example.org"}
        )
        deadline = time.monotonic() + 10
        while not _access_lines(caplog) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert response.status_code == 500
    # The server's records (urllib3's on the client side log the URL it sends).
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))
    assert "Uncaught exception GET /v1/jobs/x?token=[redacted]" in text
    assert "s3cret-admin-token" not in text and "victim" not in text


def test_a_job_never_shows_its_cancel_token_in_its_repr() -> None:
    from downloader.models import Job

    job = Job(id="j", query_hash="h", request={}, query={}, data_version="1", cancel_token="tok")
    assert "tok" not in repr(job)
