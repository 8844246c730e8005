"""The reader: :class:`ElasticsearchSource`, the at-scale
:class:`~downloader.interfaces.RecordSource` and :class:`~downloader.interfaces.DeletionLog`
over the indices (see the package docstring for what they hold).

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
(:meth:`ElasticsearchSource.shared_batches`, :mod:`~downloader.sources.elasticsearch.spool`),
the second file replayed from a temporary Arrow file. Pages become Arrow batches in
:mod:`~downloader.sources.elasticsearch.hits`.

rq + mq (``docs/architecture.md``): media documents carry ``coreid``. For media with an
``rq``, the uuids of matching records are enumerated in sorted chunks and each chunk filters
media by ``terms`` on ``coreid``; for records with an ``mq``, the distinct ``coreid`` values
of matching media filter records by ``terms`` on ``uuid``. Chunks are disjoint and ordered,
so counts add up and batches stay sorted. Nothing is denormalised, so a record's re-ingest
never has to touch its media.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from downloader.errors import BuildFailed
from downloader.models import ExtensionFile
from downloader.sources import media_of_recordsets
from downloader.sources.elasticsearch.client import (
    KEEP_ALIVE,
    MAX_PAGE,
    ClusterAuth,
    call,
    make_client,
    page_size,
    reads_bytes,
    translate,
)
from downloader.sources.elasticsearch.hits import (
    ARROW_TYPES,
    Page,
    arrow_members,
    cell,
    parse_date,
    peek,
)
from downloader.sources.elasticsearch.scroll import request_page, scroll_pages
from downloader.sources.elasticsearch.spool import PageSpool, SharedRead
from query.fields import Field, RecordType, get_field

if TYPE_CHECKING:
    from downloader.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")

#: Records per chunk of ids in an rq+mq filter (well below index.max_terms_count, 65,536).
ID_CHUNK = 10_000
#: An rq+mq count or tally whose other side matches more than one id chunk, and this side
#: at most this many times as many documents, merges two sorted streams of link values
#: (see :meth:`ElasticsearchSource._merged_tally`) instead of a terms filter per id chunk.
MERGE_RATIO = 4
#: Buckets per composite-aggregation page.
COMPOSITE_PAGE = 1_000
#: Recordsets up to which a recordset tally is one ``_count`` per recordset rather than an
#: aggregation (see :meth:`ElasticsearchSource._counted_by_recordset`).
COUNTED_RECORDSETS = 32
#: recordset_counts answers a source keeps (for the data version they were counted in).
KEPT_TALLIES = 16
#: Merge plans a source keeps (for the data version they were made in), and the most ids of
#: the other side one of them holds once listed: a build's count, recordset tally and read
#: of the same rq+mq then list them once (an Arrow array: about 40 bytes an id, so at most
#: 10 MB a plan and 40 MB for the plans kept).
KEPT_PLANS = 4
KEPT_IDS = 250_000
META_ID = "store"


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


@dataclasses.dataclass(frozen=True)
class DeletedDocument:
    """One entry of the deletion log (a :class:`~downloader.interfaces.Deletion`)."""

    uuid: str
    recordset: str
    deleted_at: datetime
    rtype: str


def log_time(when: datetime) -> datetime:
    """``when`` as naive UTC cut to milliseconds: a ``date`` field keeps milliseconds, so the
    stored text and the indexed value then agree exactly (range queries stay exact)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


@dataclasses.dataclass
class MergePlan:
    """A read of ``query`` kept to documents whose ``here`` (link field) is among the
    sorted distinct values ``listing()`` gives (the other side's matches, from ``size``
    documents).

    When ``size`` is at most ``keep`` (see :data:`KEPT_IDS`), the first walk over the ids
    lists them all and keeps them, and every walk replays them instead of listing them on
    the cluster again; more are listed anew for each walk."""

    query: dict[str, Any]
    here: str
    listing: Callable[[], Iterator[str]]
    size: int = KEPT_IDS + 1
    keep: int = KEPT_IDS
    kept: pa.Array | None = dataclasses.field(default=None, repr=False)
    #: This side's documents matching ``query`` (before the ids filter them).
    own: int = KEPT_IDS + 1
    #: Whether a read of these documents follows the next tally (see
    #: :meth:`ElasticsearchSource.read_ahead`), and the pages that tally kept for it.
    read_ahead: bool = False
    spool: PageSpool | None = dataclasses.field(default=None, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    @property
    def sort(self) -> list[dict[str, str]]:
        """The order of a read: by the link field, then uuid."""
        if self.here == "uuid":
            return [{"uuid": "asc"}]
        return [{self.here: "asc"}, {"uuid": "asc"}]

    def keep_pages(self, spool: PageSpool) -> None:
        """Keep the pages of a read's scroll for the read (any pages kept before go)."""
        with self._lock:
            old, self.spool = self.spool, spool
            self.read_ahead = False
        if old is not None:
            old.discard()

    def take_pages(self, size: int) -> PageSpool | None:
        """The kept pages (once) when they are pages of ``size`` hits, else None; a read
        takes them, so what was kept never outlives it."""
        with self._lock:
            spool, self.spool = self.spool, None
            self.read_ahead = False
        if spool is not None and size != MAX_PAGE:
            spool.discard()
            return None
        return spool

    def discard(self) -> None:
        """Drop any pages kept (the plan is forgotten)."""
        with self._lock:
            spool, self.spool = self.spool, None
        if spool is not None:
            spool.discard()

    @property
    def keeps(self) -> bool:
        """Whether the ids are (or will be) kept after their first listing."""
        return self.size <= self.keep

    def list_ids(self) -> None:
        """List the ids now and keep them (when :attr:`keeps`)."""
        if self.kept is None and self.keeps:
            self.kept = pa.array(list(self.listing()), pa.string())

    def ids(self) -> Iterator[str]:
        """The other side's distinct ids, sorted."""
        self.list_ids()
        if self.kept is not None:
            yield from self.kept.to_pylist()
        else:
            yield from self.listing()

    def window(self) -> IdWindow:
        """A fresh walk over the ids, for one read."""
        return IdWindow(self.ids())


class IdWindow:
    """The other side's ids in the range of the current page of a read sorted by its link
    field: pages come in ascending order, so ids below a page's first value are dropped
    and only the ids in its range are held."""

    def __init__(self, ids: Iterator[str]) -> None:
        self._ids = ids
        self._held: list[str] = []
        self._next: str | None = next(ids, None)

    def mask(self, links: pa.Array) -> pa.Array:
        """Which of a page's link values (ascending, nulls anywhere) are among the ids."""
        present = pc.drop_null(links)
        if len(present) == 0:
            return pa.array([False] * len(links))
        low, high = pc.min(present).as_py(), pc.max(present).as_py()
        held = [i for i in self._held if i >= low]
        while self._next is not None and self._next <= high:
            if self._next >= low:
                held.append(self._next)
            self._next = next(self._ids, None)
        self._held = held
        return pc.fill_null(pc.is_in(links, value_set=pa.array(held, pa.string())), False)


class FilteredPage(Page):
    """A page whose batches keep only the rows the merge's id window lets through (one
    mask per page, the same for every read of it)."""

    def __init__(self, page: Page, window: IdWindow) -> None:
        super().__init__(page.rtype, arrow=page.arrow, raw=page.raw, sources=page.sources)
        self._page = page
        self._window = window
        self._mask: pa.Array | None = None

    def batch(self, field_names: Sequence[str], raw_terms: Sequence[str]) -> pa.RecordBatch:
        """The inner page's batch, filtered."""
        batch = self._page.batch(field_names, raw_terms)
        if self._mask is None:
            self._mask = self._window.mask(batch.column(0))
        return batch.filter(self._mask)


def _one_recordset(clause: dict[str, Any]) -> str | None:
    """The recordset of every document matching ``clause`` when the clause (or a filter of
    its top-level ``bool``) is a ``term`` on ``recordset``, else None. ``recordset`` is a
    keyword without a normalizer, so a matching document holds exactly that value."""
    found = clause.get("bool")
    filters = found.get("filter") if isinstance(found, dict) else [clause]
    for item in filters if isinstance(filters, list) else [filters]:
        term = item.get("term") if isinstance(item, dict) else None
        if not isinstance(term, dict) or set(term) != {"recordset"}:
            continue
        value = term["recordset"]
        if isinstance(value, dict):
            value = value.get("value")
        if isinstance(value, str):
            return value
    return None


#: The sort value of a hit sorted on ``uuid`` alone, where Elasticsearch and OpenSearch
#: put it: the hit's last member (a value with an escaped character is not matched).
_SORT_UUID = re.compile(rb'"sort":\["([^"\\]*)"\]\}')


class _Kept(Generic[V]):
    """Answers kept for the data version they were found in, the newest ``size`` of them;
    ``dropped`` is called with each answer pushed out or replaced. Nothing is kept while
    the version is ``"0"`` (no meta document: nothing tells when the data changes)."""

    def __init__(self, size: int, dropped: Callable[[V], None] | None = None) -> None:
        self._size = size
        self._dropped = dropped
        self._items: dict[tuple[str, str], tuple[str, V]] = {}

    def get(self, key: tuple[str, str], version: str, find: Callable[[], V]) -> V:
        """The answer kept for ``key`` in ``version``, else ``find()``'s, kept."""
        kept = self._items.get(key)
        if kept is not None and kept[0] == version:
            return kept[1]
        value = find()
        if version != "0":
            self._forget(key)
            self._items[key] = (version, value)
            while len(self._items) > self._size:
                self._forget(next(iter(self._items)))
        return value

    def _forget(self, key: tuple[str, str]) -> None:
        kept = self._items.pop(key, None)
        if kept is not None and self._dropped is not None:
            self._dropped(kept[1])


def _discard_plan(plan: MergePlan | None) -> None:
    if plan is not None:
        plan.discard()


def _keyword(source: dict[str, Any], field: str) -> Any:
    """The sort value of a document's keyword ``field`` as its ``_source`` holds it: the
    least of several values, None for none."""
    value = source.get(field)
    if isinstance(value, list):
        value = min((str(v) for v in value if v is not None), default=None)
    return value


def _tally_in(pairs: Iterator[tuple[str, str]], ids: Iterator[str]) -> dict[str, int]:
    """Per recordset, how many of the sorted ``(value, recordset)`` pairs (repeats kept)
    have their value among the sorted distinct ``ids``: one pass over both, nothing held
    but the tally."""
    tally: dict[str, int] = {}
    current = next(ids, None)
    for value, recordset in pairs:
        while current is not None and current < value:
            current = next(ids, None)
        if current is None:
            break
        if current == value:
            tally[recordset] = tally.get(recordset, 0) + 1
    return dict(sorted(tally.items()))


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
        auth: ClusterAuth | None = None,
    ) -> None:
        self.index_prefix = index_prefix
        self.timeout = timeout
        self.id_chunk = id_chunk
        self.es = client if client is not None else make_client(urls, timeout=timeout, auth=auth)
        #: Up to this many recordsets, recordset tallies are counts per recordset.
        self.counted_recordsets = COUNTED_RECORDSETS
        #: recordset_counts answers by (rtype, rq and mq as JSON).
        self._tallies: _Kept[dict[str, int]] = _Kept(KEPT_TALLIES)
        #: Reads a build said will follow (see read_ahead), by record type and query, and
        #: the pages kept for such reads.
        self._reads_said: dict[tuple[str, str], None] = {}
        self._read_spools: dict[tuple[str, str], PageSpool] = {}
        self._lock = threading.Lock()
        #: count answers, the same way.
        self._counts: _Kept[int] = _Kept(KEPT_TALLIES)
        #: _merge_plan answers, the same way (None: no merge for that query); a plan
        #: dropped drops the pages it kept.
        self._merges: _Kept[MergePlan | None] = _Kept(KEPT_PLANS, _discard_plan)

    @classmethod
    def from_settings(cls, settings: Settings) -> ElasticsearchSource:
        """The source configured by ``elasticsearch_*`` settings."""
        return cls(
            settings.elasticsearch_url,
            index_prefix=settings.elasticsearch_index_prefix,
            timeout=settings.elasticsearch_timeout_seconds,
            auth=ClusterAuth(
                api_key=settings.elasticsearch_api_key,
                username=settings.elasticsearch_username,
                password=settings.elasticsearch_password,
                ca_certs=settings.elasticsearch_ca_certs,
                verify_certs=settings.elasticsearch_verify_certs,
            ),
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
    def extensions_index(self) -> str:
        """The rows of verbatim extensions (Identification, MeasurementOrFact...)."""
        return f"{self.index_prefix}extensions"

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
        pages = self._sorted_hits(index, clause, [{field: "asc"}], MAX_PAGE, what, source=False)
        with closing(pages):
            for hits in pages:
                for hit in hits:
                    value = (hit.get("sort") or [None])[0]
                    if value is None or value == last:
                        continue
                    last = value
                    chunk.append(str(value))
                    if len(chunk) == chunk_size:
                        yield chunk
                        chunk = []
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
            answer = call(
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

    def warm(self) -> None:
        """Nothing to read ahead: the cluster keeps its own caches."""

    def data_version(self) -> str:
        """The ``data_version`` of the meta document ("0" before the first ingest)."""
        try:
            answer = self.es.get(index=self.meta_index, id=META_ID)
        except ApiError as exc:
            if exc.meta is not None and exc.meta.status == 404:
                return "0"
            raise translate(exc, "reading the data version") from exc
        except TransportError as exc:
            raise translate(exc, "reading the data version") from exc
        return str(answer["_source"].get("data_version", "0"))

    def count(self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None) -> int:
        """How many ``rtype`` documents match (exact: ``_count`` does not cap at 10,000).

        The answer is kept for the current data version, like :meth:`recordset_counts`: a
        build counts its records, then decides the merge of its media on the same count and
        tallies a one-recordset query by it (a ``_count`` visits every matching document on
        osmem-server: 0.1 s for 50,000 records, three times in a recordset's export).

        A merged count is the sum of the merged recordset tally (every matching document is
        in it, ``"None"`` for one without a recordset), so it is taken from
        :meth:`recordset_counts`, which keeps it: a build asks for both, and each is a pass
        over both sides."""
        rq, mq = media_of_recordsets(rtype, rq, mq)
        if self._merge_plan(rtype, rq, mq) is not None:
            return sum(self.recordset_counts(rtype, rq, mq).values())
        key = (rtype, json.dumps([rq, mq], sort_keys=True, default=str))

        def counted() -> int:
            total = 0
            for plan in self._plans(rtype, rq, mq):
                answer = call(
                    f"counting {rtype}", self.es.count, index=self.index(rtype), query=plan
                )
                total += int(answer["count"])
            return total

        return self._counts.get(key, self.data_version(), counted)

    def _merged_tally(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int] | None:
        """Matching documents per recordset of an rq+mq query whose other side matches
        more than one id chunk, by merging two sorted scrolls without ``_source``: the
        other side's distinct link values (record uuids, or media coreids) and this side's
        (link value, recordset) of each matching document. None when there is no other
        side, when one chunk holds it, or when this side matches more than
        ``MERGE_RATIO`` times as many documents (reading them all would cost more than the
        terms filters).

        A recordset's media (its 50,000 record uuids against 33,000 media) took one terms
        filter per chunk of ids and one aggregation per chunk, each a pass over the media
        index on osmem-server; two sorted scrolls read each side once."""
        merge = self._merge_plan(rtype, rq, mq)
        if merge is None:
            return None
        spool: PageSpool | None = None
        if merge.read_ahead and merge.own <= KEPT_IDS and reads_bytes(self.es):
            spool = PageSpool()
            listing = self._read_pairs(rtype, merge, spool)
        else:
            listing = self._sorted_pairs(self.index(rtype), merge.query, merge.here, "recordset")
        pairs: Iterator[tuple[str, str]] = listing
        try:
            with closing(listing):
                if merge.keeps and merge.kept is None:
                    # The two listings at once: the cluster sorts the other side's ids (on a
                    # thread of ours) while it sorts this side's pairs for their first page.
                    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="es-ids") as pool:
                        listed = pool.submit(merge.list_ids)
                        first = next(listing, None)
                        listed.result()
                    pairs = iter(()) if first is None else itertools.chain([first], listing)
                tally = _tally_in(pairs, merge.ids())
                if spool is not None:
                    for _ in pairs:  # the pages past the last id, so the read has them all
                        pass
                    merge.keep_pages(spool)
                    spool = None
                return tally
        finally:
            if spool is not None:  # the tally failed: nothing is kept
                spool.discard()

    def _merge_plan(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> MergePlan | None:
        """The merge of an rq+mq query (see :meth:`_merged_tally`), or None: no other side,
        one id chunk holds it, or this side matches more than ``MERGE_RATIO`` times as many
        documents.

        The answer (and the ids it lists, see :class:`MergePlan`) is kept for the current
        data version, like :meth:`recordset_counts`: a build's count, tally and read of
        media take the same merge, and deciding it costs two counts."""
        other = mq if rtype == "records" else rq
        if not other:
            return None
        key = (rtype, json.dumps([rq, mq], sort_keys=True, default=str))
        return self._merges.get(
            key, self.data_version(), lambda: self._new_merge_plan(rtype, rq, mq)
        )

    def read_ahead(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> None:
        """Say, before counting them, that the matching ``rtype`` documents will be read
        (a build says so; a count alone does not).

        An rq+mq query's media (or records) taken by a merge (see :meth:`_merged_tally`)
        are then tallied from the pages of the read itself (whole documents, in the read's
        order), kept in a temporary file for the read, which takes them instead of asking
        the cluster again: one sorted scroll over this side instead of two (a recordset's
        export: its 33,000 media sorted once, not once for the tally and once for the
        file). Only up to :data:`KEPT_IDS` documents are kept so; a larger side, or a
        tally already known, is read as usual.

        Records read with no ``mq`` whose uuids a media merge lists (a recordset's export:
        its media are those of its records) are listed from the pages of their own read,
        kept for it the same way (see :meth:`_ids_of_read`)."""
        rq, mq = media_of_recordsets(rtype, rq, mq)
        if not reads_bytes(self.es):
            return
        if mq if rtype == "records" else rq:
            merge = self._merge_plan(rtype, rq, mq)
            if merge is not None and merge.own <= KEPT_IDS:
                merge.read_ahead = True
            return
        clause = self._clause(rtype, rq if rtype == "records" else mq)
        key = (rtype, json.dumps(clause, sort_keys=True, default=str))
        with self._lock:
            # A few at a time: a read said but never listed (no media merge needed it) or
            # pages never read (the build failed) must not pile up in a long-lived worker.
            self._reads_said.pop(key, None)
            self._reads_said[key] = None
            while len(self._reads_said) > KEPT_PLANS:
                del self._reads_said[next(iter(self._reads_said))]

    def _new_merge_plan(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> MergePlan | None:
        if rtype == "records":
            own, other_type, other, here, there = rq, "mediarecords", mq, "uuid", "coreid"
        else:
            own, other_type, other, here, there = mq, "records", rq, "coreid", "uuid"
        if not other:
            return None
        other_clause = self._clause(other_type, other)  # type: ignore[arg-type]  # one of the two literals
        other_index = self.index(other_type)  # type: ignore[arg-type]  # as above
        # One side's counts, each the count of that side's own query (kept, see count()).
        if rtype == "records":
            n_other = self.count("mediarecords", None, other)
        else:
            n_other = self.count("records", other, None)
        if n_other <= self.id_chunk:
            return None
        own_clause = self._clause(rtype, own)
        n_own = (
            self.count("records", own, None) if rtype == "records" else self.count(rtype, None, own)
        )
        if n_own > MERGE_RATIO * n_other:
            return None

        def ids() -> Iterator[str]:
            if there == "uuid" and n_other <= KEPT_IDS:
                read = self._ids_of_read(other_type, other_clause, n_other)  # type: ignore[arg-type]  # as above
                if read is not None:
                    yield from read
                    return
            for chunk in self._sorted_values(
                other_index, other_clause, there, f"listing {there} of {other_type}", MAX_PAGE
            ):
                yield from chunk

        return MergePlan(own_clause, here, ids, n_other, own=n_own)

    def _ids_of_read(self, rtype: RecordType, clause: dict[str, Any], n: int) -> list[str] | None:
        """The uuids of the ``n`` documents matching ``clause``, sorted, taken from the pages
        of their own read when a build said it reads them (see :meth:`read_ahead`): the
        read's scroll (whole ``_source``, sorted on ``uuid``, :data:`MAX_PAGE` hits) is
        fetched here, its answers kept for the read (:meth:`_pages` takes them), and the
        uuids are the hits' sort values, found in the answers' text without decoding them.
        One sort of the matching records on the cluster instead of two (a recordset's
        export: the uuid listing of its media merge and the read of its records).

        None when no read was said, or when the sort values are not plainly there (a
        different layout of the answer, an escaped character, a document without uuid):
        they must come out strictly ascending and exactly ``n``; the caller then lists the
        uuids on the cluster and the read asks the cluster itself."""
        key = (rtype, json.dumps(clause, sort_keys=True, default=str))
        with self._lock:
            if key not in self._reads_said:
                return None
            del self._reads_said[key]
        body = {"query": clause, "size": MAX_PAGE, "sort": [{"uuid": "asc"}], "_source": True}
        spool = PageSpool()
        found: list[str] = []
        scroll_id: str | None = None
        index, what = self.index(rtype), f"reading {rtype}"
        try:
            # The next page is asked for as soon as an answer shows its scroll id, so the
            # cluster writes it while this one is searched and kept.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="es-read") as pool:
                coming: Future[bytes] | None
                coming = pool.submit(request_page, self.es, index, body, what, None)
                while coming is not None:
                    answer = coming.result()
                    coming = None
                    scroll_id = peek(answer)[0] or scroll_id
                    page = _SORT_UUID.findall(answer)
                    if not page:
                        break
                    if scroll_id is not None:
                        coming = pool.submit(request_page, self.es, index, body, what, scroll_id)
                    spool.write(answer)
                    # Strictly ascending, within the page and after the last one (sorted()
                    # of sorted values is one pass in C).
                    if (found and page[0].decode() <= found[-1]) or (
                        page != sorted(page) or len(set(page)) != len(page)
                    ):
                        break
                    found.extend(v.decode() for v in page)
        finally:
            if scroll_id:
                self._clear_scroll(scroll_id)
        if len(found) != n:
            spool.discard()
            return None
        dropped: list[PageSpool] = []
        with self._lock:
            old = self._read_spools.pop(key, None)
            self._read_spools[key] = spool
            while len(self._read_spools) > KEPT_PLANS:
                dropped.append(self._read_spools.pop(next(iter(self._read_spools))))
        for unread in [old, *dropped]:
            if unread is not None:
                unread.discard()
        return found

    def _read_pairs(
        self, rtype: RecordType, merge: MergePlan, spool: PageSpool
    ) -> Generator[tuple[str, str], None, None]:
        """``(link value, recordset)`` of every document of a merge's side, in the order of
        its read (:meth:`_pages`): the pages of the read's scroll (whole ``_source``, pages
        of :data:`MAX_PAGE`) are fetched here and kept in ``spool`` as they came, so the
        read that follows takes them instead of asking the cluster again (see
        :meth:`read_ahead`). Documents without a link value are left out, a document
        without a recordset counts as ``"None"``, as in :meth:`_sorted_pairs`."""
        here = merge.here
        members = [pa.field(here, pa.string()), pa.field("recordset", pa.string())]
        body = {"query": merge.query, "size": MAX_PAGE, "sort": merge.sort, "_source": True}

        def pairs(page: Page) -> list[tuple[Any, Any]]:
            # On the decoding thread, page by page in order: keep the answer, list its pairs.
            spool.write(page.raw or b"")
            if page.arrow is not None:
                links, sets = page.arrow.flatten()
                return list(zip(links.to_pylist(), sets.to_pylist(), strict=True))
            return [(_keyword(s, here), _keyword(s, "recordset")) for s in page.sources or []]

        pages = self._scroll(rtype, body, members, pairs)
        with closing(pages):
            for found in pages:
                for link, recordset in found:
                    if link is not None:
                        yield str(link), str(recordset)

    def _sorted_pairs(
        self, index: str, clause: dict[str, Any], field: str, second: str
    ) -> Generator[tuple[str, str], None, None]:
        """``(field, second)`` of every document of ``index`` matching ``clause``, sorted
        by both (the sort values of one scroll without ``_source``); documents without
        ``field`` are left out."""
        what = f"listing {field} of {index}"
        sort = [{field: "asc"}, {second: "asc"}]
        pages = self._sorted_hits(index, clause, sort, MAX_PAGE, what, source=False)
        with closing(pages):
            for hits in pages:
                for hit in hits:
                    values = hit.get("sort") or [None, None]
                    if values[0] is not None:
                        yield str(values[0]), str(values[1])

    def recordset_counts(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int]:
        """Matching documents per recordset: a composite aggregation, no hits fetched.

        A build asks twice for each record type (for :meth:`raw_terms` and for the
        citations), and an aggregation visits every matching document, so the answer is
        kept for the current data version (a few answers per source)."""
        rq, mq = media_of_recordsets(rtype, rq, mq)
        key = (rtype, json.dumps([rq, mq], sort_keys=True, default=str))
        found = self._tallies.get(
            key, self.data_version(), lambda: self._recordset_counts(rtype, rq, mq)
        )
        return dict(found)  # the kept answer stays as it was, whatever the caller does

    def _recordset_counts(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> dict[str, int]:
        own, other = (rq, mq) if rtype == "records" else (mq, rq)
        if own and not other:
            # A query of one recordset (a recordset export's records): its tally is its
            # count, with no listing of recordsets and no aggregation (which visits every
            # matching document, and answers when there are many recordsets).
            pinned = _one_recordset(self._clause(rtype, own))
            if pinned is not None:
                n = self.count(rtype, rq, mq)
                return {pinned: n} if n else {}
        counted = self._counted_by_recordset(rtype, rq, mq)
        if counted is None:
            counted = self._merged_tally(rtype, rq, mq)
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
            raise translate(exc, "listing recordsets") from exc
        if len(listed) > self.counted_recordsets:
            return None
        clause = self._clause(rtype, own)
        what = f"counting {rtype}"
        total = self.count(rtype, rq, mq)  # no other side: the count of the own query
        counts: dict[str, int] = {}
        for hit in listed:
            rs = str(hit["_id"])
            query = {"bool": {"filter": [clause, {"term": {"recordset": rs}}]}}
            n = int(call(what, self.es.count, index=self.index(rtype), query=query)["count"])
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
        answer = call(
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

    def extension_files(
        self, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> list[ExtensionFile]:
        """The verbatim extensions (other than media) that the recordsets of the matching
        records were published with, one per rowType, with every term any of them uses
        (from the recordset documents, as the embedded store lists them)."""
        recordsets = list(self.recordset_counts("records", rq, mq))
        if not recordsets:
            return []
        answer = call(
            "reading recordset extensions",
            self.es.mget,
            index=self.recordsets_index,
            ids=recordsets,
            source_includes=["extensions"],
        )
        files: dict[str, str] = {}
        terms: dict[str, set[str]] = {}
        for doc in answer["docs"]:
            for ext in (doc.get("_source") or {}).get("extensions") or []:
                row_type = str(ext["rowtype"])
                files[row_type] = min(files.get(row_type, ext["file"]), ext["file"])
                terms.setdefault(row_type, set()).update(ext.get("terms") or [])
        return [
            ExtensionFile(row_type=rt, name=files[rt], terms=sorted(terms[rt]))
            for rt in sorted(files)
        ]

    def extension_batches(
        self,
        extension: ExtensionFile,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        *,
        batch_size: int = 10_000,
    ) -> Iterator[pa.RecordBatch]:
        """The extension's rows that belong to the matching records, as batches of
        (record uuid, one string column per term), ordered by record and then as
        published (recordset, position): what the embedded store gives.

        The uuids of matching records are listed in sorted chunks (as for media with an
        ``rq``) and each chunk's rows are read by a scroll sorted the same way, so the
        batches come out in record order without the cluster sorting all rows at once."""
        if not extension.terms:
            return
        names = ["coreid", *extension.terms]
        size = page_size(batch_size)
        for plan in self._plans("records", rq, mq):
            for chunk in self._sorted_values(
                self.index("records"), plan, "uuid", "listing matching records", self.id_chunk
            ):
                query = {
                    "bool": {
                        "filter": [
                            {"term": {"rowtype": extension.row_type}},
                            {"terms": {"coreid": chunk}},
                        ]
                    }
                }
                for hits in self._sorted_hits(
                    self.extensions_index,
                    query,
                    [{"coreid": "asc"}, {"recordset": "asc"}, {"position": "asc"}],
                    size,
                    f"reading {extension.name} rows",
                ):
                    columns: list[list[str | None]] = [[] for _ in names]
                    for hit in hits:
                        doc = hit.get("_source") or {}
                        data = doc.get("data") or {}
                        columns[0].append(doc.get("coreid"))
                        for i, term in enumerate(extension.terms, start=1):
                            value = data.get(term)
                            columns[i].append(None if value is None else str(value))
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(c, pa.string()) for c in columns], names=names
                    )

    def _sorted_hits(
        self,
        index: str,
        query: dict[str, Any],
        sort: list[dict[str, str]],
        size: int,
        what: str,
        *,
        source: bool | list[str] = True,
    ) -> Generator[list[dict[str, Any]], None, None]:
        """Pages of hits of ``query`` in ``sort`` order (with ``_source``, none of it, or
        the listed fields), by one scroll that is cleared however this ends."""
        scroll_id: str | None = None
        try:
            answer = call(
                what,
                self.es.search,
                index=index,
                query=query,
                sort=sort,
                source=source,
                size=size,
                scroll=KEEP_ALIVE,
            )
            while True:
                scroll_id = answer.get("_scroll_id") or scroll_id
                hits = answer["hits"]["hits"]
                if not hits:
                    return
                yield hits
                answer = call(what, self.es.scroll, scroll_id=scroll_id, scroll=KEEP_ALIVE)
        finally:
            if scroll_id:
                self._clear_scroll(scroll_id)

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
        :meth:`_plans`), or by link field then uuid when the read is a merge (see
        :meth:`_read_plans`)."""
        rq, mq = media_of_recordsets(rtype, rq, mq)
        fields, raw_terms = list(fields), list(raw_terms)

        def convert(page: Page) -> pa.RecordBatch:
            return page.batch(fields, raw_terms)

        for plan in self._read_plans(rtype, rq, mq):
            yield from self._pages(
                rtype, plan, [(fields, raw_terms)], page_size(batch_size), convert
            )

    def _read_plans(
        self, rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
    ) -> Iterator[dict[str, Any] | MergePlan]:
        """What a read of matching documents goes through: one merge of sorted streams
        when :meth:`_merge_plan` takes it (a scroll of this side sorted by its link field,
        each page kept to the other side's ids), else the plans of :meth:`_plans`."""
        merge = self._merge_plan(rtype, rq, mq)
        if merge is not None:
            yield merge
            return
        yield from self._plans(rtype, rq, mq)

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
        rq, mq = media_of_recordsets(rtype, rq, mq)
        shared = SharedRead(self, rtype, rq, mq, reads, batch_size)
        return [functools.partial(shared.read, i) for i in range(len(reads))]

    def _pages(
        self,
        rtype: RecordType,
        query: dict[str, Any] | MergePlan,
        reads: Sequence[tuple[Sequence[str], Sequence[str]]],
        size: int,
        convert: Callable[[Page], T],
    ) -> Iterator[T]:
        """``convert`` of each page of matching documents (holding what ``reads`` need), in
        uuid order.

        A scroll sorted on ``uuid``: the cluster sorts the matching documents once when the
        scroll opens and keeps its place, where ``search_after`` searches and sorts again
        for every page (on osmem-server that is a pass over the whole index per page, so a
        read grew with the square of its size). Pages are requested on one thread and
        decoded (by Arrow when the client hands back the answer's bytes, see
        :data:`JSON_BYTES`) and converted on another while the caller works on the previous
        one (:func:`~downloader.sources.elasticsearch.scroll.scroll_pages`). The scroll is
        cleared however this ends."""
        sort: list[dict[str, str]] = [{"uuid": "asc"}]
        answers: Iterator[bytes] | None = None
        if isinstance(query, MergePlan):
            # Sorted by the link field (then uuid), each page kept to the other side's ids
            # in its range: column 0 of every batch is that link value. The pages may have
            # been fetched already, by the tally (see read_ahead).
            kept = query.take_pages(size)
            if kept is not None:
                answers = kept.replay()
            merge = query.window()
            sort = query.sort
            query = query.query
            inner = convert

            def convert(page: Page) -> T:
                return inner(FilteredPage(page, merge))

        elif size == MAX_PAGE:
            key = (rtype, json.dumps(query, sort_keys=True, default=str))
            with self._lock:
                spool = self._read_spools.pop(key, None)
                self._reads_said.pop(key, None)  # read now: nothing to list from it later
            answers = spool.replay() if spool is not None else None
        body: dict[str, Any] = {
            "query": query,
            "size": size,
            "sort": sort,
            "_source": _source_filter(rtype, reads),
        }
        members = arrow_members(rtype, reads) if reads_bytes(self.es) else None
        yield from self._scroll(rtype, body, members, convert, answers=answers)

    def _scroll(
        self,
        rtype: RecordType,
        body: dict[str, Any],
        members: list[pa.Field] | None,
        convert: Callable[[Page], T],
        *,
        answers: Iterator[bytes] | None = None,
    ) -> Generator[T, None, None]:
        """:func:`~downloader.sources.elasticsearch.scroll.scroll_pages` over ``rtype``'s
        index, its errors named as a read of ``rtype``, its scroll cleared by this source."""
        return scroll_pages(
            self.es,
            rtype,
            self.index(rtype),
            body,
            members,
            convert,
            what=f"reading {rtype}",
            clear_scroll=self._clear_scroll,
            answers=answers,
        )

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
        values = [str(v) if pa.types.is_string(value_type) else cell(f, v) for v, _ in pairs]
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
            query = {"range": {"deleted": {"gte": log_time(since).isoformat()}}}
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
                raise translate(exc, "reading the deletion log") from exc
            except TransportError as exc:
                raise translate(exc, "reading the deletion log") from exc
            hits = answer["hits"]["hits"]
            for hit in hits:
                doc = hit["_source"]
                deleted_at = parse_date(doc.get("deleted"))
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
