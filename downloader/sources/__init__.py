"""Record sources: the embedded DuckDB store (:mod:`.duckdb`) and an Elasticsearch or
OpenSearch cluster (:mod:`.elasticsearch`), both behind
:class:`~downloader.interfaces.RecordSource`."""

from __future__ import annotations

from typing import Any

from query.fields import RecordType

#: The fields a media record shares with its parent record (see :func:`media_of_recordsets`).
SHARED_WITH_PARENT = frozenset({"recordset", "version"})


def media_of_recordsets(
    rtype: RecordType, rq: dict[str, Any] | None, mq: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(rq, mq)`` with the media of the records that ``rq`` picks by recordset and
    version alone (or of every record: ``rq`` is ``{}``) asked of the media by themselves:
    ``rq`` moves into ``mq``, with ``hasSpecimen`` (the media record has a parent). Any
    other query is returned as given.

    Both sources are filled by ``downloader ingest`` only (the cluster from the embedded
    store: ``export_store``, ``reindex_store``), and an ingest links a media record only to
    a record of its own archive and recordset, and writes a recordset's records and media
    as one version. So a media record's parent always has the media record's recordset and
    version, and "the media of the records of recordset X" is "X's media with a parent":
    one filter on the media, where the general case is a join (or, on the cluster, a merge
    of two sorted scrolls) of the matching records' uuids with the media's parent links. A
    recordset's export, every download by recordset and the download of everything ask
    this. When ``mq`` already asks about one of those fields the query stays as it was."""
    if rtype != "mediarecords" or rq is None or not set(rq) <= SHARED_WITH_PARENT:
        return rq, mq
    if mq and not set(mq).isdisjoint({*SHARED_WITH_PARENT, "hasSpecimen"}):
        return rq, mq
    return None, {**(mq or {}), **rq, "hasSpecimen": True}
