"""The HTTP API through real HTTP: every request shape, the status JSON, errors, archives.

A real Tornado server runs on a free port in a background thread, over a SQLite job store,
local storage and an in-memory record source; builds are run by the test when it wants
them, so both the queued and the finished states can be observed.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from dwca.read import DwCAReader

from downloader.service import cleanup_expired
from tests.unit.downloader.conftest import ACER, Api

# --- request shapes ---------------------------------------------------------------------


def _assert_acer_status(doc: dict[str, Any], api: Api) -> None:
    assert doc["query"]["rq"] == {"genus": "acer"}
    assert doc["task_status"] == "PENDING" and doc["complete"] is False
    assert doc["status_url"] == f"{api.url}/v2/download/{doc['id']}"
    assert doc["hash"] == doc["query_hash"]
    assert datetime.fromisoformat(doc["expires"]) > datetime.fromisoformat(doc["created"])


@pytest.mark.parametrize("path", ["/v2/download", "/v2/download/"])
def test_get_with_rq_in_the_query_string(api: Api, path: str) -> None:
    r = api.get(path, params={"rq": ACER})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    _assert_acer_status(r.json(), api)
    assert api.dispatcher.ids == [r.json()["id"]]


def test_form_post_with_rq_as_json_string_like_the_portal(api: Api) -> None:
    r = api.post("/v2/download", data={"rq": ACER, "email": "ana@example.org"})
    assert r.status_code == 200
    _assert_acer_status(r.json(), api)


def test_json_post_with_rq_as_object_or_string(api: Api) -> None:
    a = api.post("/v2/download/", json={"rq": {"genus": "Acer"}}).json()
    b = api.post("/v2/download/", json={"rq": ACER}).json()
    _assert_acer_status(a, api)
    assert a["id"] == b["id"]  # the same normalised request: one job


def test_legacy_root_with_query_parameter(api: Api) -> None:
    doc = api.get("/", params={"query": ACER}).json()
    _assert_acer_status(doc, api)
    assert api.post("/", data={"query": ACER}).json()["id"] == doc["id"]
    assert "download" in api.get("/").json()  # no parameters: what the service offers


def test_equivalent_requests_share_a_job_and_force_makes_a_new_one(api: Api) -> None:
    first = api.get("/v2/download/", params={"rq": ACER}).json()
    same = api.get("/v2/download/", params={"rq": '{"genus":"ACER"}', "force": "false"}).json()
    assert same["id"] == first["id"]
    forced = api.get("/v2/download/", params={"rq": ACER, "force": "true"}).json()
    assert forced["id"] != first["id"]
    assert len(api.dispatcher.ids) == 2


def test_status_endpoints(api: Api) -> None:
    job_id = api.get("/v2/download/", params={"rq": ACER}).json()["id"]
    for path in (f"/v2/download/{job_id}", f"/status/{job_id}"):
        doc = api.get(path).json()
        assert doc["id"] == job_id and doc["task_status"] == "PENDING"


# --- a finished download ------------------------------------------------------------------


def test_finished_status_and_archive_download(api: Api) -> None:
    doc = api.finished()
    assert doc["complete"] is True and doc["task_status"] == "SUCCESS"
    assert doc["percent_complete"] == 100.0
    assert doc["counts"] == {"records": 10, "mediarecords": 10}
    assert doc["records_written"] == doc["total_records"] == 20
    assert doc["recordsets"] == 2 and doc["format"] == "dwca-csv"
    r = api.get(doc["download_url"][len(api.url) :])
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["ETag"] == f'"{doc["checksum"]["value"]}"'
    assert r.headers["Accept-Ranges"] == "bytes"
    assert "dwca-acer-" in r.headers["Content-Disposition"]
    assert len(r.content) == doc["size"]
    assert hashlib.sha256(r.content).hexdigest() == doc["checksum"]["value"]
    archive = Path(api.ctx.settings.data_dir) / "copy.zip"
    archive.write_bytes(r.content)
    with DwCAReader(str(archive)) as reader:
        rows = list(reader)
        assert len(rows) == 10
        assert {row.data["http://rs.tdwg.org/dwc/terms/genus"] for row in rows} == {"acer"}
        assert reader.descriptor.core.file_location == "occurrence.csv"


def test_head_range_resume_and_etag(api: Api) -> None:
    doc = api.finished()
    path = doc["download_url"][len(api.url) :]
    full = api.get(path).content
    head = requests.head(api.url + path, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(full)
    part = api.get(path, headers={"Range": "bytes=100-"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-{len(full) - 1}/{len(full)}"
    assert full[:100] + part.content == full
    tail = api.get(path, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == full[-10:]
    beyond = api.get(path, headers={"Range": f"bytes={len(full)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(full)}"
    assert beyond.json()["status"] == 416
    # If-Range with another version's tag: the whole new file, not a mismatched piece.
    stale = api.get(path, headers={"Range": "bytes=100-", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == full
    cached = api.get(path, headers={"If-None-Match": head.headers["ETag"]})
    assert cached.status_code == 304


def test_bare_csv_form_is_served_as_csv(api: Api) -> None:
    doc = api.finished({"rq": ACER, "form": "csv"})
    r = api.get(doc["download_url"][len(api.url) :])
    assert r.headers["Content-Type"].startswith("text/csv")
    assert doc["filename"].endswith(".csv")
    lines = r.content.decode().splitlines()
    assert lines[0].startswith("coreid,") and len(lines) == 11


def test_reused_finished_job_mails_the_new_requester_at_once(api: Api) -> None:
    doc = api.finished()
    again = api.get("/v2/download/", params={"rq": ACER, "email": "late@example.org"}).json()
    assert again["id"] == doc["id"] and again["task_status"] == "SUCCESS"
    assert [m["To"] for m in api.mailer.sent] == ["late@example.org"]
    assert doc["download_url"] in api.mailer.sent[0].get_content()


def test_expired_archive_is_gone(api: Api) -> None:
    doc = api.finished()
    path = doc["download_url"][len(api.url) :]
    later = datetime.now(UTC) + timedelta(days=31)
    assert cleanup_expired(api.ctx, now=later) == [doc["id"]]
    assert not any((Path(api.ctx.settings.data_dir) / "archives").glob("*.zip"))
    r = api.get(path)
    assert r.status_code == 410 and r.json()["status"] == 410
    status = api.get(f"/v2/download/{doc['id']}").json()
    assert status["expired"] is True and status["task_status"] == "FAILURE"
    assert "download_url" not in status and "expired" in status["error"]


def test_archive_of_an_unfinished_job_is_a_clear_409(api: Api) -> None:
    job_id = api.get("/v2/download/", params={"rq": ACER}).json()["id"]
    r = api.get(f"/archives/{job_id}")
    assert r.status_code == 409 and "PENDING" in r.json()["error"]


# --- counts --------------------------------------------------------------------------------


def test_count(api: Api) -> None:
    doc = api.get("/v2/count", params={"rq": ACER}).json()
    assert (doc["itemCount"], doc["records"], doc["mediarecords"]) == (10, 10, 10)
    assert doc["recordsets"] == 2
    assert api.post("/v2/count/", json={"rq": {"genus": "pinus"}}).json()["records"] == 10


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({}, "rq"),
        ({"rq": "{not json"}, "rq"),
        ({"rq": '{"nosuchfield": 1}'}, "rq"),
        ({"rq": ACER, "form": "pdf"}, "form"),
        ({"rq": ACER, "force": "maybe"}, "force"),
        ({"rq": ACER, "email": "ana@example.org\r\nBcc: x@example.org"}, "email"),
        ({"rq": ACER, "email": "not-an-address"}, "email"),
    ],
)
def test_bad_requests_get_a_400_naming_the_problem(
    api: Api, params: dict[str, str], key: str
) -> None:
    r = api.get("/v2/download/", params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == 400 and body["error"]
    assert body["key"].split(".")[0] == key
    assert api.dispatcher.ids == []


def test_malformed_json_body_and_non_object_body(api: Api) -> None:
    bad = api.post(
        "/v2/download", data="{oops", headers={"Content-Type": "application/json"}
    ).json()
    assert bad["status"] == 400 and bad["key"] == "body"
    array = api.post("/v2/download", json=["rq"]).json()
    assert array["status"] == 400 and array["key"] == "body"


def test_oversized_body_is_413(api: Api) -> None:
    r = api.post("/v2/download", data={"rq": ACER, "pad": "x" * 10_000})
    assert r.status_code == 413 and r.json()["status"] == 413


@pytest.mark.parametrize(
    "path",
    [
        "/v2/download/not-a-uuid",
        "/v2/download/0b8d1c7e-0000-4000-8000-000000000000",
        "/status/x",
        "/archives/0b8d1c7e-0000-4000-8000-000000000000",
        "/nowhere",
    ],
)
def test_unknown_ids_and_paths_are_404_json(api: Api, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 404
    assert r.json()["status"] == 404


def test_cors_and_options(api: Api) -> None:
    r = requests.options(api.url + "/v2/download", timeout=30)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert api.get("/v2/download/", params={}).headers["Access-Control-Allow-Origin"] == "*"


def test_unexpected_errors_are_500_json_without_traceback(api: Api) -> None:
    def explode() -> Any:
        raise RuntimeError("secret internals")

    api.ctx.source_factory = explode
    api.ctx._local = threading.local()  # drop the cached per-thread sources
    r = api.get("/v2/download/", params={"rq": ACER})
    assert r.status_code == 500
    assert r.json() == {
        "error": "internal error; it has been logged",
        "name": "InternalError",
        "status": 500,
    }
    assert "secret" not in r.text and "Traceback" not in r.text


def test_health(api: Api) -> None:
    assert api.get("/healthz").json() == {"ok": True}


# --- odd request shapes: always a 4xx naming the problem, never a 500 ----------------------


def test_multipart_form_post_is_understood(api: Api) -> None:
    fields = {"rq": (None, ACER), "email": (None, "ana@example.org")}
    doc = api.post("/v2/download", files=fields).json()
    _assert_acer_status(doc, api)
    # curl -F rq=@query.json: the value comes as a file part.
    upload = api.post("/v2/download", files={"rq": ("q.json", ACER.encode())}).json()
    assert upload["id"] == doc["id"]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "key"),
    [
        (b"garbage", "multipart/form-data; boundary=XX", 400, "body"),
        (b"--XX\r\n", "multipart/form-data", 400, "body"),
        (b'{"rq": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", 400, "body"),
        (b"rq=%7B%7D", "text/plain", 415, "Content-Type"),
        (b"rq=%ff", "application/x-www-form-urlencoded", 400, "rq"),
        (b"rq[genus]=acer", "application/x-www-form-urlencoded", 400, "rq"),
        (b"rq=%7B%7D&rq=%7B%22genus%22%3A1%7D", "application/x-www-form-urlencoded", 400, "rq"),
    ],
)
def test_malformed_bodies_are_a_4xx_naming_the_problem(
    api: Api, body: bytes, ctype: str, status: int, key: str
) -> None:
    api.ctx.settings = replace(api.ctx.settings, max_body_bytes=1_000_000)
    r = api.post("/v2/download", data=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["key"] == key and r.json()["status"] == status
    assert api.dispatcher.ids == []


@pytest.mark.parametrize(
    ("query", "key", "says"),
    [
        ("rq=%ff%fe", "rq", "UTF-8"),
        ("rq=%7B%7D&email=%ff", "email", "UTF-8"),
        ("rq=%7B%7D&rq=%7B%22genus%22%3A1%7D", "rq", "give it once"),
        ("rq[]=a", "rq", "rq[]"),
    ],
)
def test_odd_query_strings_are_a_400_naming_the_key(
    api: Api, query: str, key: str, says: str
) -> None:
    r = api.get("/v2/download/?" + query)
    assert r.status_code == 400, r.text
    assert r.json()["key"] == key and says in r.json()["error"]
    assert api.dispatcher.ids == []


def test_a_repeated_parameter_with_one_value_is_fine(api: Api) -> None:
    r = api.get("/v2/download/", params=[("rq", ACER), ("rq", ACER)])
    assert r.status_code == 200
    _assert_acer_status(r.json(), api)


def test_a_long_query_in_the_url_gets_an_answer(api: Api) -> None:
    # Longer than Tornado's default 64 KiB header limit, which would close the connection.
    big = '{"genus": "' + "a" * 70_000 + '"}'
    r = api.get("/v2/download/", params={"rq": big})
    assert r.status_code == 400 and r.json()["key"] == "rq"
    assert "limit" in r.json()["error"]


def test_head_works_on_every_get_route(api: Api) -> None:
    doc = api.finished()
    for path in (
        "/",
        f"/v2/download/{doc['id']}",
        f"/status/{doc['id']}",
        f"/v1/jobs/{doc['id']}",
        "/healthz",
        f"/archives/{doc['id']}",
    ):
        head = requests.head(api.url + path, timeout=30)
        assert head.status_code == 200, path
        assert head.content == b""
        assert head.headers["Content-Length"] == str(len(api.get(path).content)), path


def test_405_says_which_methods_are_allowed(api: Api) -> None:
    r = requests.put(api.url + "/v2/download", timeout=30)
    assert r.status_code == 405 and r.json()["status"] == 405
    assert r.headers["Allow"] == "GET, HEAD, POST, OPTIONS"


def test_upper_case_ids_find_the_job(api: Api) -> None:
    doc = api.finished()
    upper = doc["id"].upper()
    assert api.get(f"/v2/download/{upper}").json()["id"] == doc["id"]
    assert api.get(f"/archives/{upper}").status_code == 200


def test_if_none_match_compares_weakly(api: Api) -> None:
    doc = api.finished()
    path = doc["download_url"][len(api.url) :]
    etag = api.get(path).headers["ETag"]
    assert api.get(path, headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    # If-Range compares strongly: a weak tag sends the whole file.
    weak = api.get(path, headers={"Range": "bytes=0-9", "If-Range": f"W/{etag}"})
    assert weak.status_code == 200
