"""Every state a download goes through, shown by the page, with the API's answers replayed
from canned JSON (``page.route``): queued, progress, success, failure, cancelled, expired,
a 400 naming a key, a joined job, and a query that matches nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.browser.conftest import Watched, open_page

expect = pytest.importorskip("playwright.sync_api").expect

JOB = "0b8d1c7e-1111-4222-8333-944445555666"
TOKEN = "cancel-me-123"


def status(state: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": JOB,
        "state": state,
        "task_status": state if state in ("PENDING", "STARTED", "SUCCESS") else "FAILURE",
        "complete": state not in ("PENDING", "STARTED"),
        "status_url": f"http://127.0.0.1/v2/download/{JOB}",
        "created": "2026-12-04T10:00:00+00:00",
        "expires": "2027-01-03T10:00:00+00:00",
        "records_written": 0,
        "total_records": 1000,
        "percent_complete": 0.0,
        "counts": {},
        "recordsets": None,
        "size": None,
        "checksum": None,
        "format": "dwca-csv",
        "query": {"rq": {"genus": "acer"}},
    }
    doc.update(extra)
    return doc


def fulfil(route: Any, doc: dict[str, Any], code: int = 200) -> None:
    route.fulfill(status=code, content_type="application/json", body=json.dumps(doc))


def script(w: Watched, created: dict[str, Any], polls: list[dict[str, Any]]) -> list[Any]:
    """Route the download POST to ``created`` and each status poll to the next of ``polls``
    (the last one repeats). Returns the requests seen by the status route."""
    seen: list[Any] = []

    def on_download(route: Any) -> None:
        if route.request.method == "POST":
            fulfil(route, created)
        else:
            route.continue_()

    def on_status(route: Any) -> None:
        seen.append(route.request)
        if route.request.method == "DELETE":
            fulfil(route, status("CANCELLED", error="The download was cancelled."))
            polls[:] = [status("CANCELLED", error="The download was cancelled.")]
            return
        doc = polls.pop(0) if len(polls) > 1 else polls[0]
        fulfil(route, doc)

    w.page.route(re.compile(r".*/v2/download$"), on_download)
    w.page.route(re.compile(rf".*/v2/download/{JOB}$"), on_status)
    return seen


def ask(w: Watched, genus: str = "acer") -> Any:
    page = open_page(w, "/portal/?rq=" + json.dumps({"genus": genus}))
    page.click("#download")
    return page


def test_queued_then_progress_then_success(watched: Watched) -> None:
    sha = "ab" * 32
    script(
        watched,
        status("PENDING", cancel_token=TOKEN),
        [
            status("STARTED", records_written=370, percent_complete=37.0),
            status(
                "SUCCESS",
                records_written=1000,
                percent_complete=100.0,
                size=123456,
                checksum={"algorithm": "sha256", "value": sha},
                counts={"records": 1000, "mediarecords": 20},
                recordsets=3,
                download_url=f"http://127.0.0.1/archives/{JOB}/dwca-acer-0b8d1c7e.zip",
                filename="dwca-acer-0b8d1c7e.zip",
                completed="2026-12-04T10:01:00+00:00",
            ),
        ],
    )
    page = ask(watched)
    page.wait_for_selector("#job:not([hidden])")
    expect(page.locator("#job-progress")).to_have_js_property("value", 37)
    assert "370 of 1,000 records written" in page.text_content("#job-progress-text")
    assert page.title().startswith("(37%)")
    page.wait_for_selector("#job-done:not([hidden])")
    assert page.text_content("#job-state") == "ready"
    link = page.get_attribute("#job-link", "href")
    assert link == f"http://127.0.0.1/archives/{JOB}/dwca-acer-0b8d1c7e.zip"
    assert page.text_content("#job-sha") == sha
    assert "curl -L -C - -o dwca-acer-0b8d1c7e.zip" in page.text_content("#job-curl")
    assert "1,000 records" in page.text_content("#job-counts")
    assert "3 recordsets" in page.text_content("#job-counts")
    assert sha in page.text_content("#job-citation")
    assert page.text_content("#job-bibtex").startswith("@misc{dwca_0b8d1c7e,")
    assert "TY  - DATA" in page.text_content("#job-ris")
    assert page.title().startswith("✓ ready")
    # Kept in the history, with its link.
    assert page.locator("#history-rows tr").count() == 1
    assert page.locator("#history-rows a", has_text="Download").get_attribute("href") == link
    assert not [e for e in watched.errors if e.startswith("uncaught")]


def test_failure_shows_the_reason_and_retry_forces_a_new_build(watched: Watched) -> None:
    created = status("PENDING", cancel_token=TOKEN)
    failed = status("FAILURE", error="The record source is unreachable: try again later.")
    script(watched, created, [failed])
    bodies: list[dict[str, Any]] = []
    watched.page.on(
        "request",
        lambda r: (
            bodies.append(json.loads(r.post_data))
            if r.method == "POST" and r.url.endswith("/v2/download")
            else None
        ),
    )
    page = ask(watched)
    page.wait_for_selector("#job-error:not([hidden])")
    assert "unreachable" in page.text_content("#job-error")
    assert page.text_content("#job-state") == "failed"
    page.click("#job-retry")
    for _ in range(50):
        if len(bodies) >= 2:
            break
        page.wait_for_timeout(100)
    assert len(bodies) == 2
    assert bodies[-1]["force"] is True and bodies[-1]["rq"] == {"genus": "acer"}


def test_a_retry_after_a_transient_error_shows_the_reason_and_stays_queued(
    watched: Watched,
) -> None:
    created = status("PENDING", cancel_token=TOKEN)
    waiting = status(
        "PENDING",
        retrying=True,
        retry_at="2026-12-04T10:05:00+00:00",
        error="The record store could not be reached (timeout); it is retried automatically.",
    )
    script(watched, created, [created, waiting])
    page = ask(watched)
    expect(page.locator("#job-progress-text")).to_contain_text("could not be reached")
    assert "Next attempt at" in page.text_content("#job-progress-text")
    assert page.text_content("#job-state") == "queued"
    assert page.is_hidden("#job-error")  # not a failure


def test_cancel_sends_the_stored_token(watched: Watched) -> None:
    seen = script(
        watched,
        status("PENDING", cancel_token=TOKEN),
        [status("STARTED", records_written=10, percent_complete=1.0)],
    )
    page = ask(watched)
    page.wait_for_selector("#job-cancel:visible")
    page.click("#job-cancel")
    expect(page.locator("#job-state")).to_have_text("cancelled")
    deletes = [r for r in seen if r.method == "DELETE"]
    assert deletes and deletes[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert page.is_visible("#job-retry")


def test_expired_offers_rerun(watched: Watched) -> None:
    expired = status(
        "EXPIRED", error="The archive expired on 2026-11-01 and was deleted; request it again."
    )
    script(watched, expired, [expired])
    page = ask(watched)
    page.wait_for_selector("#job-rerun:visible")
    assert "expired" in page.text_content("#job-error")
    assert page.text_content("#job-state") == "expired"


def test_joining_an_identical_download_is_said(watched: Watched) -> None:
    script(
        watched,
        status("STARTED", records_written=500, percent_complete=50.0),  # no cancel_token
        [status("STARTED", records_written=500, percent_complete=50.0)],
    )
    page = ask(watched)
    page.wait_for_selector("#job-joined:not([hidden])")
    assert "joined" in page.text_content("#job-joined")
    assert not page.is_visible("#job-cancel")  # only the browser that asked can cancel


def test_a_400_is_shown_on_the_row_its_key_names(watched: Watched) -> None:
    def on_download(route: Any) -> None:
        fulfil(
            route,
            {
                "error": "'2020-13-45' is not a date",
                "status": 400,
                "name": "QueryError",
                "key": "rq.datecollected",
            },
            400,
        )

    watched.page.route(re.compile(r".*/v2/download$"), on_download)
    page = open_page(watched, "/portal/?rq=" + json.dumps({"genus": "acer", "datecollected": "x"}))
    page.click("#download")
    row = page.locator('.row[data-field="datecollected"]')
    row.locator(".row-error").wait_for(state="visible")
    assert "not a date" in row.locator(".row-error").text_content()
    assert "invalid" in (row.get_attribute("class") or "")
    assert not page.locator('.row[data-field="genus"] .row-error').is_visible()


def test_nothing_matches_disables_the_button(watched: Watched) -> None:
    page = open_page(watched, "/portal/?rq=" + json.dumps({"genus": "nosuchgenusanywhere"}))
    expect(page.locator("#download")).to_be_disabled()
    assert page.text_content("#download") == "Nothing matches"
    assert page.text_content("#count").startswith("0 records")


def test_a_long_query_moves_to_the_fragment_and_comes_back(watched: Watched) -> None:
    names = [f"Acer species number {i}" for i in range(120)]
    page = open_page(watched)
    page.click("#tab-json")
    page.fill("#rq-json", json.dumps({"scientificname": names}))
    expect(page.locator("#sentence")).to_contain_text("is one of")
    assert "#state=" in page.url and "?rq=" not in page.url
    # The address opens the same query elsewhere.
    other = watched.page.context.new_page()
    other.goto(page.url)
    other.wait_for_selector("body[data-ready=true]")
    other.click("#tab-json")
    assert json.loads(other.input_value("#rq-json")) == {"scientificname": names}
    other.close()


def test_a_verbatim_term_can_be_picked_and_a_pasted_column_becomes_a_list(
    watched: Watched,
) -> None:
    page = open_page(watched)
    page.select_option("#add-field", "data.dwc:scientificName")
    page.click("#add-row")
    field = page.locator("#rows li:last-child .values input")
    # A column pasted from a spreadsheet, one name per line, turns the row into a list.
    transfer = page.evaluate_handle(
        "() => { const t = new DataTransfer(); "
        "t.setData('text/plain', 'Acer rubrum\\nAcer saccharum\\n'); return t; }"
    )
    field.evaluate(
        "(el, t) => el.dispatchEvent(new ClipboardEvent('paste', "
        "{clipboardData: t, bubbles: true, cancelable: true}))",
        transfer,
    )
    expect(page.locator("#rows li:last-child textarea")).to_have_value(
        "Acer rubrum\nAcer saccharum"
    )
    page.click("#tab-json")
    assert json.loads(page.input_value("#rq-json")) == {
        "data.dwc:scientificName": ["Acer rubrum", "Acer saccharum"]
    }
