from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from query.errors import QueryError
from query.request import DownloadRequest, parse_download_request


def h(params: dict[str, Any]) -> str:
    return parse_download_request(params).query_hash


def test_defaults_and_canonical_shape() -> None:
    req = parse_download_request({"rq": '{"genus": "Euphorbia"}'})
    assert req.canonical() == {
        "core_source": "indexterms",
        "core_type": "records",
        "form": "dwca-csv",
        "mediarecord_fields": None,
        "mq": None,
        "record_fields": None,
        "rq": {"genus": "euphorbia"},
    }
    dumped = json.dumps(req.canonical(), sort_keys=True, separators=(",", ":"))
    assert req.query_hash == hashlib.sha1(dumped.encode()).hexdigest()


@pytest.mark.parametrize(
    "other",
    [
        {"rq": '{"genus": "acer", "hasImage": true}'},
        {"rq": {"hasImage": True, "genus": "ACER "}},  # decoded object, reordered, other case
        {"query": '{"Genus": "Acer", "hasImage": "true"}'},  # old name of rq
        {
            "rq": '{"genus": ["acer"], "hasImage": true}',
            "email": "a@b.org",
            "source": "x",
            "force": "1",
        },
        {
            "rq": b'{"genus": "acer", "hasImage": true}',
            "core_type": "records",
            "form": '"dwca-csv"',
        },
    ],
)
def test_equivalent_requests_share_a_hash(other: dict[str, Any]) -> None:
    assert h(other) == h({"rq": {"genus": "acer", "hasImage": True}})


def test_reordered_lists_share_a_hash() -> None:
    assert h({"rq": {"family": ["b", "a"]}}) == h({"rq": {"family": ["a", "b", "a"]}})


@pytest.mark.parametrize(
    "other",
    [
        {"rq": {"genus": "quercus"}},
        {"rq": {"genus": "acer"}, "core_type": "mediarecords"},
        {"rq": {"genus": "acer"}, "core_source": "raw"},
        {"rq": {"genus": "acer"}, "form": "tsv"},
        {"rq": {"genus": "acer"}, "record_fields": '["uuid", "genus"]'},
        {"rq": {"genus": "acer"}, "record_fields": '["genus", "uuid"]'},  # column order matters
        {"rq": {"genus": "acer"}, "mediarecord_fields": ["uuid"]},
        {"rq": {"genus": "acer"}, "mq": {}},
        {"mq": {"format": "image/jpeg"}},
    ],
)
def test_different_requests_differ(other: dict[str, Any]) -> None:
    assert h(other) != h({"rq": {"genus": "acer"}})


def test_distinct_requests_all_have_distinct_hashes() -> None:
    hashes = {
        h({"rq": {"genus": "acer"}, "form": form, "core_type": core})
        for form in ("dwca-csv", "dwca-tsv", "csv", "tsv")
        for core in ("records", "mediarecords", "uniquelocality", "uniquenames")
    }
    assert len(hashes) == 16


def test_empty_rq_matches_everything() -> None:
    req = parse_download_request({"rq": "{}"})
    assert req.rq == {} and req.mq is None


def test_mq_alone_and_together() -> None:
    req = parse_download_request({"mq": '{"Format": "IMAGE/JPEG"}', "rq": '{"genus": "acer"}'})
    assert req.mq == {"format": "image/jpeg"} and req.rq == {"genus": "acer"}


def test_field_lists_are_checked_and_normalised() -> None:
    req = parse_download_request(
        {
            "rq": "{}",
            "record_fields": '["uuid", "scientificName", "data.dwc:locality", "uuid"]',
            "mediarecord_fields": ["accessuri", "data.http://rs.tdwg.org/ac/terms/accessURI"],
        }
    )
    assert req.record_fields == ("uuid", "scientificname", "data.dwc:locality")
    assert req.mediarecord_fields == ("accessuri", "data.ac:accessURI")
    assert req.canonical()["record_fields"] == ["uuid", "scientificname", "data.dwc:locality"]


@pytest.mark.parametrize(
    ("params", "key", "words"),
    [
        ({}, "rq", "Please supply at least one query parameter (rq, mq)"),
        ({"rq": None, "mq": "", "email": "a@b.org"}, "rq", "at least one query parameter"),
        ({"rq": "{genus: acer}"}, "rq", "not valid JSON"),
        ({"rq": '["genus"]'}, "rq", "JSON object"),
        ({"rq": '"acer"'}, "rq", "JSON object"),
        ({"mq": '{"genus": "acer"}'}, "mq", "Terms not found in index for type mediarecords"),
        (
            {"rq": "{}", "core_type": "occurrences"},
            "core_type",
            "records, mediarecords, uniquelocality, uniquenames",
        ),
        ({"rq": "{}", "core_source": "verbatim"}, "core_source", "indexterms, raw"),
        (
            {"rq": "{}", "form": "zip"},
            "form",
            "dwca-csv, dwca-tsv, dwca-gbif, parquet, csv, tsv, simple-",
        ),
        ({"rq": "{}", "form": 3}, "form", "not a valid form"),
        ({"rq": "{}", "record_fields": "uuid,genus"}, "record_fields", "not valid JSON"),
        ({"rq": "{}", "record_fields": '{"uuid": 1}'}, "record_fields", "JSON list of field names"),
        ({"rq": "{}", "record_fields": "[]"}, "record_fields", "empty"),
        ({"rq": "{}", "record_fields": '["uuid", "nope", "data"]'}, "record_fields", "nope, data"),
        ({"rq": "{}", "mediarecord_fields": '["genus"]'}, "mediarecord_fields", "genus"),
        ({"rq": "x" * 70000}, "rq", "longer than the limit"),
        ({"rq": b"\xff"}, "rq", "UTF-8"),
    ],
)
def test_bad_requests(params: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_download_request(params)
    assert info.value.key == key
    assert words in info.value.message


def test_unknown_record_fields_are_listed() -> None:
    with pytest.raises(QueryError) as info:
        parse_download_request({"rq": "{}", "record_fields": '["uuid", "nope", "nada"]'})
    assert info.value.name == "TermNotFoundError"
    assert info.value.extra["terms"] == ["nope", "nada"]


def test_query_size_limit_is_configurable() -> None:
    with pytest.raises(QueryError):
        parse_download_request({"rq": {"genus": "acer" * 10}}, max_query_bytes=20)


def test_requests_are_hashable_values() -> None:
    a = parse_download_request({"rq": {"genus": "Acer"}})
    b = parse_download_request({"rq": '{"genus": "acer"}'})
    assert a == b and hash(a) == hash(b)
    assert DownloadRequest(rq={}).core_type == "records"
