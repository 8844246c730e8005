"""Checking real HTTP answers against the service's OpenAPI document (``/openapi.json``)."""

from __future__ import annotations

import re
from typing import Any

import requests
from jsonschema import Draft202012Validator


def template_of(doc: dict[str, Any], path: str) -> str:
    """The documented path template that the concrete ``path`` instantiates."""
    for template in doc["paths"]:
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template
    raise AssertionError(f"{path} is not in the OpenAPI document")


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, following ``$ref``s within ``doc``."""
    while "$ref" in node:
        target: Any = doc
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def check_response(doc: dict[str, Any], response: requests.Response) -> None:
    """Assert that ``response`` is one the document allows for its request: a documented
    status code, the documented content type, a body valid against the schema, and the
    documented headers."""
    request = response.request
    path = requests.utils.urlparse(request.url or "").path
    template = template_of(doc, path)
    method = (request.method or "GET").lower()
    operation = doc["paths"][template].get(method)
    assert operation is not None, f"{method.upper()} {template} is not documented"
    code = str(response.status_code)
    answers = operation["responses"]
    assert code in answers, f"{method.upper()} {path} answered {code}, not documented"
    answer = resolve(doc, answers[code])
    for name in answer.get("headers", {}):
        assert name in response.headers, f"{code} of {method.upper()} {path} lacks {name}"
    content = answer.get("content")
    if not content or method == "head":
        return
    ctype = response.headers.get("Content-Type", "").split(";")[0].strip()
    media = content.get(ctype) or content.get("*/*")
    assert media is not None, f"{method.upper()} {path} {code}: {ctype} is not documented"
    schema = media.get("schema")
    if schema is None:
        return
    body: Any = response.json() if ctype.endswith("json") else response.text
    validator = Draft202012Validator({**schema, "components": doc["components"]})
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{method.upper()} {path} {code}: " + "; ".join(
        f"{list(e.path)}: {e.message}" for e in errors[:5]
    )
