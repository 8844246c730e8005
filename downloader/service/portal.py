"""What the web page (``/portal/``) asks of the service beyond the download API: the field
catalogue with its groups and query types, the measured rates behind its size and time
estimates, the recordsets a store holds, and the page's own settings."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from downloader.backends import Context
from downloader.models import Job, utc_iso
from query.fields import Field, RecordType, fields

#: The groups of the field picker, the way iDigBio's portal groups its search fields.
_GROUPS: dict[str, tuple[str, ...]] = {
    "Taxonomy": (
        "scientificname", "canonicalname", "kingdom", "phylum", "class", "order", "family",
        "genus", "specificepithet", "infraspecificepithet", "highertaxon", "taxonrank",
        "commonname", "commonnames", "taxonid", "taxonomicstatus",
    ),
    "Specimen": (
        "basisofrecord", "catalognumber", "occurrenceid", "barcodevalue", "typestatus",
        "recordnumber", "fieldnumber", "individualcount", "associatedsequences",
    ),
    "Collection event": (
        "datecollected", "eventdate", "verbatimeventdate", "startdayofyear", "collector",
    ),
    "Locality": (
        "geopoint", "continent", "country", "countrycode", "stateprovince", "county",
        "municipality", "waterbody", "locality", "verbatimlocality", "coordinateuncertainty",
        "minelevation", "maxelevation", "mindepth", "maxdepth",
    ),
    "Collection": (
        "institutioncode", "institutionname", "institutionid", "collectioncode",
        "collectionname", "collectionid", "recordset", "datasetid",
    ),
    "Media": ("hasImage", "hasMedia", "mediarecords"),
}  # fmt: skip
_GROUP_OF = {name: group for group, names in _GROUPS.items() for name in names}
_PALEO_WORDS = ("earliest", "latest", "lowest", "highest", "litho", "bed", "formation")

#: The query types each kind of field accepts (query/validate.py), in the picker's order.
QUERY_TYPES: dict[str, tuple[str, ...]] = {
    "text": ("value", "list", "prefix", "exists", "missing"),
    "longtext": ("value", "list", "prefix", "exists", "missing"),
    "list": ("value", "list", "exists", "missing"),
    "integer": ("value", "list", "range", "exists", "missing"),
    "float": ("value", "list", "range", "exists", "missing"),
    "date": ("value", "range", "exists", "missing"),
    "boolean": ("value", "exists", "missing"),
    "point": ("geo_bounding_box", "geo_distance", "geo_polygon", "exists", "missing"),
}


def _group(f: Field) -> str:
    if f.name in _GROUP_OF:
        return _GROUP_OF[f.name]
    if f.name in ("group", "member") or f.name.startswith(_PALEO_WORDS):
        return "Paleo context"
    if f.type == "mediarecords":
        return "Media record"
    return "Record"


def fields_document() -> dict[str, Any]:
    """``GET /v2/fields``: every queryable field of both record types, with its kind,
    group, the query types it takes, its column header and term URI."""

    def listing(rtype: RecordType) -> list[dict[str, Any]]:
        return [
            {
                "name": f.name,
                "kind": f.kind,
                "group": _group(f),
                "types": list(QUERY_TYPES.get(f.kind, ("value", "exists", "missing"))),
                "header": f.csv_header,
                "term": f.term_uri,
            }
            for f in fields(rtype)
        ]

    def terms(rtype: RecordType) -> list[str]:
        return sorted({f.source_term for f in fields(rtype) if f.source_term})

    return {
        "records": listing("records"),
        "mediarecords": listing("mediarecords"),
        # Verbatim terms the page offers as data.<term> (any published term works).
        "verbatim_terms": {"records": terms("records"), "mediarecords": terms("mediarecords")},
        "data": {
            "fulltext": "data: {type: fulltext, value: words} searches every verbatim value",
            "term": "data.<term> (such as data.dwc:locality) matches one verbatim term",
        },
        "groups": [*_GROUPS, "Paleo context", "Record"],
    }


# --- the measured rates behind the page's estimates -------------------------------------------

#: Until this service has finished a download, the page's estimates use these figures from
#: ``make bench`` on two cores (a 1M-record full download, bench/results).
DEFAULT_RECORDS_PER_SECOND = 120_000.0
DEFAULT_BYTES_PER_RECORD = 300.0
DEFAULT_START_SECONDS = 1.0


@dataclass(frozen=True)
class _Sample:
    records: int
    size: int
    seconds: float


class Measurements:
    """The last finished downloads this process has seen (records, bytes, build seconds)."""

    def __init__(self, keep: int = 50) -> None:
        self._samples: deque[_Sample] = deque(maxlen=keep)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, job: Job) -> None:
        """Note a finished download's figures (once per job)."""
        if (
            job.state != "SUCCESS"
            or job.kind != "download"
            or not job.size
            or not job.total_records
            or job.started is None
            or job.completed is None
        ):
            return
        seconds = (job.completed - job.started).total_seconds()
        if seconds <= 0:
            return
        with self._lock:
            if job.id in self._seen:
                return
            self._seen.add(job.id)
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._samples.append(_Sample(job.total_records, job.size, seconds))

    def document(self) -> dict[str, Any]:
        """``GET /v2/estimates``: records/s and bytes/record, measured or the defaults."""
        with self._lock:
            samples = list(self._samples)
        big = [s for s in samples if s.records >= 1000]
        if big:
            records = sum(s.records for s in big)
            return {
                "source": "measured",
                "samples": len(big),
                "records_per_second": records / sum(s.seconds for s in big),
                "bytes_per_record": sum(s.size for s in big) / records,
                "start_seconds": DEFAULT_START_SECONDS,
            }
        return {
            "source": "default",
            "samples": 0,
            "records_per_second": DEFAULT_RECORDS_PER_SECOND,
            "bytes_per_record": DEFAULT_BYTES_PER_RECORD,
            "start_seconds": DEFAULT_START_SECONDS,
        }


#: The measurements of this process (fed by the status documents it renders).
MEASURED = Measurements()


# --- recordsets and the page's settings --------------------------------------------------------


def recordsets_document(ctx: Context, *, base_url: str) -> dict[str, Any]:
    """``GET /recordsets/``: every recordset the store holds, with its current version,
    counts and the URLs of its versions listing and cached export."""
    listing = getattr(ctx.source(), "recordsets", None)
    if not callable(listing):
        return {"recordsets": [], "note": "this record source does not list its recordsets"}
    out = []
    for info in listing():
        rs = quote(info.recordset, safe="")
        out.append(
            {
                "recordset": info.recordset,
                "name": info.name,
                "version": info.version,
                "records": info.record_count,
                "mediarecords": info.media_count,
                "ingested_at": utc_iso(info.ingested_at),
                "versions_url": f"{base_url}/recordsets/{rs}/versions/",
                "export_url": f"{base_url}/recordsets/{rs}/{info.version}/export/",
            }
        )
    return {"recordsets": out}


def page_config(ctx: Context) -> dict[str, Any]:
    """What the page needs to know of the operator's settings (nothing secret)."""
    settings = ctx.settings
    return {
        "map_tile_url": settings.map_tile_url,
        "map_tile_attribution": settings.map_tile_attribution,
        "publisher_name": settings.publisher_name,
        "retention_days": settings.retention_days,
        "max_download_records": settings.max_download_records,
    }
