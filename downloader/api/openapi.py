"""The HTTP API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

The document is built here, in code, rather than kept as a static JSON or YAML file: its
enumerations (job states in each API's vocabulary, archive forms, core types, GBIF formats)
and the query's JSON Schema are taken from the modules that define them, so a new state or
form appears in the contract the day it appears in the service; and the one error shape,
the limit answers (429/503 with ``Retry-After``) and the URL/header answers (414/431) are
written once and attached to every operation by small helpers instead of being repeated
sixty times by hand. ``tests/unit/downloader/api/test_openapi.py`` keeps it true: every
route of the application is documented and every documented path reaches its route, real
responses validate against its schemas, and ``tests/integration/test_contract_fuzz.py``
runs schemathesis against a live ``serve`` from it.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

from downloader.api.base import BaseHandler
from downloader.service import gbif
from downloader.service.downloads import _TASK_STATUS, REQUEST_KEYS
from downloader.service.jobs import STATUS as JOB_STATUS
from query import gbif as gbif_fields
from query.fields import field_names
from query.request import CORE_SOURCES, CORE_TYPES, FORMS
from query.schema import QUERY_SCHEMA

#: Bumped when an endpoint or a documented field changes.
API_VERSION = "2.1.0"

_JSON = "application/json"
_STATES = ["PENDING", "STARTED", "SUCCESS", "FAILURE", "CANCELLED", "EXPIRED"]
_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "A job id (a UUID, case-insensitive); any other value is a 404.",
    "schema": {"type": "string", "minLength": 1},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}, **extra}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    answer = _json(_ref("Error"), description)
    if retry_after:
        answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return answer


#: Answers any request may get before its handler runs (base.BaseHandler.prepare).
_EDGE_ERRORS = {
    "414": {"$ref": "#/components/responses/URITooLong"},
    "431": {"$ref": "#/components/responses/HeadersTooLarge"},
}
#: Answers of every operation that reads the job store, the record source or storage.
_UNAVAILABLE = {"503": {"$ref": "#/components/responses/Unavailable"}}


def _responses(*codes: str, **answers: dict[str, Any]) -> dict[str, Any]:
    """``answers`` (keyed ``r200`` etc.), the shared error answers named by ``codes``, and
    the edge answers every request may get."""
    out: dict[str, Any] = {key.removeprefix("r"): value for key, value in answers.items()}
    for code in codes:
        out.setdefault(code, {"$ref": f"#/components/responses/E{code}"})
    for code, ref in {**_EDGE_ERRORS, **_UNAVAILABLE}.items():
        out.setdefault(code, ref)
    return dict(sorted(out.items()))


def _download_parameters() -> list[dict[str, Any]]:
    """The query-string parameters of ``/v2/download`` and ``/v2/count`` (iDigBio's)."""
    text = {"type": "string"}
    return [
        {
            "name": "rq",
            "in": "query",
            "description": "The records query, as JSON text (an iDigBio search query).",
            "schema": text,
            "examples": {"acer": {"value": '{"genus": "acer"}'}},
        },
        {
            "name": "mq",
            "in": "query",
            "description": "The media records query, as JSON text.",
            "schema": text,
        },
        {
            "name": "query",
            "in": "query",
            "description": "csv.idigbio.org's name for rq.",
            "schema": text,
        },
        {"name": "core_type", "in": "query", "schema": {"type": "string", "enum": [*CORE_TYPES]}},
        {
            "name": "core_source",
            "in": "query",
            "schema": {"type": "string", "enum": [*CORE_SOURCES]},
        },
        {"name": "form", "in": "query", "schema": {"type": "string", "enum": [*FORMS]}},
        {
            "name": "record_fields",
            "in": "query",
            "description": "Index fields of the records file, as a JSON list or commas.",
            "schema": text,
        },
        {
            "name": "mediarecord_fields",
            "in": "query",
            "description": "Index fields of the media file, as a JSON list or commas.",
            "schema": text,
        },
        {"name": "extensions", "in": "query", "schema": _FLAG_TEXT},
    ]


def _requester_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "email",
            "in": "query",
            "description": "Where the ready (or failed) email goes; never echoed.",
            "schema": {"type": "string", "format": "email"},
        },
        {
            "name": "force",
            "in": "query",
            "description": "true: a new job even if an equal one may be reused.",
            "schema": _FLAG_TEXT,
        },
    ]


#: The values ``force`` and ``extensions`` take as text (either case).
_FLAG_TEXT = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"]}
#: One of these names the query (csv.idigbio.org's ``query`` is ``rq``'s old name).
_NEEDS_QUERY = [{"required": ["rq"]}, {"required": ["mq"]}, {"required": ["query"]}]


def _download_body(*, with_requester: bool) -> dict[str, Any]:
    """The body of a POST to ``/v2/download`` or ``/v2/count``: JSON (``rq`` an object or
    JSON text) or a form (every value text, as iDigBio's portal sends it). Keys other than
    these are ignored by the service; the contract leaves them out."""
    field_list = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]}
    json_props: dict[str, Any] = {
        # The service also takes these as JSON text, as in a form; the contract names the
        # object, the shape a JSON body is for.
        "rq": _ref("Query"),
        "mq": _ref("Query"),
        "query": _ref("Query"),
        "core_type": {"type": "string", "enum": [*CORE_TYPES]},
        "core_source": {"type": "string", "enum": [*CORE_SOURCES]},
        "form": {"type": "string", "enum": [*FORMS]},
        "record_fields": field_list,
        "mediarecord_fields": field_list,
        "extensions": {"anyOf": [{"type": "boolean"}, _FLAG_TEXT]},
    }
    form_props: dict[str, Any] = {name: {"type": "string"} for name in REQUEST_KEYS}
    form_props.update(
        core_type=json_props["core_type"],
        core_source=json_props["core_source"],
        form=json_props["form"],
        extensions=_FLAG_TEXT,
    )
    if with_requester:
        json_props["email"] = {"type": "string", "format": "email"}
        json_props["force"] = {"anyOf": [{"type": "boolean"}, _FLAG_TEXT]}
        form_props["email"] = {"type": "string", "format": "email"}
        form_props["force"] = _FLAG_TEXT

    def body(props: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema": {
                "type": "object",
                "properties": props,
                "additionalProperties": False,
                "anyOf": _NEEDS_QUERY,
            }
        }

    return {
        "required": True,
        "content": {
            _JSON: body(json_props),
            "application/x-www-form-urlencoded": body(form_props),
        },
    }


def _paths() -> dict[str, Any]:
    status_ok = _json(_ref("Status"), "The job's status (iDigBio's fields, then ours).")
    job_ok = _json(_ref("Job"), "The job, cancelled (200) or told to stop (202).")
    # An admin token lifts the limits (and max_download_records); none is needed.
    admin_optional: list[dict[str, list[str]]] = [
        {},
        {"bearer": []},
        {"adminToken": []},
        {"tokenQuery": []},
    ]
    download: dict[str, Any] = {
        "security": admin_optional,
        "parameters": _download_parameters() + _requester_parameters(),
        "responses": _responses(
            "400",
            "413",
            "415",
            "429",
            r200=_json(
                _ref("Status"),
                "The status of the job that builds the archive: a new one (with its "
                "cancel_token) or an equal one reused.",
                links=_job_links("$response.body#/id", cancel=True),
            ),
        ),
    }
    download_post = {
        "security": admin_optional,
        "requestBody": _download_body(with_requester=True),
        "parameters": _download_parameters() + _requester_parameters(),
        "responses": download["responses"],
    }
    cancel = {
        "summary": "Cancel a queued or running job (its cancel_token, or an admin token)",
        "security": [{}, {"bearer": []}, {"adminToken": []}],
        "parameters": [_TOKEN_PARAM],
        "responses": _responses("401", "403", "404", "409", r200=job_ok, r202=job_ok),
    }
    status_get = {
        "summary": "A download's status",
        "responses": _responses("404", r200=status_ok, r304={"description": "Not modified."}),
    }
    archive: dict[str, Any] = {
        "summary": "A finished archive, resumable (Range, If-Range; ETag is its sha256)",
        "responses": _responses(
            "404",
            "410",
            "416",
            r200={"description": "The archive.", "content": {"*/*": {}}},
            r206={"description": "The requested range.", "content": {"*/*": {}}},
            r304={"description": "Not modified (If-None-Match)."},
            r409=_error(
                "The download has no archive (yet): it is queued, building, failed or "
                "cancelled; task_status says which."
            ),
        ),
    }
    archive_head = {
        "summary": "The archive's headers",
        "responses": _headless(archive["responses"]),
    }
    count = _json(_ref("Count"), "How many records and media records the query matches.")
    export_get_responses = _responses(
        "400",
        "404",
        r200={"description": "The export's zip (local storage).", "content": {"*/*": {}}},
        r204={"description": "No export of this version exists."},
        r206={"description": "The requested range of the export.", "content": {"*/*": {}}},
        r208=_json(_ref("Job"), "The export is being built (Location: its job)."),
        r303={"description": "The export's presigned URL (S3), in Location."},
        r304={"description": "Not modified (If-None-Match)."},
        r416={"$ref": "#/components/responses/E416"},
    )
    gbif_download = _json(_ref("GbifDownload"), "GBIF's Download object.")
    gbif_download["content"] = {"application/json": gbif_download["content"][_JSON]}
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "summary": "csv.idigbio.org's shape: a download from ?query=/rq=, or what the "
                "service offers (a browser asking for HTML is sent to /portal/)",
                "security": admin_optional,
                "parameters": download["parameters"],
                "responses": download["responses"]
                | {
                    "303": {"description": "A browser (Accept: text/html): see /portal/."},
                    "200": _json(
                        {"anyOf": [_ref("Status"), _ref("About")]},
                        "A download's status, or (without parameters) what the service offers.",
                    ),
                },
            },
            "post": download_post,
        },
        "/v2/download/": {
            "get": {"summary": "Ask for an archive (iDigBio v2)", **download},
            "post": {"summary": "Ask for an archive by form or JSON body", **download_post},
        },
        "/v2/download/{id}": {
            "parameters": [_ID_PARAM],
            "get": status_get,
            "delete": cancel,
        },
        "/status/{id}": {"parameters": [_ID_PARAM], "get": status_get},
        "/v2/count/": {
            "get": {
                "summary": "Count what a query matches before asking for it",
                "parameters": _download_parameters(),
                "responses": _responses("400", "413", "415", r200=count),
            },
            "post": {
                "summary": "Count, the query in a form or JSON body",
                "parameters": _download_parameters(),
                "requestBody": _download_body(with_requester=False),
                "responses": _responses("400", "413", "415", r200=count),
            },
        },
        "/v1/jobs/{id}": {
            "parameters": [_ID_PARAM],
            "get": {
                "summary": "Any download or export job (RSpace's jobs resource)",
                "responses": _responses("404", r200=_json(_ref("Job"), "The job.")),
            },
            "delete": cancel,
        },
        "/archives/{id}": {
            "parameters": [_ID_PARAM],
            "get": archive,
            "head": archive_head,
        },
        "/archives/{id}/{filename}": {
            "parameters": [
                _ID_PARAM,
                {
                    "name": "filename",
                    "in": "path",
                    "required": True,
                    "description": "Any name: the archive's own is in Content-Disposition.",
                    "schema": {"type": "string", "minLength": 1},
                },
            ],
            "get": archive,
            "head": archive_head,
        },
        "/recordsets/": {
            "get": {
                "summary": "The recordsets the store holds, with their export URLs",
                "responses": _responses(r200=_json(_ref("Recordsets"), "The listing.")),
            }
        },
        "/recordsets/{recordset}/versions/": {
            "parameters": [_path("recordset", "A recordset id.")],
            "get": {
                "summary": "A recordset's versions with lastUpdated and export state",
                "responses": _responses(
                    "400", "404", r200=_json(_ref("Versions"), "The versions, newest first.")
                ),
            },
        },
        "/recordsets/{recordset}/{version}/export/": {
            "parameters": [
                _path("recordset", "A recordset id."),
                _path("version", "A version number, or HEAD for the current one."),
            ],
            "get": {"summary": "A version's cached DwC-A", "responses": export_get_responses},
            "head": {
                "summary": "Whether the export exists (the GET's headers)",
                "responses": _headless(export_get_responses),
            },
            "post": {
                "summary": "Start the export's build",
                "responses": _responses(
                    "400",
                    "404",
                    "410",
                    r200=_json(_ref("Version"), "The export exists."),
                    r202=_json(_ref("Job"), "A build started (its job, with cancel_token)."),
                    r409=_json(
                        _ref("Error"), "A build is running (the error holds its job as 'job')."
                    ),
                ),
            },
            "delete": {
                "summary": "Delete the export, or stop its build (admin)",
                "security": [{"bearer": []}, {"adminToken": []}, {"tokenQuery": []}],
                "responses": _responses(
                    "400", "401", "403", "404", r204={"description": "Deleted."}
                ),
            },
        },
        "/v2/fields/": {
            "get": {
                "summary": "The field catalogue, for a query builder",
                "responses": _responses(r200=_json(_ref("Fields"), "Both record types' fields.")),
            }
        },
        "/v2/estimates/": {
            "get": {
                "summary": "Measured build rate and archive bytes per record",
                "responses": _responses(r200=_json(_ref("Estimates"), "The rates.")),
            }
        },
        "/v1/occurrence/download/request": {
            "post": {
                "summary": "GBIF: ask for a download; answers its key as text (201)",
                "security": [{}, {"gbifBasic": []}, {"bearer": []}, {"adminToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("GbifRequest")}},
                },
                "responses": _responses(
                    "400",
                    "401",
                    "413",
                    "429",
                    r201={
                        "description": "The download's key.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                        "links": {
                            "GbifDownload": {
                                "operationId": "get_v1_occurrence_download_key",
                                "parameters": {"key": "$response.body"},
                            },
                            "GbifFile": {
                                "operationId": "get_v1_occurrence_download_request_key",
                                "parameters": {"key": "$response.body"},
                            },
                            **_job_links("$response.body", cancel=False),
                        },
                    },
                ),
            }
        },
        "/v1/occurrence/download/request/{key}": {
            "parameters": [_path("key", "The download's key (a '.zip' suffix is accepted).")],
            "get": {
                "summary": "GBIF: the file (a redirect)",
                "responses": _responses(
                    "404",
                    "410",
                    r302={"description": "The archive, in Location."},
                ),
            },
            "delete": {
                "summary": "GBIF: cancel (the creator's Basic credentials, or an admin token)",
                "security": [{"gbifBasic": []}, {"bearer": []}, {"adminToken": []}],
                "responses": _responses(
                    "401", "403", "404", "409", r204={"description": "Cancelled."}
                ),
            },
        },
        "/v1/occurrence/download/user/{user}": {
            "parameters": [_path("user", "The creator's user name.")],
            "get": {
                "summary": "GBIF: a creator's downloads, paged",
                "security": [{"gbifBasic": []}, {"bearer": []}, {"adminToken": []}],
                "parameters": [
                    {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": _responses(
                    "400",
                    "401",
                    "403",
                    r200=_json(_ref("GbifDownloads"), "A page of the creator's downloads."),
                ),
            },
        },
        "/v1/occurrence/download/{key}": {
            "parameters": [_path("key", "The download's key.")],
            "get": {
                "summary": "GBIF: the Download object",
                "responses": _responses(
                    "404",
                    "405",
                    r200=gbif_download,
                ),
                "description": "The key 'request' names the request resource, which takes "
                "only POST (405).",
            },
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers and reads its job store",
                "responses": _responses(
                    r200=_json(
                        {
                            "type": "object",
                            "required": ["ok"],
                            "properties": {"ok": {"const": True}},
                        },
                        "Alive.",
                    )
                ),
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: every dependency checked",
                "responses": _responses(
                    r200=_json(_ref("Ready"), "Every check passed."),
                )
                | {
                    "503": _json(
                        {"allOf": [_ref("Error"), _ref("Ready")]},
                        "A check failed (error names which); Retry-After.",
                        headers={"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                    )
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "responses": _responses(
                    r200={
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                ),
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": _responses(
                    r200=_json({"type": "object", "required": ["openapi"]}, "OpenAPI 3.1.")
                ),
            }
        },
        "/portal": {
            "get": {
                "summary": "Redirect to /portal/",
                "responses": _responses(r301={"description": "See /portal/."}),
            }
        },
        "/portal/": {
            "get": {
                "summary": "The web page for researchers",
                "responses": _responses(
                    r200={
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                ),
            }
        },
        "/portal/config.json": {
            "get": {
                "summary": "The operator's settings the page reads",
                "responses": _responses(r200=_json(_ref("PageConfig"), "The settings.")),
            }
        },
        "/portal/static/{path}": {
            "parameters": [_path("path", "A file of the page (scripts, styles, map data).")],
            "get": {
                "summary": "The page's static files",
                "responses": _responses(
                    "403",
                    "404",
                    r200={"description": "The file.", "content": {"*/*": {}}},
                    r304={"description": "Not modified."},
                ),
            },
        },
        "/favicon.ico": {
            "get": {
                "summary": "Redirect to the page's icon",
                "responses": _responses(r301={"description": "The icon's URL."}),
            }
        },
    }
    for path, item in paths.items():
        for method in [m for m in item if m != "parameters"]:
            # Operations shared by two paths are copied, so each has its own id.
            item[method] = {
                **copy.deepcopy(item[method]),
                "operationId": _operation_id(method, path),
            }
    return paths


def _operation_id(method: str, path: str) -> str:
    return method + re.sub(r"[^A-Za-z0-9]", "_", path.replace("{", "").replace("}", ""))


_TOKEN_PARAM = {
    "name": "token",
    "in": "query",
    "required": False,
    "description": "The job's cancel_token or an admin token (also accepted as "
    "'Authorization: Bearer' or X-Admin-Token; never logged).",
    "schema": {"type": "string"},
}


def _job_links(id_expression: str, *, cancel: bool) -> dict[str, Any]:
    """OpenAPI links from an answer naming a job to what can be done with it next."""
    links: dict[str, Any] = {
        name: {"operationId": operation, "parameters": {"id": id_expression}}
        for name, operation in (
            ("Status", "get_v2_download_id"),
            ("Job", "get_v1_jobs_id"),
            ("Archive", "get_archives_id"),
        )
    }
    if cancel:
        links["Cancel"] = {
            "operationId": "delete_v2_download_id",
            "parameters": {"id": id_expression, "token": "$response.body#/cancel_token"},
        }
    return links


def _headless(responses: dict[str, Any]) -> dict[str, Any]:
    """A GET's answers as HEAD gives them: the same codes and headers, no body."""
    out = {}
    for code, answer in responses.items():
        ref = answer.get("$ref", "")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            answer = _components_responses()[name]
        out[code] = {"description": answer["description"]} | (
            {"headers": answer["headers"]} if "headers" in answer else {}
        )
    return out


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def _schemas() -> dict[str, Any]:
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    query = copy.deepcopy(QUERY_SCHEMA)
    query.pop("$schema", None)
    # The keys a query may use: the catalogue's fields (GET /v2/fields; names match
    # case-insensitively, listed here as the catalogue spells them) and data.<term>.
    names = sorted({*field_names("records"), *field_names("mediarecords")})
    query["propertyNames"] = {"anyOf": [{"enum": names}, {"pattern": "^data\\..+"}]}
    query["description"] = (
        "An iDigBio search query: field names (as GET /v2/fields lists them, in any case) "
        "or data.<term>, each with a value, a list of values or a typed clause."
    )
    return {
        "Error": {
            "description": "The one JSON error shape: what is wrong, in words a person can "
            "act on, the HTTP status again, an error name, and the offending parameter or "
            "query path as key when there is one. Some errors add fields (a 413 names the "
            "count and the limit, a 429 the limit it met, a 409 the job).",
            "type": "object",
            "required": ["error", "status"],
            "properties": {
                "error": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "name": {"type": "string"},
                "key": {"type": "string"},
            },
        },
        "Query": query,
        "Checksum": {
            "type": "object",
            "required": ["algorithm", "value"],
            "properties": {"algorithm": {"const": "sha256"}, "value": {"type": "string"}},
        },
        "Status": {
            "description": "iDigBio's status fields with their meaning, then ours.",
            "type": "object",
            "required": [
                "id",
                "complete",
                "task_status",
                "state",
                "status_url",
                "query",
                "query_hash",
                "hash",
                "created",
                "expires",
                "records_written",
                "percent_complete",
                "format",
                "cancelled",
            ],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "complete": {"type": "boolean"},
                "task_status": {"enum": sorted({*_TASK_STATUS.values(), "UNKNOWN"})},
                "state": {"enum": _STATES},
                "status_url": {"type": "string", "format": "uri"},
                "download_url": {"type": "string", "format": "uri"},
                "query": {"type": "object"},
                "query_hash": {"type": "string"},
                "hash": {"type": "string"},
                "created": nullable_time,
                "started": nullable_time,
                "completed": nullable_time,
                "expires": nullable_time,
                "records_written": count,
                "total_records": {"type": ["integer", "null"], "minimum": 0},
                "percent_complete": {"type": "number", "minimum": 0, "maximum": 100},
                "format": {"type": "string"},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "recordsets": {"type": ["integer", "null"]},
                "size": {"type": ["integer", "null"]},
                "checksum": {"anyOf": [_ref("Checksum"), {"type": "null"}]},
                "cancelled": {"type": "boolean"},
                "expired": {"type": "boolean"},
                "attempts": {"type": "integer"},
                "data_version": {"type": ["string", "null"]},
                "filename": {"type": ["string", "null"]},
                "citation": {"type": "string"},
                "citation_bibtex": {"type": "string"},
                "citation_ris": {"type": "string"},
                "error": {"type": "string"},
                "retrying": {
                    "type": "boolean",
                    "description": "True while the job waits out a transient error (then "
                    "error says which, and retry_at when it is tried again).",
                },
                "retry_at": nullable_time,
                "cancel_token": {
                    "type": "string",
                    "description": "Only in the answer that created the job: it cancels it.",
                },
            },
        },
        "Job": {
            "description": "A download or export job (RSpace's jobs resource).",
            "type": "object",
            "required": ["id", "kind", "status", "percentComplete", "_links"],
            "properties": {
                "id": {"type": "string"},
                "kind": {"enum": ["download", "export"]},
                "status": {"enum": sorted({*JOB_STATUS.values(), "UNKNOWN"})},
                "percentComplete": {"type": "number", "minimum": 0, "maximum": 100},
                "recordsWritten": count,
                "totalRecords": {"type": ["integer", "null"]},
                "createdAt": nullable_time,
                "startedAt": nullable_time,
                "completedAt": nullable_time,
                "cancelRequested": {"type": "boolean"},
                "recordset": {"type": ["string", "null"]},
                "version": {"type": ["integer", "string", "null"]},
                "result": {
                    "type": "object",
                    "properties": {
                        "checksum": {"type": ["string", "null"]},
                        "algorithm": {"const": "sha256"},
                        "size": {"type": ["integer", "null"]},
                        "expiryDate": nullable_time,
                    },
                },
                "error": {"type": "string"},
                "retrying": {"type": "boolean"},
                "retryAt": nullable_time,
                "cancel_token": {"type": "string"},
                "_links": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["rel", "link"],
                        "properties": {"rel": {"type": "string"}, "link": {"type": "string"}},
                    },
                },
            },
        },
        "Count": {
            "type": "object",
            "required": ["itemCount", "records", "mediarecords", "recordsets", "query_hash"],
            "properties": {
                "itemCount": count,
                "records": count,
                "mediarecords": count,
                "recordsets": count,
                "query": {"type": "object"},
                "query_hash": {"type": "string"},
                "data_version": {"type": "string"},
            },
        },
        "About": {
            "type": "object",
            "required": ["service", "download", "status"],
            "properties": {
                k: {"type": "string"}
                for k in ("service", "download", "status", "count", "portal", "fields", "health")
            },
        },
        "Version": {
            "type": "object",
            "required": ["recordset", "version", "export"],
            "properties": {
                "recordset": {"type": "string"},
                "version": {"type": "integer"},
                "lastUpdated": {"type": ["string", "null"]},
                "lastUpdatedISO": nullable_time,
                "current": {"type": "boolean"},
                "records": {"type": ["integer", "null"]},
                "export": {
                    "type": "object",
                    "required": ["state", "url"],
                    "properties": {
                        "state": {"enum": ["none", "building", "ready", "failed"]},
                        "url": {"type": "string"},
                        "job": {"type": "string"},
                        "filename": {"type": ["string", "null"]},
                        "size": {"type": ["integer", "null"]},
                        "checksum": _ref("Checksum"),
                        "error": {"type": ["string", "null"]},
                    },
                },
            },
        },
        "Versions": {
            "type": "object",
            "required": ["recordset", "versions"],
            "properties": {
                "recordset": {"type": "string"},
                "versions": {"type": "array", "items": _ref("Version")},
            },
        },
        "Recordsets": {
            "type": "object",
            "required": ["recordsets"],
            "properties": {
                "recordsets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["recordset", "version", "versions_url", "export_url"],
                        "properties": {
                            "recordset": {"type": "string"},
                            "name": {"type": ["string", "null"]},
                            "version": {"type": "integer"},
                            "records": {"type": ["integer", "null"]},
                            "mediarecords": {"type": ["integer", "null"]},
                            "ingested_at": nullable_time,
                            "versions_url": {"type": "string"},
                            "export_url": {"type": "string"},
                        },
                    },
                },
                "note": {"type": "string"},
            },
        },
        "Fields": {
            "type": "object",
            "required": ["records", "mediarecords"],
            "properties": {
                rtype: {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "kind", "types"],
                        "properties": {
                            "name": {"type": "string"},
                            "kind": {"type": "string"},
                            "group": {"type": "string"},
                            "types": {"type": "array", "items": {"type": "string"}},
                            "header": {"type": ["string", "null"]},
                            "term": {"type": ["string", "null"]},
                        },
                    },
                }
                for rtype in ("records", "mediarecords")
            },
        },
        "Estimates": {
            "type": "object",
            "required": ["source", "records_per_second", "bytes_per_record"],
            "properties": {
                "source": {"enum": ["measured", "default"]},
                "samples": count,
                "records_per_second": {"type": "number", "exclusiveMinimum": 0},
                "bytes_per_record": {"type": "number", "exclusiveMinimum": 0},
                "start_seconds": {"type": "number", "minimum": 0},
            },
        },
        "PageConfig": {
            "type": "object",
            "required": ["publisher_name", "retention_days"],
            "properties": {
                "map_tile_url": {"type": "string"},
                "map_tile_attribution": {"type": "string"},
                "publisher_name": {"type": "string"},
                "retention_days": {"type": "number"},
                "max_download_records": {"type": "integer"},
            },
        },
        "Ready": {
            "type": "object",
            "required": ["ok", "checks"],
            "properties": {
                "ok": {"type": "boolean"},
                "checks": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["ok"],
                        "properties": {"ok": {"type": "boolean"}, "error": {"type": "string"}},
                    },
                },
            },
        },
        "GbifRequest": {
            "description": "GBIF's download request (pygbif's and rgbif's occ_download). "
            "The creator may come from HTTP Basic credentials instead.",
            "type": "object",
            "required": ["creator", "predicate"],
            "additionalProperties": False,
            "properties": {
                "creator": {"type": "string"},
                "format": {"enum": sorted(gbif.FORMATS)},
                "predicate": _ref("GbifPredicate"),
                "sendNotification": {"type": "boolean"},
                "notificationAddresses": {
                    "type": "array",
                    "items": {"type": "string", "format": "email"},
                },
            },
        },
        "GbifPredicate": {
            "description": "GBIF's predicate: equals, in, like, isNull, isNotNull, within, "
            "geoDistance on a key, or and/or/not of predicates.",
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {
                "type": {
                    "enum": [
                        "equals",
                        "in",
                        "like",
                        "isNull",
                        "isNotNull",
                        "within",
                        "geoDistance",
                        "and",
                        "or",
                        "not",
                    ]
                },
                "key": {"enum": sorted(gbif_fields.FIELDS)},
                "value": {"type": ["string", "number", "boolean"]},
                "values": {"type": "array", "items": {"type": ["string", "number"]}},
                "parameter": {"type": "string"},
                "geometry": {"type": "string"},
                "predicate": {"$ref": "#/components/schemas/GbifPredicate"},
                "predicates": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/GbifPredicate"},
                },
            },
        },
        "GbifDownload": {
            "description": "GBIF's Download object.",
            "type": "object",
            "required": ["key", "status", "request", "created"],
            "properties": {
                "key": {"type": "string"},
                "doi": {"type": ["string", "null"]},
                "license": {"type": "string"},
                "request": {"type": "object"},
                "created": nullable_time,
                "modified": nullable_time,
                "eraseAfter": nullable_time,
                "status": {"enum": sorted(set(gbif.STATUS.values()))},
                "downloadLink": {"type": ["string", "null"]},
                "size": count,
                "totalRecords": count,
                "numberDatasets": count,
                "error": {"type": "string"},
            },
        },
        "GbifDownloads": {
            "type": "object",
            "required": ["offset", "limit", "endOfRecords", "count", "results"],
            "properties": {
                "offset": count,
                "limit": count,
                "endOfRecords": {"type": "boolean"},
                "count": count,
                "results": {"type": "array", "items": _ref("GbifDownload")},
            },
        },
    }


_ERROR_ANSWERS = {
    "400": "The request is wrong; error says what and key names where.",
    "401": "A token (or GBIF Basic credentials) is needed.",
    "403": "The token (or user) may not do this.",
    "404": "No such job, recordset, version or file.",
    "405": "This resource does not take that method (Allow lists those it takes).",
    "409": "The job has already finished.",
    "410": "The archive expired and was deleted, or the version is gone.",
    "413": "The body, the query, the uuid selection or the number of records is over a "
    "limit (the error names the count and the limit).",
    "415": "The body is neither JSON nor a form.",
    "416": "The Range lies outside the file (Content-Range: bytes */size).",
}


def _components_responses() -> dict[str, Any]:
    responses: dict[str, Any] = {f"E{code}": _error(text) for code, text in _ERROR_ANSWERS.items()}
    responses["E429"] = _error(
        "A limit was met: new jobs per client per minute, jobs queued or running per "
        "requester, or emails per address per day (the error names it).",
        retry_after=True,
    )
    responses["Unavailable"] = _error(
        "The service is full (its queue is at max_queued_jobs) or cannot reach its data "
        "now; try again after Retry-After.",
        retry_after=True,
    )
    responses["URITooLong"] = _error("The URL is too long: send the query by POST.")
    responses["HeadersTooLarge"] = _error("The headers are too large: send the query by POST.")
    return responses


def _components() -> dict[str, Any]:
    return {
        "schemas": _schemas(),
        "responses": _components_responses(),
        "headers": {
            "RetryAfter": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A cancel or admin token.",
            },
            "adminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"},
            "tokenQuery": {
                "type": "apiKey",
                "in": "query",
                "name": "token",
                "description": "The same token in the query string (never logged).",
            },
            "gbifBasic": {
                "type": "http",
                "scheme": "basic",
                "description": "GBIF's user name (not checked against any account).",
            },
        },
    }


@functools.cache
def _document_text() -> str:
    return json.dumps(
        {
            "openapi": "3.1.0",
            "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
            "info": {
                "title": "Darwin Core Archive download service",
                "version": API_VERSION,
                "description": "iDigBio's download API (/v2/download, /v2/count), recordset "
                "exports, the jobs resource, GBIF's occurrence download API and the "
                "service's health. Every error is the one JSON shape of "
                "#/components/schemas/Error. Every resource also answers OPTIONS (CORS) and "
                "HEAD (GET without the body).",
            },
            "paths": _paths(),
            "components": _components(),
        },
        sort_keys=True,
    )


def document(*, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document; with ``server_url`` it names that server."""
    doc: dict[str, Any] = json.loads(_document_text())
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


class OpenAPIHandler(BaseHandler):
    """``GET /openapi.json``: this API's OpenAPI 3.1 document."""

    async def get(self) -> None:
        """The document, naming this request's base URL as its server."""
        self.set_header("Cache-Control", "max-age=300")
        self.write_json(document(server_url=self.base_url))
