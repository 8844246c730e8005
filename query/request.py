"""Download requests: parsing the HTTP parameters, normalising them, and their hash.

A :class:`DownloadRequest` is the validated, normalised form of what a client asked for. Its
:meth:`~DownloadRequest.canonical` form has exactly the keys of iDigBio's ``query`` object, and
:attr:`~DownloadRequest.query_hash` is a sha1 over that canonical form, so equivalent requests
(``"Acer"`` and ``"acer"``, reordered keys or lists) share a hash. Unlike iDigBio's
``objectHasher`` the hash is taken *after* normalisation (iDigBio hashed the raw parameters,
so case variants never shared a job); hashes are therefore not comparable with iDigBio's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from query.errors import QueryError
from query.fields import RecordType
from query.validate import DEFAULT_MAX_QUERY_BYTES, resolve_key, validate_query

CoreType = Literal["records", "mediarecords", "uniquelocality", "uniquenames"]
CoreSource = Literal["indexterms", "raw"]
Form = Literal[
    "dwca-csv", "dwca-tsv", "dwca-gbif", "parquet", "csv", "tsv", "simple-csv", "simple-parquet"
]

CORE_TYPES: tuple[CoreType, ...] = ("records", "mediarecords", "uniquelocality", "uniquenames")
CORE_SOURCES: tuple[CoreSource, ...] = ("indexterms", "raw")
FORMS: tuple[Form, ...] = (
    "dwca-csv",
    "dwca-tsv",
    "dwca-gbif",
    "parquet",
    "csv",
    "tsv",
    "simple-csv",
    "simple-parquet",
)

#: Parameters that are accepted but are not part of the request's identity (its hash).
IGNORED_PARAMS = ("email", "source", "force")


@dataclass(frozen=True)
class DownloadRequest:
    """A validated download request; ``rq`` and ``mq`` are normalised queries (or None)."""

    rq: dict[str, Any] | None = None
    mq: dict[str, Any] | None = None
    core_type: CoreType = "records"
    core_source: CoreSource = "indexterms"
    form: Form = "dwca-csv"
    record_fields: tuple[str, ...] | None = None
    mediarecord_fields: tuple[str, ...] | None = None
    #: Whether a records archive carries the verbatim extensions (Identification,
    #: MeasurementOrFact, ...) the matching records' recordsets were published with.
    extensions: bool = True

    def canonical(self) -> dict[str, Any]:
        """The request as iDigBio's ``query`` object, with normalised values (``extensions``
        only when it is turned off, so the hash of every iDigBio request stays as it was)."""
        extra: dict[str, Any] = {} if self.extensions else {"extensions": False}
        return {
            **extra,
            "core_source": self.core_source,
            "core_type": self.core_type,
            "form": self.form,
            "mediarecord_fields": _list_or_none(self.mediarecord_fields),
            "mq": self.mq,
            "record_fields": _list_or_none(self.record_fields),
            "rq": self.rq,
        }

    @property
    def query_hash(self) -> str:
        """sha1 hex digest of the canonical form dumped as compact JSON with sorted keys."""
        text = json.dumps(
            self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def __hash__(self) -> int:
        # The generated hash would fail on the dict fields; equal requests share query_hash.
        return hash(self.query_hash)


def _list_or_none(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _decode(name: str, raw: Any, *, max_bytes: int | None = None) -> Any:
    """A parameter value as JSON: strings are decoded, other values are taken as they are.

    An absent, null or blank value is None. ``max_bytes`` refuses long strings before they
    are parsed at all.
    """
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise QueryError(name, "the value is not valid UTF-8 text") from None
    if raw is None:
        return None
    if not isinstance(raw, str):
        return raw
    if not raw.strip():
        return None
    if max_bytes is not None and len(raw.encode("utf-8")) > max_bytes:
        raise QueryError(name, f"the value is longer than the limit of {max_bytes} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise QueryError(name, f"the value is not valid JSON ({exc})") from None


def _choice(params: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = params.get(name)
    if isinstance(raw, bytes | bytearray):
        raw = _decode(name, raw)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    if isinstance(raw, str) and raw.strip().startswith('"'):
        # iDigBio JSON-decodes every parameter, so clients may send core_type="records".
        raw = _decode(name, raw)
    if isinstance(raw, str) and raw.strip().lower() in allowed:
        return raw.strip().lower()
    raise QueryError(
        name,
        f"{raw!r} is not a valid {name}; use one of: " + ", ".join(allowed),
        allowed=list(allowed),
    )


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _flag(params: Mapping[str, Any], name: str, default: bool) -> bool:
    raw = params.get(name)
    if isinstance(raw, bytes | bytearray):
        raw = bytes(raw).decode("utf-8", "replace")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().strip('"').lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise QueryError(name, f"{raw!r} is not a valid {name}; use true or false")


def _field_list(params: Mapping[str, Any], name: str, rtype: RecordType) -> tuple[str, ...] | None:
    raw = _decode(name, params.get(name))
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise QueryError(
            name,
            'must be a JSON list of field names, such as ["uuid", "scientificname", '
            '"data.dwc:locality"]',
        )
    if not raw:
        raise QueryError(name, "the list is empty; leave it out to get the default columns")
    names: dict[str, None] = {}
    unknown: list[str] = []
    for item in raw:
        target = resolve_key(rtype, item.strip(), where=name)
        if target is None or target.kind == "fulltext":
            unknown.append(item)
        else:
            names.setdefault(target.key, None)
    if unknown:
        raise QueryError(
            name,
            f"Terms not found in index for type {rtype}: " + ", ".join(unknown),
            name="TermNotFoundError",
            terms=unknown,
        )
    # Column order is kept: it is the order of the columns in the archive.
    return tuple(names)


def parse_download_request(
    params: Mapping[str, Any], *, max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES
) -> DownloadRequest:
    """Validate raw request parameters (as they come from HTTP) into a :class:`DownloadRequest`.

    Values may be JSON text, already-decoded values, bytes or None. ``query`` is accepted as
    the old name of ``rq``. At least one of ``rq`` and ``mq`` is required (``{}`` matches
    everything). ``email``, ``source`` and ``force`` are ignored here: they are not part of
    what is built. Raises :class:`QueryError` naming the offending parameter.
    """
    raw_rq = params.get("rq")
    if raw_rq is None or (isinstance(raw_rq, str | bytes) and not raw_rq.strip()):
        raw_rq = params.get("query")
    rq_value = _decode("rq", raw_rq, max_bytes=max_query_bytes)
    mq_value = _decode("mq", params.get("mq"), max_bytes=max_query_bytes)
    if rq_value is None and mq_value is None:
        raise QueryError("rq", "Please supply at least one query parameter (rq, mq)")
    rq = (
        None
        if rq_value is None
        else validate_query(rq_value, "records", param="rq", max_query_bytes=max_query_bytes)
    )
    mq = (
        None
        if mq_value is None
        else validate_query(mq_value, "mediarecords", param="mq", max_query_bytes=max_query_bytes)
    )
    return DownloadRequest(
        rq=rq,
        mq=mq,
        core_type=cast(CoreType, _choice(params, "core_type", CORE_TYPES, "records")),
        core_source=cast(CoreSource, _choice(params, "core_source", CORE_SOURCES, "indexterms")),
        form=cast(Form, _choice(params, "form", FORMS, "dwca-csv")),
        record_fields=_field_list(params, "record_fields", "records"),
        mediarecord_fields=_field_list(params, "mediarecord_fields", "mediarecords"),
        extensions=_flag(params, "extensions", True),
    )
