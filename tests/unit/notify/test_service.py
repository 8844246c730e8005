"""Email texts and their delivery to a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from downloader.models import Job
from notify.addresses import check_address
from notify.errors import InvalidAddress, MailError
from notify.service import human_size, send_failure_email, send_ready_email
from notify.smtp import LogMailer, SMTPMailer
from tests.support.smtp import Inbox, free_port


def finished_job(**kw: object) -> Job:
    job = Job(
        id="5d0c8a8e-0000-4000-8000-000000000001",
        query_hash="h",
        request={"rq": {"genus": "acer"}, "mq": None, "core_type": "records", "form": "dwca-csv"},
        query={"rq": {"genus": "acer"}},
        data_version="1",
        state="SUCCESS",
        expires=datetime(2030, 1, 31, 12, 0, tzinfo=UTC),
        size=1536,
        sha256="ab" * 32,
        counts={"records": 1234, "mediarecords": 5},
        emails=["ana@example.org", "bo@example.org"],
    )
    for k, v in kw.items():
        setattr(job, k, v)
    return job


def test_ready_mail_reaches_every_address_with_link_query_counts_size_checksum_expiry(
    smtp: Inbox,
) -> None:
    mailer = SMTPMailer(smtp.host, smtp.port, sender="downloads@example.org")
    sent = send_ready_email(
        mailer,
        finished_job(),
        download_url="http://x/archives/5d0c/dwca-acer.zip",
        status_url="http://x/v2/download/5d0c",
    )
    assert sent == 2
    messages = smtp.wait_for(2)
    assert sorted(m["To"] for m in messages) == ["ana@example.org", "bo@example.org"]
    msg = messages[0]
    assert msg["From"] == "downloads@example.org"
    assert "1,234 records" in msg["Subject"]
    body = msg.get_content()
    for expected in (
        "http://x/archives/5d0c/dwca-acer.zip",
        '{"genus": "acer"}',
        "1,234 records and 5 media records",
        "1.5 KiB (1,536 bytes)",
        "ab" * 32,
        "2030-01-31 12:00 UTC",
        "http://x/v2/download/5d0c",
    ):
        assert expected in body


def test_failure_mail_says_what_went_wrong(smtp: Inbox) -> None:
    mailer = SMTPMailer(smtp.host, smtp.port, sender="downloads@example.org")
    job = finished_job(state="FAILURE", error="The record store could not be read.")
    send_failure_email(mailer, job, status_url="http://x/v2/download/5d0c", to=["ana@example.org"])
    (msg,) = smtp.wait_for(1)
    assert "could not be built" in msg["Subject"]
    body = msg.get_content()
    assert "The record store could not be read." in body
    assert "ask for the archive again" in body


def test_unreachable_server_raises_mail_error_and_send_all_survives() -> None:
    mailer = SMTPMailer("127.0.0.1", free_port(), sender="d@example.org", timeout=5)
    with pytest.raises(MailError, match="could not send mail"):
        mailer.send("ana@example.org", "s", "b")
    # A dead mail server never breaks a download: failures are logged and counted out.
    assert send_ready_email(mailer, finished_job(), download_url="u", status_url="s") == 0


def test_log_mailer_keeps_the_message() -> None:
    mailer = LogMailer(sender="d@localhost")
    send_ready_email(mailer, finished_job(), download_url="u", status_url="s", to=["a@b.org"])
    assert [m["To"] for m in mailer.sent] == ["a@b.org"]


@pytest.mark.parametrize(
    "bad",
    [
        "a@example.org\r\nBcc: victim@example.org",
        "a@example.org\nX: y",
        "Ana <a@example.org>",
        "a@example.org, b@example.org",
        "no-at-sign",
        "a@-bad-.org",
        "",
        "x" * 250 + "@e.org",
    ],
)
def test_addresses_that_could_inject_headers_or_are_malformed_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        check_address(bad)


def test_plain_addresses_pass() -> None:
    assert check_address("  ana.maria+dwca@lab.example.org ") == "ana.maria+dwca@lab.example.org"


def test_human_size() -> None:
    assert human_size(12) == "12 bytes"
    assert human_size(5 * 1024**3).startswith("5.0 GiB")
