"""The download resource through real HTTP: every request shape, the status JSON, counts.

A real Tornado server runs on a free port in a background thread, over a SQLite job store,
local storage and an in-memory record source; builds are run by the test when it wants
them, so both the queued and the finished states can be observed.
"""

from __future__ import annotations

import pytest

from tests.unit.downloader.conftest import ACER, Api, assert_acer_status


@pytest.mark.parametrize("path", ["/v2/download", "/v2/download/"])
def test_get_with_rq_in_the_query_string(api: Api, path: str) -> None:
    r = api.get(path, params={"rq": ACER})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert_acer_status(r.json(), api)
    assert api.dispatcher.ids == [r.json()["id"]]


def test_form_post_with_rq_as_json_string_like_the_portal(api: Api) -> None:
    r = api.post("/v2/download", data={"rq": ACER, "email": "ana@example.org"})
    assert r.status_code == 200
    assert_acer_status(r.json(), api)


def test_json_post_with_rq_as_object_or_string(api: Api) -> None:
    a = api.post("/v2/download/", json={"rq": {"genus": "Acer"}}).json()
    b = api.post("/v2/download/", json={"rq": ACER}).json()
    assert_acer_status(a, api)
    assert a["id"] == b["id"]  # the same normalised request: one job


def test_legacy_root_with_query_parameter(api: Api) -> None:
    doc = api.get("/", params={"query": ACER}).json()
    assert_acer_status(doc, api)
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


def test_reused_finished_job_mails_the_new_requester_at_once(api: Api) -> None:
    doc = api.finished()
    again = api.get("/v2/download/", params={"rq": ACER, "email": "late@example.org"}).json()
    assert again["id"] == doc["id"] and again["task_status"] == "SUCCESS"
    assert [m["To"] for m in api.mailer.sent] == ["late@example.org"]
    assert doc["download_url"] in api.mailer.sent[0].get_content()


def test_count(api: Api) -> None:
    doc = api.get("/v2/count", params={"rq": ACER}).json()
    assert (doc["itemCount"], doc["records"], doc["mediarecords"]) == (10, 10, 10)
    assert doc["recordsets"] == 2
    assert api.post("/v2/count/", json={"rq": {"genus": "pinus"}}).json()["records"] == 10


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


def test_a_long_query_in_the_url_gets_an_answer(api: Api) -> None:
    # Longer than Tornado's default 64 KiB header limit, which would close the connection.
    big = '{"genus": "' + "a" * 70_000 + '"}'
    r = api.get("/v2/download/", params={"rq": big})
    assert r.status_code == 400 and r.json()["key"] == "rq"
    assert "limit" in r.json()["error"]


def test_upper_case_ids_find_the_job(api: Api) -> None:
    doc = api.finished()
    upper = doc["id"].upper()
    assert api.get(f"/v2/download/{upper}").json()["id"] == doc["id"]
    assert api.get(f"/archives/{upper}").status_code == 200
