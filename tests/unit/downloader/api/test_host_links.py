"""Honest links: a forged Host header never reaches status_url, download_url or an email.

A real Tornado server over a SQLite job store and local storage, mailing through a real
SMTP server (aiosmtpd); the worker's build is run by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests

from downloader.backends import Context
from downloader.build import build_archive
from notify.smtp import SMTPMailer
from tests.support.http import api_server
from tests.support.smtp import Inbox, smtp_server
from tests.unit.downloader.conftest import ACER, local_context

EVIL = "evil.example"


@contextmanager
def _serve(tmp_path: Path, inbox: Inbox, **overrides: Any) -> Iterator[tuple[str, Context]]:
    mailer = SMTPMailer(inbox.host, inbox.port, sender="d@example.org", timeout=10)
    ctx = local_context(tmp_path, mailer=mailer, **overrides)
    with api_server(ctx) as url:
        yield url, ctx


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as box:
        yield box


def _get(url: str, host: str, **params: str) -> dict[str, Any]:
    r = requests.get(url, params=params, headers={"Host": host}, timeout=30)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _links(doc: dict[str, Any]) -> list[str]:
    return [doc["status_url"], *([doc["download_url"]] if doc.get("download_url") else [])]


def _body(msg: EmailMessage) -> str:
    text = msg.get_content()
    assert isinstance(text, str)
    return text


def test_forged_host_reaches_neither_links_nor_emails(tmp_path: Path, inbox: Inbox) -> None:
    with _serve(tmp_path, inbox) as (url, ctx):
        asked = _get(f"{url}/v2/download/", EVIL, rq=ACER, email="victim@example.org")
        assert asked["status_url"] == f"{url}/v2/download/{asked['id']}"
        build_archive(asked["id"], ctx)
        done = _get(f"{url}/v2/download/{asked['id']}", EVIL)
        assert done["task_status"] == "SUCCESS"
        assert done["download_url"].startswith(url + "/archives/")
        # A reused finished job mails its new requester at once, from this request's links.
        again = _get(f"{url}/v2/download/", EVIL, rq=ACER, email="late@example.org")
        assert again["id"] == asked["id"]
        jobs = requests.get(f"{url}/v1/jobs/{asked['id']}", headers={"Host": EVIL}, timeout=30)
        messages = inbox.wait_for(2)
    assert sorted(m["To"] for m in messages) == ["late@example.org", "victim@example.org"]
    for doc in (asked, done, again):
        assert all(EVIL not in link for link in _links(doc))
    assert EVIL not in jobs.text and url in jobs.text
    for msg in messages:
        assert EVIL not in _body(msg)
        assert done["download_url"] in _body(msg) and done["status_url"] in _body(msg)


def test_allowed_host_is_used_and_others_are_not(tmp_path: Path, inbox: Inbox) -> None:
    with _serve(tmp_path, inbox, allowed_hosts="downloads.example.org") as (url, ctx):
        good = _get(f"{url}/v2/download/", "downloads.example.org", rq=ACER, email="a@example.org")
        build_archive(good["id"], ctx)
        evil = _get(f"{url}/v2/download/{good['id']}", EVIL)
        [msg] = inbox.wait_for(1)
    assert good["status_url"] == f"http://downloads.example.org/v2/download/{good['id']}"
    assert f"http://downloads.example.org/v2/download/{good['id']}" in _body(msg)
    assert evil["status_url"] == f"{url}/v2/download/{good['id']}"
    assert evil["download_url"].startswith(url)


def test_base_url_always_wins(tmp_path: Path, inbox: Inbox) -> None:
    public = "https://dl.example.org"
    with _serve(tmp_path, inbox, base_url=public, allowed_hosts="*") as (url, ctx):
        doc = _get(f"{url}/v2/download/", EVIL, rq=ACER, email="a@example.org")
        build_archive(doc["id"], ctx)
        done = _get(f"{url}/v2/download/{doc['id']}", EVIL)
        [msg] = inbox.wait_for(1)
    assert all(link.startswith(public + "/") for link in _links(done))
    assert EVIL not in _body(msg) and f"{public}/v2/download/{doc['id']}" in _body(msg)
