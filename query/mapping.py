"""Elasticsearch / OpenSearch index definitions and documents for the record types.

:func:`es_mapping` gives the whole create-index body (settings and mappings) for a record
type, derived from the field catalogue; :func:`to_es_document` turns a row shaped like the
DuckDB store's into a document for that index. Used together, the index answers
:mod:`query.dsl` queries exactly as the store answers :mod:`query.sql` queries:

- text, longtext and list fields are ``keyword`` (values are already lower-cased at ingest,
  and a plain value matches the whole value, as in SQL);
- verbatim terms under ``data`` are mapped by a dynamic template to ``keyword`` with a
  lower-casing normalizer, so ``data.<term>`` matching is case-insensitive like SQL's
  ``lower(...)``;
- ``fulltext`` is a ``keyword`` array of the tokens made by :func:`query.text.tokens`;
- empty strings and empty lists are left out of documents, because SQL treats them as
  missing and Elasticsearch's ``exists`` would not.

Keyword values longer than :data:`IGNORE_ABOVE` characters are not indexed (Lucene refuses
terms over 32766 bytes); such values can only be matched in the DuckDB store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from query.dates import format_instant
from query.fields import RecordType, fields

#: Name of the lower-casing normalizer declared in the index settings.
NORMALIZER = "lowercase_keyword"
#: 8191 characters of at most 4 UTF-8 bytes each stay under Lucene's 32766-byte term limit.
IGNORE_ABOVE = 8191

_KEYWORD: dict[str, Any] = {"type": "keyword", "ignore_above": IGNORE_ABOVE}
_TYPES: dict[str, dict[str, Any]] = {
    "text": _KEYWORD,
    "longtext": _KEYWORD,
    "list": _KEYWORD,
    "integer": {"type": "long"},
    "float": {"type": "double"},
    "boolean": {"type": "boolean"},
    "date": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
    "point": {"type": "geo_point"},
}


def es_mapping(rtype: RecordType) -> dict[str, Any]:
    """The create-index body (``settings`` and ``mappings``) for ``rtype``."""
    properties: dict[str, Any] = {f.name: dict(_TYPES[f.kind]) for f in fields(rtype)}
    properties["fulltext"] = dict(_KEYWORD)
    properties["data"] = {"type": "object", "dynamic": True}
    if rtype == "mediarecords":
        properties["coreid"] = dict(_KEYWORD)
    return {
        "settings": {
            "analysis": {"normalizer": {NORMALIZER: {"type": "custom", "filter": ["lowercase"]}}}
        },
        "mappings": {
            # Only the catalogue's fields at the top level; verbatim terms go under data.
            "dynamic": "strict",
            "date_detection": False,
            "numeric_detection": False,
            "dynamic_templates": [
                {
                    "verbatim_terms": {
                        "path_match": "data.*",
                        "match_mapping_type": "string",
                        "mapping": {**_KEYWORD, "normalizer": NORMALIZER},
                    }
                }
            ],
            "properties": properties,
        },
    }


def _present(value: Any) -> bool:
    return value is not None and value not in ("", [])


def to_es_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """A document for the index of :func:`es_mapping` from a store-shaped row.

    Dates become ISO 8601 text (UTC), ``geopoint`` stays ``{"lat", "lon"}`` when both are
    set, ``data`` (a JSON text or a mapping) becomes an object of strings, and empty values
    are left out.
    """
    doc: dict[str, Any] = {}
    for key, value in row.items():
        if key == "data":
            terms = json.loads(value) if isinstance(value, str | bytes) else (value or {})
            kept = {
                term: v if isinstance(v, str) else json.dumps(v)
                for term, v in terms.items()
                if _present(v) and not isinstance(v, dict | list)
            }
            if kept:
                doc["data"] = kept
        elif isinstance(value, datetime):
            doc[key] = format_instant(value)
        elif isinstance(value, date):
            doc[key] = value.isoformat()
        elif isinstance(value, Mapping):
            lat, lon = value.get("lat"), value.get("lon")
            if lat is not None and lon is not None:
                doc[key] = {"lat": float(lat), "lon": float(lon)}
        elif isinstance(value, list | tuple):
            if value:
                doc[key] = list(value)
        elif _present(value):
            doc[key] = value
    return doc
