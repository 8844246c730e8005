"""The at-scale record source: an Elasticsearch or OpenSearch cluster, through the official
``elasticsearch`` client. Also the writer that fills the indices (``downloader ingest
--target elasticsearch``).

This is the only module that imports ``elasticsearch``. Vendor errors are translated here:
timeouts, refused connections, 429 and 5xx answers become
:class:`~downloader.errors.SourceUnavailable` (transient; the Celery task retries), a missing
index or a rejected query becomes :class:`~downloader.errors.BuildFailed` with a message a
researcher or an operator can act on.

Indices (``<p>`` is ``elasticsearch_index_prefix``):

- ``<p>records``, ``<p>mediarecords``: one document per record / media record, ``_id`` the
  uuid, fields as the DuckDB store holds them (mapping from :func:`query.mapping.es_mapping`),
  ``data`` the verbatim terms, ``fulltext`` the tokens; media carry ``coreid`` (parent uuid).
- ``<p>recordsets``: one document per recordset (name, version, EML, the verbatim terms its
  records and media use: the source of :meth:`ElasticsearchSource.raw_terms`).
- ``<p>meta``: document ``store`` with ``data_version``, changed by every ingest.
- ``<p>deleted``: the deletion log (:class:`~downloader.interfaces.DeletionLog`): one
  document per record or media record that a push of its recordset removed (``uuid``,
  ``rtype``, ``recordset``, ``deleted``), so incremental-sync downloads get ``deleted.csv``.

Paging: a scroll sorted on ``uuid`` (unique, so no further tiebreak is needed; the order is
the same for the same data, whichever copy of a shard answers). The scroll's search context
keeps the snapshot and its place in the sorted hits, so each page continues where the last
one stopped; ``search_after`` inside a point in time, used before, searches and sorts again
for every page, which on osmem-server is a pass over the whole index per page (a read grew
with the square of its size: at 200,000 records 3.6 times a scroll in index order). A scroll
sorted by ``_doc`` was not used: that order is the index's internal order, which changes with
merges, replicas and re-ingests, and is not uuid order. The scroll is cleared in ``finally``.
Requests go out from one thread and answers are decoded and converted on another, while
the caller encodes the previous page, which is where the second core pays off.

Reads ask for the whole ``_source`` unless they name only a few fields (see
:data:`NARROW_SOURCE`): filtering ``_source`` makes the cluster rewrite every document. An
archive's indexed and verbatim files of one record type are one pass over the cluster
(:meth:`ElasticsearchSource.shared_batches`), the second file replayed from a temporary
Arrow file.

A page is decoded by Arrow's JSON reader straight into the columns the reads need
(:func:`_arrow_sources`, :func:`_arrow_batch`): in C++, without the GIL, and faster than
``json`` alone. The client hands the answer's bytes back undecoded for this (see
:data:`JSON_BYTES`; only clients made by :func:`make_client`). Arrow is strict about JSON
types, so a page holding a value of an unusual shape is decoded by ``json`` and converted by
:func:`hits_to_batch` (one Arrow conversion of the whole page plus one per list or point
column, value by value only for an odd column); both give the same batches.

rq + mq (``docs/architecture.md``): media documents carry ``coreid``. For media with an
``rq``, the uuids of matching records are enumerated in sorted chunks (a composite
aggregation) and each chunk filters media by ``terms`` on ``coreid``; for records with an
``mq``, the distinct ``coreid`` values of matching media filter records by ``terms`` on
``uuid``. Chunks are disjoint and ordered, so counts add up and batches stay sorted. Nothing
is denormalised, so a record's re-ingest never has to touch its media.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import pyarrow as pa
import pyarrow.json as pa_json
from elastic_transport import HttpHeaders, Serializer, TransportError, Urllib3HttpNode
from elastic_transport._node import NodeApiResponse  # not re-exported at the top level
from elasticsearch import ApiError, Elasticsearch, helpers

from downloader.errors import BuildFailed, SourceUnavailable
from query.fields import Field, RecordType, fields, get_field

if TYPE_CHECKING:
    from downloader.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Records per chunk of ids in an rq+mq filter (well below index.max_terms_count, 65,536).
ID_CHUNK = 10_000
#: Largest page one search may return (index.max_result_window bounds from+size only, but
#: large pages cost heap on the cluster; 10,000 is Elasticsearch's own default maximum).
MAX_PAGE = 10_000
#: Buckets per composite-aggregation page.
COMPOSITE_PAGE = 1_000
KEEP_ALIVE = "5m"
#: Recordsets up to which a recordset tally is one ``_count`` per recordset rather than an
#: aggregation (see :meth:`ElasticsearchSource._counted_by_recordset`).
COUNTED_RECORDSETS = 32
#: recordset_counts answers a source keeps (for the data version they were counted in).
KEPT_TALLIES = 16
META_ID = "store"

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


# --- the client ------------------------------------------------------------------------------


class PlainJsonNode(Urllib3HttpNode):
    """An HTTP node that speaks plain ``application/json`` to any compatible cluster.

    The 9.x client asks for ``application/vnd.elasticsearch+json; compatible-with=9``, which
    only Elasticsearch 9 accepts; Elasticsearch 7/8 and OpenSearch answer 406 or 400. Every
    one of them accepts plain JSON, so the media types are put back here. The client also
    refuses servers that do not name themselves Elasticsearch in ``X-Elastic-Product``, a
    header OpenSearch does not send; it is supplied for 2xx answers from such servers.
    """

    def perform_request(  # type: ignore[override]  # same parameters, passed through by keyword
        self, method: str, target: str, body: bytes | None = None, headers: Any = None, **kw: Any
    ) -> NodeApiResponse:
        as_bytes = False
        if headers is not None:
            headers = HttpHeaders(headers)
            if headers.get("accept") == JSON_BYTES:
                headers["accept"] = "application/json"
                as_bytes = True
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value and "vnd.elasticsearch+" in value:
                    headers[name] = value.replace("vnd.elasticsearch+", "").split(";")[0]
        response = super().perform_request(method, target, body=body, headers=headers, **kw)
        meta = response.meta
        patched: HttpHeaders | None = None
        if "x-elastic-product" not in meta.headers:
            patched = HttpHeaders(meta.headers)
            patched["x-elastic-product"] = "Elasticsearch"
        if as_bytes and 200 <= meta.status < 300:
            patched = patched if patched is not None else HttpHeaders(meta.headers)
            patched["content-type"] = JSON_BYTES
        if patched is not None:
            response = NodeApiResponse(dataclasses.replace(meta, headers=patched), response.body)
        return response


#: A media type used only between :class:`ElasticsearchSource` and :class:`PlainJsonNode`,
#: never sent to a cluster: asked for as ``accept``, the node asks for plain JSON and labels a
#: 2xx answer with it, and the client (see :func:`make_client`) then hands back the answer's
#: bytes undecoded, for Arrow to decode (:func:`_arrow_sources`).
JSON_BYTES = "application/x-downloader-json-bytes"


class _BytesSerializer(Serializer):
    """Leaves an answer labelled :data:`JSON_BYTES` as the bytes that came."""

    mimetype = JSON_BYTES

    def loads(self, data: bytes) -> bytes:
        return data

    def dumps(self, data: Any) -> bytes:
        return data if isinstance(data, bytes) else json.dumps(data).encode()


def _reads_bytes(es: Elasticsearch) -> bool:
    """Whether ``es`` can hand back undecoded answers: made by :func:`make_client` (every node
    a :class:`PlainJsonNode`, :data:`JSON_BYTES` left undecoded)."""
    try:
        transport = es.transport
        if not isinstance(transport.serializers.get_serializer(JSON_BYTES), _BytesSerializer):
            return False
        return all(isinstance(node, PlainJsonNode) for node in transport.node_pool.all())
    except Exception:  # another client or transport: the decoded path is always right
        return False


def make_client(urls: str | Sequence[str], *, timeout: float = 30.0) -> Elasticsearch:
    """The official client for comma-separated ``urls``, with retries on timeouts and on
    overloaded or restarting nodes (429, 502, 503, 504)."""
    hosts = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else list(urls)
    return Elasticsearch(
        [h for h in hosts if h],
        node_class=PlainJsonNode,
        request_timeout=timeout,
        retry_on_timeout=True,
        max_retries=3,
        retry_on_status=(429, 502, 503, 504),
        serializers={JSON_BYTES: _BytesSerializer()},
    )


def _translate(exc: Exception, what: str) -> Exception:
    """Our exception for a client error while doing ``what``."""
    if isinstance(exc, ApiError):
        status = exc.meta.status if exc.meta is not None else 0
        if status == 429 or status >= 500:
            return SourceUnavailable(f"the search cluster failed while {what}: {exc.message}")
        if status == 404 or "index_not_found" in str(exc.message):
            return BuildFailed(
                f"the search index does not exist while {what}; load records with "
                "`downloader ingest --target elasticsearch`"
            )
        return BuildFailed(f"the search cluster rejected the request while {what}: {exc.message}")
    if isinstance(exc, TransportError):  # connection refused, timeouts, TLS
        return SourceUnavailable(f"the search cluster cannot be reached while {what}: {exc}")
    return exc


def _call(what: str, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    try:
        return func(*args, **kwargs)
    except (ApiError, TransportError) as exc:
        raise _translate(exc, what) from exc


# --- documents <-> Arrow -------------------------------------------------------------------------


def _parse_date(value: Any) -> datetime | None:
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


def _cell(f: Field, value: Any) -> Any:
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
        return _parse_date(value)
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
    through :func:`_cell`, so both paths give the same values.
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
            if arr.flatten().null_count == 0:  # _cell writes a null item as "None"
                return arr
        if kind == "point" and all(v is None or _is_point_dict(v) for v in values):
            return pa.array(values, typ)  # numbers only; "1.5" raises
        if kind == "date":
            # Naive ISO text (format_instant) casts directly; zones, epoch numbers and
            # empty text raise and take the value-by-value path.
            return pa.array(values, pa.string()).cast(typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    return pa.array([_cell(f, v) for v in values], typ)


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


#: Kinds whose Python values Arrow converts exactly as :func:`_cell` does when the value has
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
    a column holding an unusual value goes through :func:`_cell` / :func:`_raw_value`."""
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


#: A read naming at most this many fields, and no verbatim terms, asks the cluster for just
#: those fields; a wider read takes each document's whole ``_source``. Filtering ``_source``
#: makes the cluster parse and write every document again (on osmem-server a read of all
#: record fields took seven times as long as a read of whole documents), while a whole
#: ``_source`` goes out as stored; the bytes not asked for (the ``fulltext`` tokens, fields
#: another file wants) cost less than that. :func:`hits_to_batch` picks its columns from
#: either.
NARROW_SOURCE = 8


def _source_filter(
    rtype: RecordType, reads: Sequence[tuple[Sequence[str], Sequence[str]]]
) -> list[str] | bool:
    """The ``_source`` parameter for ``reads`` (``(fields, raw_terms)`` each) of ``rtype``."""
    names = {"uuid", "coreid" if rtype == "mediarecords" else "uuid"}
    for wanted, terms in reads:
        names.update(wanted)
        if terms:
            names.add("data")
    if "data" in names or len(names) > NARROW_SOURCE:
        return True
    return sorted(names)


def _page_size(batch_size: int) -> int:
    return max(1, min(batch_size, MAX_PAGE))


def _ipc_options() -> pa.ipc.IpcWriteOptions:
    return pa.ipc.IpcWriteOptions(compression="lz4" if pa.Codec.is_available("lz4") else None)


class _Spool:
    """Record batches kept in an unnamed temporary file (an Arrow IPC stream, lz4-compressed
    when this pyarrow has lz4) until they are replayed once. A batch whose schema differs
    from the first one's makes the spool unusable (:meth:`finish` gives False) rather than
    failing the read: the caller then reads the cluster again."""

    def __init__(self) -> None:
        # Kept open across calls; closed by replay() or discard().
        self.file: IO[bytes] | None = tempfile.TemporaryFile()  # noqa: SIM115
        self.writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.usable = True

    def write(self, batch: pa.RecordBatch) -> None:
        if not self.usable or self.file is None:
            return
        try:
            if self.writer is None:
                self.writer = pa.ipc.new_stream(self.file, batch.schema, options=_ipc_options())
            self.writer.write_batch(batch)
        except ValueError:  # pa.ArrowInvalid: another schema
            self.usable = False

    def finish(self) -> bool:
        """Close the writing side; whether the spool can be replayed."""
        if self.writer is not None:
            try:
                self.writer.close()
            except ValueError:
                self.usable = False
            self.writer = None
        if not self.usable:
            self.discard()
        return self.usable

    def discard(self) -> None:
        self.usable = False
        if self.file is not None:
            self.file.close()
            self.file = None

    def replay(self) -> Iterator[pa.RecordBatch]:
        """The batches written, in order; the file is gone afterwards."""
        file, self.file = self.file, None
        if file is None:
            return
        with file:
            if file.tell() == 0:  # nothing was written: no batches
                return
            file.seek(0)
            yield from pa.ipc.open_stream(file)


class _SharedRead:
    """The reads of one :meth:`ElasticsearchSource.shared_batches` call."""

    def __init__(
        self,
        source: ElasticsearchSource,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        reads: Sequence[tuple[Sequence[str], Sequence[str]]],
        batch_size: int,
    ) -> None:
        self.source, self.rtype, self.rq, self.mq = source, rtype, rq, mq
        self.reads = [(list(fields), list(terms)) for fields, terms in reads]
        self.batch_size = batch_size
        self.spools: dict[int, _Spool] = {}
        self.led = False

    def read(self, i: int) -> Iterator[pa.RecordBatch]:
        """The batches of read ``i``."""
        spool = self.spools.pop(i, None)
        if spool is not None:
            yield from spool.replay()
        elif i == 0 and not self.led:
            self.led = True
            yield from self._lead()
        else:
            fields, terms = self.reads[i]
            yield from self.source.batches(
                self.rtype,
                self.rq,
                self.mq,
                fields=fields,
                raw_terms=terms,
                batch_size=self.batch_size,
            )

    def _lead(self) -> Iterator[pa.RecordBatch]:
        """Read 0 from the cluster, spooling the other reads' batches of every page (both
        on the page thread)."""
        rtype, reads = self.rtype, self.reads
        spools = {j: _Spool() for j in range(1, len(reads))}

        def convert(page: _Page) -> pa.RecordBatch:
            for j, spool in spools.items():
                spool.write(page.batch(*reads[j]))
            return page.batch(*reads[0])

        finished = False
        try:
            size = _page_size(self.batch_size)
            for plan in self.source._plans(rtype, self.rq, self.mq):
                yield from self.source._pages(rtype, plan, reads, size, convert)
            finished = True
        finally:
            for j, spool in spools.items():
                if finished and spool.finish():
                    self.spools[j] = spool
                else:
                    spool.discard()


# --- a page decoded by Arrow -----------------------------------------------------------------


def _arrow_members(
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


def _arrow_sources(raw: bytes, members: list[pa.Field]) -> tuple[str | None, pa.StructArray] | None:
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


def _peek(answer: Any) -> tuple[str | None, bool]:
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


class _Page:
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
        if self.arrow is not None:
            converted = _arrow_batch(self.rtype, self.arrow, field_names, raw_terms)
            if converted is not None:
                return converted
        if self.sources is None:
            hits = json.loads(self.raw or b"{}")["hits"]["hits"]
            self.sources = [h["_source"] for h in hits]
        return hits_to_batch(self.rtype, self.sources, field_names, raw_terms)


@dataclasses.dataclass(frozen=True)
class DeletedDocument:
    """One entry of the deletion log (a :class:`~downloader.interfaces.Deletion`)."""

    uuid: str
    recordset: str
    deleted_at: datetime
    rtype: str


def _log_time(when: datetime) -> datetime:
    """``when`` as naive UTC cut to milliseconds: a ``date`` field keeps milliseconds, so the
    stored text and the indexed value then agree exactly (range queries stay exact)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def document_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """An index document from a row of the DuckDB store (the same derivation as the
    embedded store: this is how ``ingest --target elasticsearch`` fills the index)."""
    from query.mapping import to_es_document

    return to_es_document(row)


# --- the source -------------------------------------------------------------------------------


class ElasticsearchSource:
    """:class:`~downloader.interfaces.RecordSource` over ``<prefix>records`` and
    ``<prefix>mediarecords``.

    ``client`` replaces the one built from ``urls`` (tests, or a client with custom TLS).
    """

    def __init__(
        self,
        urls: str | Sequence[str] = "http://127.0.0.1:9200",
        *,
        index_prefix: str = "idigbio-",
        timeout: float = 30.0,
        client: Elasticsearch | None = None,
        id_chunk: int = ID_CHUNK,
    ) -> None:
        self.index_prefix = index_prefix
        self.timeout = timeout
        self.id_chunk = id_chunk
        self.es = client if client is not None else make_client(urls, timeout=timeout)
        #: Up to this many recordsets, recordset tallies are counts per recordset.
        self.counted_recordsets = COUNTED_RECORDSETS
        #: recordset_counts answers: (rtype, rq and mq as JSON) -> (data version, counts).
        self._tallies: dict[tuple[str, str], tuple[str, dict[str, int]]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticsearchSource:
        """The source configured by ``elasticsearch_*`` settings."""
        return cls(
            settings.elasticsearch_url,
            index_prefix=settings.elasticsearch_index_prefix,
            timeout=settings.elasticsearch_timeout_seconds,
        )

    def index(self, rtype: RecordType) -> str:
        """The index name of a record type."""
        return f"{self.index_prefix}{rtype}"

    @property
    def recordsets_index(self) -> str:
        """The index of recordset documents."""
        return f"{self.index_prefix}recordsets"

    @property
    def meta_index(self) -> str:
        """The index holding the ``data_version`` document."""
        return f"{self.index_prefix}meta"

    @property
    def deleted_index(self) -> str:
        """The deletion log: documents that pushes of their recordset removed."""
        return f"{self.index_prefix}deleted"

    # --- queries ---------------------------------------------------------------------------

    @staticmethod
    def _clause(rtype: RecordType, q: dict[str, Any] | None) -> dict[str, Any]:
        if not q:
            return {"match_all": {}}
        from query.dsl import compile_dsl

        return compile_dsl(rtype, q)

    def _plans(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> Iterator[dict[str, Any]]:
        """Disjoint queries, in uuid order of their link field, whose union is the answer."""
        if rtype == "records":
            own, other_type, other, here, there = rq, "mediarecords", mq, "uuid", "coreid"
        else:
            own, other_type, other, here, there = mq, "records", rq, "coreid", "uuid"
        own_clause = self._clause(rtype, own)
        if not other:
            yield own_clause
            return
        other_clause = self._clause(other_type, other)  # type: ignore[arg-type]  # one of the two literals
        for chunk in self._distinct(other_type, other_clause, there):  # type: ignore[arg-type]  # as above
            yield {"bool": {"filter": [own_clause, {"terms": {here: chunk}}]}}

    def _distinct(
        self, rtype: RecordType, clause: dict[str, Any], field: str
    ) -> Iterator[list[str]]:
        """Distinct values of ``field`` (a link field: one value per document) among
        matching documents, sorted, in chunks of ``id_chunk``.

        A scroll sorted on the field that fetches no ``_source``: the values are the hits'
        sort values, repeats are adjacent and dropped, documents without a value are left
        out (as a composite aggregation, used before, leaves them out). The cluster sorts
        once; a composite aggregation visited every matching document for each page of
        buckets on osmem-server (2.9 s against 0.2 s for 11,600 record uuids)."""
        yield from self._sorted_values(
            self.index(rtype), clause, field, f"listing {field} of matching {rtype}", self.id_chunk
        )

    def _sorted_values(
        self, index: str, clause: dict[str, Any], field: str, what: str, chunk_size: int
    ) -> Iterator[list[str]]:
        """Distinct values of the keyword ``field`` among documents of ``index`` matching
        ``clause``, sorted, in chunks of ``chunk_size`` (see :meth:`_distinct`)."""
        chunk: list[str] = []
        last: Any = None
        scroll_id: str | None = None
        try:
            answer = _call(
                what,
                self.es.search,
                index=index,
                query=clause,
                sort=[{field: "asc"}],
                source=False,
                size=MAX_PAGE,
                scroll=KEEP_ALIVE,
            )
            while True:
                scroll_id = answer.get("_scroll_id") or scroll_id
                hits = answer["hits"]["hits"]
                if not hits:
                    break
                for hit in hits:
                    value = (hit.get("sort") or [None])[0]
                    if value is None or value == last:
                        continue
                    last = value
                    chunk.append(str(value))
                    if len(chunk) == chunk_size:
                        yield chunk
                        chunk = []
                answer = _call(what, self.es.scroll, scroll_id=scroll_id, scroll=KEEP_ALIVE)
        finally:
            if scroll_id:
                self._clear_scroll(scroll_id)
        if chunk:
            yield chunk

    def _composite_counts(
        self, rtype: RecordType, clause: dict[str, Any], field: str
    ) -> Iterator[tuple[Any, int]]:
        """(value, doc count) of ``field`` over matching documents, in value order, paged."""
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {
                "size": COMPOSITE_PAGE,
                "sources": [{"v": {"terms": {"field": field}}}],
            }
            if after:
                composite["after"] = after
            answer = _call(
                f"counting {rtype} by {field}",
                self.es.search,
                index=self.index(rtype),
                query=clause,
                size=0,
                aggs={"by": {"composite": composite}},
            )
            agg = answer["aggregations"]["by"]
            for bucket in agg["buckets"]:
                yield bucket["key"]["v"], int(bucket["doc_count"])
            after = agg.get("after_key")
            if not after or len(agg["buckets"]) < COMPOSITE_PAGE:
                return

    # --- RecordSource ------------------------------------------------------------------------

    def data_version(self) -> str:
        """The ``data_version`` of the meta document ("0" before the first ingest)."""
        try:
            answer = self.es.get(index=self.meta_index, id=META_ID)
        except ApiError as exc:
            if exc.meta is not None and exc.meta.status == 404:
                return "0"
            raise _translate(exc, "reading the data version") from exc
        except TransportError as exc:
            raise _translate(exc, "reading the data version") from exc
        return str(answer["_source"].get("data_version", "0"))

    def count(self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None) -> int:
        """How many ``rtype`` documents match (exact: ``_count`` does not cap at 10,000)."""
        total = 0
        for plan in self._plans(rtype, rq, mq):
            answer = _call(f"counting {rtype}", self.es.count, index=self.index(rtype), query=plan)
            total += int(answer["count"])
        return total

    def recordset_counts(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int]:
        """Matching documents per recordset: a composite aggregation, no hits fetched.

        A build asks twice for each record type (for :meth:`raw_terms` and for the
        citations), and an aggregation visits every matching document, so the answer is
        kept for the current data version (a few answers per source)."""
        key = (rtype, json.dumps([rq, mq], sort_keys=True, default=str))
        version = self.data_version()
        kept = self._tallies.get(key)
        if kept is not None and kept[0] == version:
            return dict(kept[1])
        counts = self._recordset_counts(rtype, rq, mq)
        if version == "0":  # no meta document: nothing tells when the data changes
            return counts
        self._tallies.pop(key, None)
        self._tallies[key] = (version, counts)
        while len(self._tallies) > KEPT_TALLIES:
            del self._tallies[next(iter(self._tallies))]
        return dict(counts)

    def _recordset_counts(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int]:
        counted = self._counted_by_recordset(rtype, rq, mq)
        if counted is not None:
            return counted
        counts: dict[str, int] = {}
        for plan in self._plans(rtype, rq, mq):
            for value, n in self._composite_counts(rtype, plan, "recordset"):
                counts[str(value)] = counts.get(str(value), 0) + n
        return dict(sorted(counts.items()))

    def _counted_by_recordset(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int] | None:
        """Matching documents per recordset as one ``_count`` per recordset, when the
        recordsets index lists at most ``counted_recordsets`` and the query has no other
        side (else None: the caller aggregates).

        A count is answered from the index, where an aggregation visits every matching
        document (on osmem-server it reads each document: 0.9 s for 30,000 records, against
        0.05 s for a count). The counts are kept only when they add up to the count of the
        whole query, so a document whose recordset the recordsets index does not list
        sends the caller back to the aggregation, and the answer is exactly the
        aggregation's."""
        own, other = (rq, mq) if rtype == "records" else (mq, rq)
        if other or self.counted_recordsets <= 0:
            return None
        try:
            listed = self.es.search(
                index=self.recordsets_index,
                size=self.counted_recordsets + 1,
                source=False,
                sort=[{"recordset": "asc"}],
            )["hits"]["hits"]
        except ApiError:
            return None  # no recordsets index: the aggregation says what is wrong
        except TransportError as exc:
            raise _translate(exc, "listing recordsets") from exc
        if len(listed) > self.counted_recordsets:
            return None
        clause = self._clause(rtype, own)
        what = f"counting {rtype}"
        total = int(_call(what, self.es.count, index=self.index(rtype), query=clause)["count"])
        counts: dict[str, int] = {}
        for hit in listed:
            rs = str(hit["_id"])
            query = {"bool": {"filter": [clause, {"term": {"recordset": rs}}]}}
            n = int(_call(what, self.es.count, index=self.index(rtype), query=query)["count"])
            if n:
                counts[rs] = n
        if sum(counts.values()) != total:
            return None
        return dict(sorted(counts.items()))

    def raw_terms(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> list[str]:
        """Verbatim terms used by the recordsets that contribute matching documents (read
        from their recordset documents, so no document is fetched)."""
        recordsets = list(self.recordset_counts(rtype, rq, mq))
        if not recordsets:
            return []
        key = "record_terms" if rtype == "records" else "media_terms"
        answer = _call(
            "reading recordset terms",
            self.es.mget,
            index=self.recordsets_index,
            ids=recordsets,
            source_includes=[key],
        )
        terms: set[str] = set()
        for doc in answer["docs"]:
            terms.update((doc.get("_source") or {}).get(key) or [])
        return sorted(terms)

    def batches(
        self,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        *,
        fields: Sequence[str] = (),
        raw_terms: Sequence[str] = (),
        batch_size: int = 10_000,
    ) -> Iterator[pa.RecordBatch]:
        """Matching documents as Arrow batches, sorted by uuid within each plan (see
        :meth:`_plans`)."""
        fields, raw_terms = list(fields), list(raw_terms)

        def convert(page: _Page) -> pa.RecordBatch:
            return page.batch(fields, raw_terms)

        for plan in self._plans(rtype, rq, mq):
            yield from self._pages(
                rtype, plan, [(fields, raw_terms)], _page_size(batch_size), convert
            )

    def shared_batches(
        self,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        reads: Sequence[tuple[Sequence[str], Sequence[str]]],
        *,
        batch_size: int = 10_000,
    ) -> list[Callable[[], Iterator[pa.RecordBatch]]]:
        """Several reads of the same documents from one pass over the cluster: one batches
        factory per ``(fields, raw_terms)`` in ``reads``, each giving what :meth:`batches`
        gives for them.

        The first factory reads the cluster and yields its own batches while it writes the
        others' to temporary Arrow files; the other factories replay those files. A factory
        used before the first one finished its pass (or used a second time) reads the
        cluster on its own, so any order of use gives the same batches. An archive's indexed
        and verbatim files of one record type are two reads of the same documents: this
        halves the documents the cluster sends and the JSON decoded here, and both files
        come from the same snapshot.
        """
        shared = _SharedRead(self, rtype, rq, mq, reads, batch_size)
        return [functools.partial(shared.read, i) for i in range(len(reads))]

    def _pages(
        self,
        rtype: RecordType,
        query: dict[str, Any],
        reads: Sequence[tuple[Sequence[str], Sequence[str]]],
        size: int,
        convert: Callable[[_Page], T],
    ) -> Iterator[T]:
        """``convert`` of each page of matching documents (holding what ``reads`` need), in
        uuid order.

        A scroll sorted on ``uuid``: the cluster sorts the matching documents once when the
        scroll opens and keeps its place, where ``search_after`` searches and sorts again
        for every page (on osmem-server that is a pass over the whole index per page, so a
        read grew with the square of its size). Pages are requested on one thread and
        decoded (by Arrow when the client hands back the answer's bytes, see
        :data:`JSON_BYTES`) and converted on another while the caller works on the previous
        one. The scroll is cleared however this ends."""
        index = self.index(rtype)
        what = f"reading {rtype}"
        body: dict[str, Any] = {
            "query": query,
            "size": size,
            "sort": [{"uuid": "asc"}],
            "_source": _source_filter(rtype, reads),
        }
        members = _arrow_members(rtype, reads) if _reads_bytes(self.es) else None
        state: dict[str, str | None] = {"scroll": None}

        def request() -> Any:
            scroll_id = state["scroll"]
            if members is None:
                if scroll_id is None:
                    return _call(what, self.es.search, index=index, body=body, scroll=KEEP_ALIVE)
                return _call(what, self.es.scroll, scroll_id=scroll_id, scroll=KEEP_ALIVE)
            if scroll_id is None:
                path, params, payload = (
                    f"/{quote(index, safe='')}/_search",
                    {"scroll": KEEP_ALIVE},
                    body,
                )
            else:
                path, params, payload = (
                    "/_search/scroll",
                    {},
                    {"scroll": KEEP_ALIVE, "scroll_id": scroll_id},
                )
            return _call(
                what,
                self.es.perform_request,
                "POST",
                path,
                params=params,
                headers={"accept": JSON_BYTES, "content-type": "application/json"},
                body=payload,
            ).body

        def decode(answer: Any) -> tuple[int, str | None, T | None]:  # one at a time, in order
            decoded = None
            if isinstance(answer, bytes):
                decoded = _arrow_sources(answer, members) if members is not None else None
                if decoded is None:
                    answer = json.loads(answer)
            scroll_id: str | None
            if decoded is not None:
                scroll_id, sources = decoded
                n, page = len(sources), _Page(rtype, arrow=sources, raw=answer)
            else:
                scroll_id = answer.get("_scroll_id")
                hits = answer["hits"]["hits"]
                n, page = len(hits), _Page(rtype, sources=[h["_source"] for h in hits])
            return (n, scroll_id, convert(page)) if n else (0, scroll_id, None)

        # Two threads besides the caller's: one sends the requests, one decodes and converts
        # the answers (in order). The next request goes out as soon as an answer shows its
        # scroll id and at least one hit (see _peek), so the cluster answers while the last
        # page is decoded; otherwise after that page is decoded. At most one decoded page
        # waits for the caller.
        ahead: queue.Queue[Future[tuple[int, str | None, T | None]] | BaseException | None]
        ahead = queue.Queue(maxsize=1)
        stop = threading.Event()
        decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="es-decode")

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                while not stop.is_set():
                    answer = request()
                    scroll_id, more = _peek(answer)
                    state["scroll"] = scroll_id or state["scroll"]
                    decoding = decoder.submit(decode, answer)
                    if not put(decoding):
                        return
                    if scroll_id is None or not more:
                        n, scroll_id, _ = decoding.result()
                        state["scroll"] = scroll_id or state["scroll"]
                        if not n:  # a scroll ends with an empty page
                            break
                put(None)
            except BaseException as exc:
                put(exc)

        producer = threading.Thread(target=produce, name="es-fetch", daemon=True)
        producer.start()
        try:
            while True:
                item = ahead.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                _, _, converted = item.result()
                if converted is not None:
                    yield converted
        finally:
            stop.set()
            producer.join()
            decoder.shutdown(wait=True, cancel_futures=True)
            if state["scroll"]:
                self._clear_scroll(state["scroll"])

    def _clear_scroll(self, scroll_id: str) -> None:
        try:
            self.es.clear_scroll(scroll_id=scroll_id)
        except (ApiError, TransportError):
            # The scroll expires by itself after KEEP_ALIVE; failing to clear it early must
            # not fail a build that has already written its archive.
            log.warning("could not clear a scroll", exc_info=True)

    def unique_values(
        self,
        field: str,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
    ) -> Iterator[pa.RecordBatch]:
        """Distinct values of a record field with their counts, by value (composite
        aggregation; only buckets travel)."""
        f = get_field("records", field)
        if f is None:
            raise BuildFailed(f"{field} is not a records field")
        value_type = pa.string() if f.kind in ("text", "longtext", "list") else ARROW_TYPES[f.kind]
        plans = list(self._plans("records", rq, mq))
        if len(plans) == 1:
            pairs: Iterable[tuple[Any, int]] = self._composite_counts("records", plans[0], field)
        else:
            # Chunks may share values: merge (the distinct values, not the records, in memory).
            merged: dict[Any, int] = {}
            for plan in plans:
                for value, n in self._composite_counts("records", plan, field):
                    merged[value] = merged.get(value, 0) + n
            pairs = sorted(merged.items())
        chunk: list[tuple[Any, int]] = []
        for pair in pairs:
            if pair[0] in (None, ""):
                continue
            chunk.append(pair)
            if len(chunk) == COMPOSITE_PAGE * 10:
                yield self._values_batch(f, value_type, chunk)
                chunk = []
        if chunk:
            yield self._values_batch(f, value_type, chunk)

    @staticmethod
    def _values_batch(
        f: Field, value_type: pa.DataType, pairs: list[tuple[Any, int]]
    ) -> pa.RecordBatch:
        values = [str(v) if pa.types.is_string(value_type) else _cell(f, v) for v, _ in pairs]
        return pa.RecordBatch.from_arrays(
            [pa.array(values, value_type), pa.array([n for _, n in pairs], pa.int64())],
            names=["value", "count"],
        )

    # --- DeletionLog ---------------------------------------------------------------------------

    def deleted_records(self, *, since: datetime | None = None) -> list[DeletedDocument]:
        """Records and media records removed by pushes of their recordset (after ``since``
        when given, naive UTC), oldest first. An index filled before the log existed has
        no log: nothing was recorded, so nothing is listed."""
        query: dict[str, Any] = {"match_all": {}}
        if since is not None:
            # The field keeps milliseconds: ask from the millisecond and compare exactly below.
            query = {"range": {"deleted": {"gte": _log_time(since).isoformat()}}}
        found: list[DeletedDocument] = []
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "query": query,
                "size": MAX_PAGE,
                "sort": [{"deleted": "asc"}, {"uuid": "asc"}, {"rtype": "asc"}],
                "_source": ["uuid", "rtype", "recordset", "deleted"],
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            try:
                answer = self.es.search(index=self.deleted_index, body=body)
            except ApiError as exc:
                if exc.meta is not None and exc.meta.status == 404:
                    return found
                raise _translate(exc, "reading the deletion log") from exc
            except TransportError as exc:
                raise _translate(exc, "reading the deletion log") from exc
            hits = answer["hits"]["hits"]
            for hit in hits:
                doc = hit["_source"]
                deleted_at = _parse_date(doc.get("deleted"))
                if deleted_at is None or (since is not None and deleted_at <= since):
                    continue
                found.append(
                    DeletedDocument(
                        uuid=str(doc["uuid"]),
                        recordset=str(doc.get("recordset") or ""),
                        deleted_at=deleted_at,
                        rtype=str(doc.get("rtype") or ""),
                    )
                )
            if len(hits) < MAX_PAGE:
                return found
            after = hits[-1]["sort"]

    # --- operations --------------------------------------------------------------------------

    def ping(self) -> bool:
        """Whether the cluster answers (for health checks)."""
        try:
            return bool(self.es.ping())
        except (ApiError, TransportError):
            return False

    def total_records(self) -> int:
        """Documents in the records index."""
        return self.count("records", None, None)


# --- ingest: the index writer ---------------------------------------------------------------------


def _index_body(rtype: RecordType) -> dict[str, Any]:
    """The create-index body (settings and mappings) from the field catalogue."""
    from query.mapping import es_mapping

    return es_mapping(rtype)


RECORDSETS_MAPPING: dict[str, Any] = {
    "properties": {
        "recordset": {"type": "keyword"},
        "version": {"type": "long"},
        "name": {"type": "keyword"},
        "source": {"type": "keyword"},
        "ingested_at": {"type": "date"},
        "record_count": {"type": "long"},
        "media_count": {"type": "long"},
        "record_terms": {"type": "keyword"},
        "media_terms": {"type": "keyword"},
        # The EML is only ever read back whole; it is not searched.
        "eml": {"type": "object", "enabled": False},
    }
}


META_MAPPING: dict[str, Any] = {
    "properties": {"data_version": {"type": "keyword"}, "updated": {"type": "date"}}
}


DELETED_MAPPING: dict[str, Any] = {
    "properties": {
        "uuid": {"type": "keyword"},
        "rtype": {"type": "keyword"},
        "recordset": {"type": "keyword"},
        "deleted": {"type": "date"},
    }
}


class ElasticsearchWriter:
    """Fills the indices from the embedded store's derivation (see :func:`export_store`)."""

    def __init__(self, source: ElasticsearchSource, *, chunk_size: int = 2_000) -> None:
        self.source = source
        self.es = source.es
        self.chunk_size = chunk_size

    def ensure_indices(self) -> None:
        """Create the indices that do not exist yet, with the catalogue's mappings."""
        wanted: list[tuple[str, dict[str, Any]]] = [
            (self.source.index("records"), _index_body("records")),
            (self.source.index("mediarecords"), _index_body("mediarecords")),
            (self.source.recordsets_index, {"mappings": RECORDSETS_MAPPING}),
            (self.source.meta_index, {"mappings": META_MAPPING}),
            (self.source.deleted_index, {"mappings": DELETED_MAPPING}),
        ]
        for name, body in wanted:
            if _call(f"checking index {name}", self.es.indices.exists, index=name):
                continue
            try:
                self.es.indices.create(
                    index=name, settings=body.get("settings"), mappings=body["mappings"]
                )
            except ApiError as exc:
                if "resource_already_exists" in str(exc.message):  # another ingest won the race
                    continue
                raise _translate(exc, f"creating index {name}") from exc
            except TransportError as exc:
                raise _translate(exc, f"creating index {name}") from exc

    def index_documents(self, rtype: RecordType, docs: Iterable[dict[str, Any]]) -> int:
        """Bulk-index documents (``_id`` = uuid); returns how many were written."""
        index = self.source.index(rtype)
        actions = ({"_index": index, "_id": d["uuid"], "_source": d} for d in docs)
        return self._bulk(index, actions)

    def _bulk(self, index: str, actions: Iterable[dict[str, Any]]) -> int:
        """Send bulk ``actions`` (index or delete) to ``index``; how many succeeded."""
        written = 0
        try:
            for ok, item in helpers.streaming_bulk(
                self.es,
                actions,
                chunk_size=self.chunk_size,
                max_retries=3,
                raise_on_error=False,
            ):
                if not ok:
                    if item.get("delete", {}).get("status") == 404:
                        continue  # already gone: what a delete wanted
                    raise BuildFailed(f"indexing into {index} failed: {item}")
                written += 1
        except (ApiError, TransportError) as exc:
            raise _translate(exc, f"indexing into {index}") from exc
        return written

    def replace_recordset(
        self,
        recordset: dict[str, Any],
        records: Iterable[dict[str, Any]],
        media: Iterable[dict[str, Any]],
        *,
        now: datetime | None = None,
    ) -> tuple[int, int]:
        """Index a recordset's documents, then drop its documents of older versions, noting
        each dropped uuid in the deletion log (``deleted`` = ``now``, default: the time of
        the push, when the index stopped serving them)."""
        rs, version = recordset["recordset"], recordset["version"]
        when = _log_time(now or datetime.now(UTC))
        n_records = self.index_documents("records", records)
        n_media = self.index_documents("mediarecords", media)
        # Documents that were indexed again replaced their old copies under the same _id; a
        # refresh makes searches see the new copies, so that only documents the new version
        # lacks count as removed.
        _call(
            f"refreshing the indices of {rs}",
            self.es.indices.refresh,
            index=f"{self.source.index('records')},{self.source.index('mediarecords')}",
        )
        self._forget_restored(rs, version)
        for rtype in ("records", "mediarecords"):
            stale = {
                "bool": {
                    "filter": [{"term": {"recordset": rs}}],
                    "must_not": [{"term": {"version": version}}],
                }
            }
            self._log_deletions(rtype, rs, stale, when)
            _call(
                f"removing old {rtype} of {rs}",
                self.es.delete_by_query,
                index=self.source.index(rtype),
                query=stale,
                refresh=True,
                conflicts="proceed",
            )
        doc = document_from_row(recordset)
        if doc.get("eml") is not None:
            doc["eml"] = {"text": doc["eml"]}
        _call(
            f"writing recordset {rs}",
            self.es.index,
            index=self.source.recordsets_index,
            id=rs,
            document=doc,
        )
        return n_records, n_media

    def _uuids(self, index: str, query: dict[str, Any], what: str) -> Iterator[list[str]]:
        """The ``uuid`` of every matching document in ``index``, a page at a time (sorted):
        one sorted scroll, which the cluster sorts once (``search_after`` sorts again for
        every page)."""
        yield from self.source._sorted_values(index, query, "uuid", what, MAX_PAGE)

    def _log_deletions(
        self, rtype: RecordType, recordset: str, stale: dict[str, Any], when: datetime
    ) -> None:
        """Note the documents about to be dropped in the deletion log (``_id`` rtype:uuid, so
        a repeated push writes each once)."""
        index = self.source.deleted_index
        stamp = when.isoformat(timespec="milliseconds")
        for page in self._uuids(
            self.source.index(rtype), stale, f"listing removed {rtype} of {recordset}"
        ):
            actions = (
                {
                    "_index": index,
                    "_id": f"{rtype}:{uuid}",
                    "_source": {
                        "uuid": uuid,
                        "rtype": rtype,
                        "recordset": recordset,
                        "deleted": stamp,
                    },
                }
                for uuid in page
            )
            self._bulk(index, actions)

    def _forget_restored(self, recordset: str, version: Any) -> None:
        """Drop log entries of documents the new version holds again (as the embedded store
        does): they were deleted once but exist now. The log of one recordset is usually
        small, so it is read first and only its uuids are looked up."""
        log_index = self.source.deleted_index
        for rtype in ("records", "mediarecords"):
            logged = {
                "bool": {"filter": [{"term": {"recordset": recordset}}, {"term": {"rtype": rtype}}]}
            }
            for page in self._uuids(log_index, logged, f"reading the deletion log of {recordset}"):
                present = {
                    "bool": {"filter": [{"terms": {"uuid": page}}, {"term": {"version": version}}]}
                }
                for back in self._uuids(
                    self.source.index(rtype), present, f"checking restored {rtype} of {recordset}"
                ):
                    self._bulk(
                        log_index,
                        (
                            {"_op_type": "delete", "_index": log_index, "_id": f"{rtype}:{u}"}
                            for u in back
                        ),
                    )

    def bump_data_version(self) -> str:
        """Give the data a new version token (after every ingest) and make it all visible."""
        token = f"{time.time_ns():x}"
        _call(
            "refreshing the indices",
            self.es.indices.refresh,
            index=",".join(
                [
                    self.source.index("records"),
                    self.source.index("mediarecords"),
                    self.source.recordsets_index,
                    self.source.deleted_index,
                ]
            ),
        )
        _call(
            "writing the data version",
            self.es.index,
            index=self.source.meta_index,
            id=META_ID,
            document={"data_version": token, "updated": datetime.now(UTC).isoformat()},
            refresh=True,
        )
        return token


def export_store(
    store_file: str | Path,
    source: ElasticsearchSource,
    *,
    recordsets: Sequence[str] | None = None,
    on_recordset: Callable[[str, int, int], None] | None = None,
) -> str:
    """Copy recordsets (all by default) from the DuckDB store into the indices.

    ``downloader ingest --target elasticsearch`` derives index fields exactly as for the
    embedded store (by ingesting into it) and then calls this, so both sources hold the
    same values. Returns the new data version.
    """
    import duckdb  # lazily: only the ingest path needs to read the DuckDB file

    writer = ElasticsearchWriter(source)
    writer.ensure_indices()
    con = duckdb.connect(str(store_file), read_only=True)
    try:
        rows = con.sql("SELECT * FROM recordsets ORDER BY recordset").to_arrow_table()
        for rs_row in rows.to_pylist():
            if recordsets is not None and rs_row["recordset"] not in recordsets:
                continue
            rs = rs_row["recordset"]

            def stream(table: str, rs: str = rs) -> Iterator[dict[str, Any]]:
                reader = con.sql(
                    f"SELECT * FROM {table} WHERE recordset = $rs ORDER BY uuid",
                    params={"rs": rs},
                ).to_arrow_reader(5_000)
                for batch in reader:
                    for row in batch.to_pylist():
                        yield document_from_row(row)

            n_records, n_media = writer.replace_recordset(
                rs_row, stream("records"), stream("mediarecords")
            )
            if on_recordset:
                on_recordset(rs, n_records, n_media)
    finally:
        con.close()
    return writer.bump_data_version()


__all__ = [
    "DeletedDocument",
    "ElasticsearchSource",
    "ElasticsearchWriter",
    "PlainJsonNode",
    "document_from_row",
    "export_store",
    "fields",
    "hits_to_batch",
    "make_client",
]
