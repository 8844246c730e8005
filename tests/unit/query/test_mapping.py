from __future__ import annotations

import json
from datetime import datetime

from query.fields import field_names
from query.mapping import NORMALIZER, es_mapping, to_es_document


def test_mapping_covers_the_catalogue() -> None:
    body = es_mapping("records")
    props = body["mappings"]["properties"]
    assert set(field_names("records")) <= set(props)
    assert props["genus"]["type"] == "keyword"
    assert props["locality"]["type"] == "keyword"  # longtext matches whole values, as in SQL
    assert props["flags"]["type"] == "keyword"
    assert props["version"]["type"] == "long"
    assert props["dqs"]["type"] == "double"
    assert props["hasImage"]["type"] == "boolean"
    assert props["datecollected"]["type"] == "date"
    assert props["geopoint"]["type"] == "geo_point"
    assert props["fulltext"]["type"] == "keyword"
    assert "coreid" not in props
    template = body["mappings"]["dynamic_templates"][0]["verbatim_terms"]
    assert template["mapping"]["normalizer"] == NORMALIZER
    assert NORMALIZER in body["settings"]["analysis"]["normalizer"]


def test_media_mapping_has_coreid() -> None:
    assert es_mapping("mediarecords")["mappings"]["properties"]["coreid"]["type"] == "keyword"


def test_document_from_a_store_row() -> None:
    row = {
        "uuid": "r1",
        "genus": "",
        "family": "fagaceae",
        "flags": [],
        "recordids": ["a"],
        "datecollected": datetime(1900, 5, 1, 10, 0, 0, 250000),
        "geopoint": {"lat": 1, "lon": None},
        "hasImage": False,
        "version": 0,
        "data": json.dumps({"dwc:genus": "Quercus", "dwc:habitat": "", "dwc:x": None}),
        "fulltext": ["quercus"],
        "minelevation": None,
    }
    assert to_es_document(row) == {
        "uuid": "r1",
        "family": "fagaceae",
        "recordids": ["a"],
        "datecollected": "1900-05-01T10:00:00.250000",
        "hasImage": False,
        "version": 0,
        "data": {"dwc:genus": "Quercus"},
        "fulltext": ["quercus"],
    }
    assert to_es_document({"geopoint": {"lat": 1, "lon": 2}}) == {
        "geopoint": {"lat": 1.0, "lon": 2.0}
    }
