"""The OpenAPI document at /openapi.json is a valid OpenAPI 3.1 document, names every route
of the application (and nothing else) with the methods each takes, and real answers of the
service fit it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import tornado.web
from openapi_spec_validator import validate

from downloader.api.app import make_app
from downloader.api.openapi import document
from tests.support.openapi import check_response, resolve
from tests.unit.downloader.conftest import ACER, Api, local_context

_METHODS = ("get", "post", "delete")


def _routes(tmp_path: Path) -> list[tuple[re.Pattern[str], type[tornado.web.RequestHandler]]]:
    app = make_app(local_context(tmp_path))
    out = []
    for rule in app.wildcard_router.rules:
        regex = getattr(rule.matcher, "regex", None)
        assert regex is not None, rule
        out.append((regex, rule.target))
    return out


def _implemented(handler: type[tornado.web.RequestHandler], method: str) -> bool:
    return getattr(handler, method) is not getattr(tornado.web.RequestHandler, method)


def _sample(template: str) -> str:
    return re.sub(r"\{[^/]+?\}", "x", template)


def _route_of(
    routes: list[tuple[re.Pattern[str], type[tornado.web.RequestHandler]]], path: str
) -> tuple[re.Pattern[str], type[tornado.web.RequestHandler]] | None:
    # Tornado takes the first route whose pattern matches the whole path.
    for regex, handler in routes:
        if regex.fullmatch(path):
            return regex, handler
    return None


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document(server_url="http://localhost:8080")
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_route_is_documented_and_every_documented_path_is_a_route(tmp_path: Path) -> None:
    doc = document()
    routes = _routes(tmp_path)
    reached = set()
    for template, item in doc["paths"].items():
        found = _route_of(routes, _sample(template))
        assert found is not None, f"{template} reaches no route (it would be a 404)"
        regex, handler = found
        reached.add(regex.pattern)
        documented = {m for m in _METHODS if m in item}
        implemented = {m for m in _METHODS if _implemented(handler, m)}
        assert documented == implemented, (template, handler.__name__, documented, implemented)
        if "head" in item:
            assert _implemented(handler, "head") or _implemented(handler, "get")
    undocumented = [r.pattern for r, _ in routes if r.pattern not in reached]
    assert not undocumented, f"routes missing from /openapi.json: {undocumented}"


def test_every_operation_documents_the_one_error_shape_and_the_limits() -> None:
    doc = document()
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "status"}
    for template, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            answers = operation["responses"]
            # Every request may be refused for its size before any handler runs.
            assert {"414", "431"} <= set(answers), (method, template)
            for code, answer in answers.items():
                if int(code) >= 400 and method != "head":
                    media = resolve(doc, answer)["content"]["application/json"]
                    schema = json.dumps(media["schema"])
                    assert "#/components/schemas/Error" in schema, (method, template, code)
    for template in ("/v2/download/", "/v1/occurrence/download/request"):
        for operation in doc["paths"][template].values():
            for code in ("429", "503"):
                answer = resolve(doc, operation["responses"][code])
                assert "Retry-After" in answer["headers"], (template, code)


def test_real_answers_fit_the_document(api: Api) -> None:
    doc = api.get("/openapi.json").json()
    assert doc["servers"] == [{"url": api.url}]
    assert doc["paths"] == document()["paths"]
    seen: list[requests.Response] = []

    def get(path: str, **kw: Any) -> requests.Response:
        seen.append(api.get(path, **kw))
        return seen[-1]

    def call(method: str, path: str, **kw: Any) -> requests.Response:
        seen.append(requests.request(method, api.url + path, timeout=30, **kw))
        return seen[-1]

    asked = get("/v2/download/", params={"rq": ACER}).json()
    call("POST", "/v2/download/", json={"rq": {"genus": "quercus"}, "form": "dwca-tsv"})
    call("POST", "/v2/download/", data={"rq": '{"genus": "acer"}', "email": "a@example.org"})
    get("/v2/download/", params={"rq": '{"genus": '})  # 400
    get("/v2/download/", params={"rq": '{"nosuchfield": 1}'})  # 400, TermNotFound
    call("POST", "/v2/download/", data=b"\x00", headers={"Content-Type": "text/x-weird"})  # 415
    get(f"/v2/download/{asked['id']}")
    get(f"/status/{asked['id']}")
    get(f"/v1/jobs/{asked['id']}")
    get("/v2/download/not-a-job")  # 404
    call("DELETE", f"/v2/download/{asked['id']}")  # 401
    call("DELETE", f"/v1/jobs/{asked['id']}", headers={"Authorization": "Bearer wrong"})  # 403
    cancelled = call(
        "DELETE",
        f"/v2/download/{asked['id']}",
        headers={"Authorization": f"Bearer {asked['cancel_token']}"},
    )
    assert cancelled.status_code == 200
    call("DELETE", f"/v1/jobs/{asked['id']}", params={"token": asked["cancel_token"]})  # 409
    done = api.finished({"rq": '{"genus": "acer", "hasImage": false}'})
    get(f"/v2/download/{done['id']}")
    get(f"/v1/jobs/{done['id']}")
    get(f"/archives/{done['id']}", headers={"Range": "bytes=0-9"})
    get(f"/archives/{done['id']}", headers={"Range": "bytes=999999999-"})  # 416
    call("HEAD", f"/archives/{done['id']}")
    get("/v2/count/", params={"rq": ACER})
    call("POST", "/v2/count/", json={"rq": {"genus": "acer"}})
    for path in ("/", "/v2/fields/", "/v2/estimates/", "/recordsets/", "/healthz", "/readyz"):
        get(path)
    get("/metrics")
    get("/portal/config.json")
    get("/portal/", allow_redirects=False)
    get("/portal/static/nosuchfile.js")  # 404
    key = call(
        "POST",
        "/v1/occurrence/download/request",
        json={
            "creator": "someone",
            "predicate": {"type": "equals", "key": "GENUS", "value": "Acer"},
        },
    )
    assert key.status_code == 201
    get(f"/v1/occurrence/download/{key.text}")
    get(f"/v1/occurrence/download/request/{key.text}", allow_redirects=False)  # 404, not ready
    get("/v1/occurrence/download/user/someone", auth=("someone", "x"))
    get("/v1/occurrence/download/user/someone")  # 401
    call("POST", "/v1/occurrence/download/request", data=b"[")  # 400
    get("/v2/download/", params={"rq": "x" * 600_000})  # 414
    assert {r.status_code for r in seen} >= {200, 201, 206, 400, 401, 403, 404, 409, 414, 416}
    for response in seen:
        check_response(doc, response)


def test_an_answer_outside_the_document_is_caught(api: Api) -> None:
    # The checker itself can fail: an undocumented code, a body off its schema.
    doc = document()
    response = api.get("/v2/download/not-a-job")
    doc["paths"]["/v2/download/{id}"]["get"]["responses"].pop("404")
    with pytest.raises(AssertionError, match="404, not documented"):
        check_response(doc, response)
    doc = document()
    doc["components"]["schemas"]["Error"]["required"].append("nonesuch")
    with pytest.raises(AssertionError, match="nonesuch"):
        check_response(doc, response)
