"""What every handler shares, through real HTTP: body parsing, the one error shape, CORS."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest
import requests

from tests.unit.downloader.conftest import ACER, Api, assert_acer_status


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


def test_multipart_form_post_is_understood(api: Api) -> None:
    fields = {"rq": (None, ACER), "email": (None, "ana@example.org")}
    doc = api.post("/v2/download", files=fields).json()
    assert_acer_status(doc, api)
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
    assert_acer_status(r.json(), api)


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
