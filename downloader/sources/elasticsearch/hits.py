"""Search hits as Arrow record batches, in the contract of ``docs/architecture.md``:
``coreid``, then the index fields typed by their catalogue kind, then the verbatim terms as
strings.

A page is decoded by Arrow's JSON reader straight into the columns the reads need
(:func:`arrow_sources`, :func:`_arrow_batch`): in C++, without the GIL, and faster than
``json`` alone. The client hands the answer's bytes back undecoded for this (see
:data:`~downloader.sources.elasticsearch.client.JSON_BYTES`). Arrow is strict about JSON
types, so a page holding a value of an unusual shape is decoded by ``json`` and converted by
:func:`hits_to_batch` (one Arrow conversion of the whole page plus one per list or point
column, value by value only for an odd column); both give the same batches (:class:`Page`
picks between them)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json

from downloader.errors import BuildFailed
from query.fields import Field, RecordType, get_field

#: The Arrow type of each catalogue kind in a batch.
ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "longtext": pa.string(),
    "list": pa.list_(pa.string()),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.timestamp("us"),
    "point": pa.struct([("lat", pa.float64()), ("lon", pa.float64())]),
}


def parse_date(value: Any) -> datetime | None:
    """A ``date`` value as the cluster hands it back (ISO text or epoch milliseconds) as
    naive UTC; None for no value."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):  # epoch milliseconds, as ES may hand back
        return datetime.fromtimestamp(value / 1000, UTC).replace(tzinfo=None)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _parse_point(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return {"lat": float(value["lat"]), "lon": float(value["lon"])}
    if isinstance(value, str):
        lat, lon = value.split(",")
        return {"lat": float(lat), "lon": float(lon)}
    lon, lat = value  # GeoJSON order
    return {"lat": float(lat), "lon": float(lon)}


def cell(f: Field, value: Any) -> Any:  # noqa: PLR0911  # one return per kind reads as a table
    """One _source value as the Arrow type of its catalogue kind."""
    if value is None:
        return None
    kind = f.kind
    if kind == "list":
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if isinstance(value, list) and kind != "point":
        value = value[0] if value else None
        if value is None:
            return None
    if kind in ("text", "longtext"):
        return str(value)
    if kind == "integer":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "date":
        return parse_date(value)
    if kind == "point":
        return _parse_point(value)
    return value


def _raw_value(data: dict[str, Any], term: str) -> str | None:
    value = data.get(term)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _all_of(values: list[Any], kind: type) -> bool:
    """Whether every value is ``None`` or exactly of type ``kind``."""
    return all(v is None or type(v) is kind for v in values)


def _is_point_dict(v: Any) -> bool:
    return type(v) is dict and "lat" in v and "lon" in v


def _column(f: Field, values: list[Any]) -> pa.Array:
    """The Arrow array of one field's ``_source`` values.

    The common shapes (what ``ingest --target elasticsearch`` writes: strings, numbers,
    lists of strings, ``{"lat", "lon"}`` objects, ISO date text) are converted by Arrow in
    one call with the declared type; a column holding anything else goes value by value
    through :func:`cell`, so both paths give the same values.
    """
    typ = ARROW_TYPES[f.kind]
    kind = f.kind
    try:
        if kind in ("text", "longtext"):
            return pa.array(values, typ)  # non-strings (numbers, lists) raise
        if kind == "integer" and _all_of(values, int):
            return pa.array(values, typ)
        if kind == "float" and all(v is None or type(v) in (float, int) for v in values):
            return pa.array(values, typ)
        if kind == "boolean":
            return pa.array(values, typ)  # only True/False/None convert
        if kind == "list" and _all_of(values, list):
            arr = pa.array(values, typ)  # non-string items raise
            if arr.flatten().null_count == 0:  # cell writes a null item as "None"
                return arr
        if kind == "point" and all(v is None or _is_point_dict(v) for v in values):
            return pa.array(values, typ)  # numbers only; "1.5" raises
        if kind == "date":
            # Naive ISO text (format_instant) casts directly; zones, epoch numbers and
            # empty text raise and take the value-by-value path.
            return pa.array(values, pa.string()).cast(typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    return pa.array([cell(f, v) for v in values], typ)


def _raw_columns(sources: Sequence[dict[str, Any]], raw_terms: Sequence[str]) -> list[pa.Array]:
    """The verbatim terms (``data``) as string arrays, each converted by Arrow in one call;
    a term holding anything but strings is redone value by value with :func:`_raw_value`."""
    empty: dict[str, Any] = {}
    datas = [s.get("data") or empty for s in sources]
    columns: list[pa.Array] = []
    for term in raw_terms:
        try:
            columns.append(pa.array([d.get(term) for d in datas], pa.string()))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns.append(pa.array([_raw_value(d, term) for d in datas], pa.string()))
    return columns


#: Kinds whose Python values Arrow converts exactly as :func:`cell` does when the value has
#: the usual shape, and rejects otherwise (a list for a scalar, text for a number, a number
#: for a boolean). Lists are not among them (Arrow reads a string as a list of characters),
#: nor points (Arrow reads a tuple as a struct); dates are read as text and cast.
_STRICT_KINDS = frozenset({"text", "longtext", "integer", "float", "boolean", "date"})


def _read_type(f: Field) -> pa.DataType:
    return pa.string() if f.kind == "date" else ARROW_TYPES[f.kind]


def _whole_sources(
    sources: Sequence[dict[str, Any]],
    link: str,
    strict: Sequence[Field],
    raw_terms: Sequence[str],
) -> dict[str, pa.Array] | None:
    """The link, the strictly convertible fields and the verbatim terms of every document,
    read by one Arrow conversion of the ``_source`` objects as a struct (the keys are looked
    up in C++, not by a Python loop per field). None when any value has an unusual shape:
    the caller then converts column by column."""
    if "data" in (link, *(f.name for f in strict)) or len(set(raw_terms)) != len(raw_terms):
        return None
    members = [pa.field(link, pa.string())]
    members += [pa.field(f.name, _read_type(f)) for f in strict if f.name != link]
    if raw_terms:
        members.append(pa.field("data", pa.struct([(t, pa.string()) for t in raw_terms])))
    try:
        whole = pa.array(sources, pa.struct(members))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return None
    columns = dict(zip([m.name for m in members], whole.flatten(), strict=True))
    if raw_terms:
        data = columns.pop("data")
        columns.update((f"data.{t}", c) for t, c in zip(raw_terms, data.flatten(), strict=True))
    return columns


def _link(rtype: RecordType) -> str:
    """The ``_source`` key of column 0 (``coreid``)."""
    return "coreid" if rtype == "mediarecords" else "uuid"


def _chosen(rtype: RecordType, field_names: Sequence[str]) -> list[Field]:
    chosen: list[Field] = []
    for name in field_names:
        f = get_field(rtype, name)
        if f is None:
            raise BuildFailed(f"{name} is not a {rtype} field")
        chosen.append(f)
    return chosen


def hits_to_batch(
    rtype: RecordType,
    sources: Sequence[dict[str, Any]],
    field_names: Sequence[str],
    raw_terms: Sequence[str],
) -> pa.RecordBatch:
    """Documents' ``_source`` as an Arrow batch in the contract of ``docs/architecture.md``:
    ``coreid``, then the index fields typed by kind, then the verbatim terms as strings.

    No value is converted one by one in Python on the usual shapes: text, numbers, booleans,
    dates and the verbatim terms come from one Arrow conversion of the whole page
    (:func:`_whole_sources`), lists and points from one per column (:func:`_column`); only
    a column holding an unusual value goes through :func:`cell` / :func:`_raw_value`."""
    link = _link(rtype)
    chosen = _chosen(rtype, field_names)
    strict = list({f.name: f for f in chosen if f.kind in _STRICT_KINDS}.values())
    whole = _whole_sources(sources, link, strict, raw_terms)
    if whole is None:
        arrays: list[pa.Array] = [pa.array([s.get(link) for s in sources], pa.string())]
    else:
        arrays = [whole[link]]
    names = ["coreid"]
    for f in chosen:
        column: pa.Array | None = None
        if (
            whole is not None
            and f.name in whole
            and (f.name != link or f.kind in ("text", "longtext"))
        ):
            column = whole[f.name]
            if f.kind == "date":
                try:
                    column = column.cast(ARROW_TYPES["date"])
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    column = None
        if column is None:
            column = _column(f, [s.get(f.name) for s in sources])
        arrays.append(column)
        names.append(f.name)
    if raw_terms:
        if whole is None:
            arrays.extend(_raw_columns(sources, raw_terms))
        else:
            arrays.extend(whole[f"data.{t}"] for t in raw_terms)
        names.extend(raw_terms)
    return pa.RecordBatch.from_arrays(arrays, names=names)


# --- a page decoded by Arrow -----------------------------------------------------------------


def arrow_members(
    rtype: RecordType, reads: Sequence[tuple[Sequence[str], Sequence[str]]]
) -> list[pa.Field] | None:
    """The ``_source`` members Arrow reads for ``reads``: the link, every field as it is
    held (dates as text, cast afterwards as :func:`hits_to_batch` casts them) and
    ``data`` with every verbatim term as text. Unknown field names are left out (the
    conversion then raises as :func:`hits_to_batch` does). None for a field named ``data``:
    such reads are left to :func:`hits_to_batch`."""
    link = _link(rtype)
    members: dict[str, pa.DataType] = {link: pa.string()}
    terms: dict[str, None] = {}
    for field_names, raw_terms in reads:
        for name in field_names:
            f = get_field(rtype, name)
            if f is not None and f.name not in members:
                members[f.name] = _read_type(f)
        terms.update(dict.fromkeys(raw_terms))
    if "data" in members:
        return None
    out = [pa.field(name, typ) for name, typ in members.items()]
    if terms:
        out.append(pa.field("data", pa.struct([(t, pa.string()) for t in terms])))
    return out


def arrow_sources(raw: bytes, members: list[pa.Field]) -> tuple[str | None, pa.StructArray] | None:
    """A search or scroll answer (JSON text) decoded by Arrow: the scroll id and the
    ``_source`` of every hit as a struct of ``members``. Arrow decodes in C++ without the
    GIL, and it is strict: a value of another JSON type than its member's (a number for
    text, a list for a number, text for a point, a duplicate key) fails the page, which
    is then decoded by ``json`` and converted by :func:`hits_to_batch`. None then."""
    if len(raw) >= 2**31 - 1:  # Arrow's block size is an int32
        return None
    hit = pa.struct([pa.field("_source", pa.struct(members))])
    schema = pa.schema(
        [
            pa.field("_scroll_id", pa.string()),
            pa.field("hits", pa.struct([pa.field("hits", pa.list_(hit))])),
        ]
    )
    try:
        table = pa_json.read_json(
            pa.BufferReader(raw),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(raw) + 1),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != 1:
        return None
    scroll_id = table.column("_scroll_id")[0].as_py()
    (hits,) = table.column("hits").combine_chunks().flatten()
    if hits.null_count:
        return None
    (sources,) = hits.flatten().flatten()
    if sources.null_count:  # a hit without _source
        return None
    return scroll_id, sources


def _arrow_batch(
    rtype: RecordType,
    sources: pa.StructArray,
    field_names: Sequence[str],
    raw_terms: Sequence[str],
) -> pa.RecordBatch | None:
    """What :func:`hits_to_batch` makes of the same documents, from their Arrow-decoded
    ``_source``; None when a column holds what :func:`hits_to_batch` converts value by value
    (a null list item, a point without lat or lon, a date Arrow cannot cast), so the
    caller converts the decoded JSON instead."""
    link = _link(rtype)
    chosen = _chosen(rtype, field_names)
    columns = dict(zip([m.name for m in sources.type], sources.flatten(), strict=True))
    arrays: list[pa.Array] = [columns[link]]
    for f in chosen:
        column = columns[f.name]
        if f.name == link and f.kind not in ("text", "longtext"):
            return None
        if f.kind == "date":
            try:
                column = column.cast(ARROW_TYPES["date"])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
        elif f.kind == "list":
            if column.flatten().null_count:
                return None
        elif f.kind == "point":
            lat, lon = column.flatten()
            if lat.null_count != column.null_count or lon.null_count != column.null_count:
                return None
        arrays.append(column)
    names = ["coreid", *(f.name for f in chosen)]
    if raw_terms:
        data = columns["data"]
        by_term = dict(zip([m.name for m in data.type], data.flatten(), strict=True))
        arrays.extend(by_term[t] for t in raw_terms)
        names.extend(raw_terms)
    return pa.RecordBatch.from_arrays(arrays, names=names)


_SCROLL_ID = re.compile(rb'"_scroll_id"\s*:\s*"([^"\\]+)"')
_SOURCE_KEY = re.compile(rb'"_source"\s*:')


def peek(answer: Any) -> tuple[str | None, bool]:
    """The scroll id of a search or scroll answer and whether it holds a hit, read without
    decoding the answer: the id when ``"_scroll_id"`` comes before ``"hits"`` (where no
    document can be), a hit when any ``"_source"`` key is present (each hit has one; the
    answer itself has none). (None, False) when the bytes do not show it plainly; the
    caller then waits for the decoded answer."""
    if not isinstance(answer, bytes):
        return answer.get("_scroll_id"), bool(answer["hits"]["hits"])
    hits_at = answer.find(b'"hits"')
    found = _SCROLL_ID.search(answer, 0, hits_at if hits_at >= 0 else 0)
    if found is None:
        return None, False
    return found.group(1).decode("ascii", "replace"), _SOURCE_KEY.search(answer) is not None


class Page:
    """One page of hits, converted per read (``batch``): from Arrow's decoding of the answer
    when it had one, else (or when a read's values have unusual shapes) from the answer
    decoded by ``json``, through :func:`hits_to_batch`. Both give the same batches."""

    def __init__(
        self,
        rtype: RecordType,
        *,
        arrow: pa.StructArray | None = None,
        raw: bytes | None = None,
        sources: list[dict[str, Any]] | None = None,
    ) -> None:
        self.rtype, self.arrow, self.raw, self.sources = rtype, arrow, raw, sources

    def batch(self, field_names: Sequence[str], raw_terms: Sequence[str]) -> pa.RecordBatch:
        """The page as the batch :func:`hits_to_batch` gives for these fields and terms."""
        if self.arrow is not None:
            converted = _arrow_batch(self.rtype, self.arrow, field_names, raw_terms)
            if converted is not None:
                return converted
        if self.sources is None:
            hits = json.loads(self.raw or b"{}")["hits"]["hits"]
            self.sources = [h["_source"] for h in hits]
        return hits_to_batch(self.rtype, self.sources, field_names, raw_terms)
