"""The at-scale record source: an Elasticsearch or OpenSearch cluster, through the official
``elasticsearch`` client. Also the writer that fills the indices (``downloader ingest
--target elasticsearch``).

This is the only package that imports ``elasticsearch``. Vendor errors are translated at its
edge (:mod:`.client`): timeouts, refused connections, 429 and 5xx answers become
:class:`~downloader.errors.SourceUnavailable` (transient; the Celery task retries), a missing
index or a rejected query becomes :class:`~downloader.errors.BuildFailed` with a message a
researcher or an operator can act on.

Indices (``<p>`` is ``elasticsearch_index_prefix``):

- ``<p>records``, ``<p>mediarecords``: one document per record / media record, ``_id`` the
  uuid, fields as the DuckDB store holds them (mapping from :func:`query.mapping.es_mapping`),
  ``data`` the verbatim terms, ``fulltext`` the tokens; media carry ``coreid`` (parent uuid).
- ``<p>recordsets``: one document per recordset (name, version, EML, the verbatim terms its
  records and media use: the source of :meth:`ElasticsearchSource.raw_terms`).
- ``<p>extensions``: one document per row of a verbatim extension other than media
  (``recordset``, ``version``, ``rowtype``, ``file``, ``coreid``: the record's uuid,
  ``position``, ``data``: the verbatim values, not indexed); the recordset documents list
  the files (``extensions``: rowtype, file, terms, row_count).
- ``<p>meta``: document ``store`` with ``data_version``, changed by every ingest.
- ``<p>deleted``: the deletion log (:class:`~downloader.interfaces.DeletionLog`): one
  document per record or media record that a push of its recordset removed (``uuid``,
  ``rtype``, ``recordset``, ``deleted``), so incremental-sync downloads get ``deleted.csv``.

Modules, each importing only those above it:

- :mod:`.client`: the client (plain JSON to any compatible cluster, answers handed back as
  bytes for Arrow), vendor errors translated, request limits.
- :mod:`.hits`: search hits (``_source``) as Arrow record batches, decoded by Arrow's JSON
  reader or by ``json``.
- :mod:`.scroll`: a scroll read, requests on one thread and decoding on another.
- :mod:`.spool`: several reads of the same documents from one pass over the cluster.
- :mod:`.source`: :class:`ElasticsearchSource`, the reader (paging, rq + mq, counts, the
  deletion log).
- :mod:`.writer`: :class:`ElasticsearchWriter`, index creation and bulk writes.
"""

from downloader.sources.elasticsearch.client import ClusterAuth, PlainJsonNode, make_client
from downloader.sources.elasticsearch.hits import hits_to_batch
from downloader.sources.elasticsearch.source import DeletedDocument, ElasticsearchSource
from downloader.sources.elasticsearch.writer import ElasticsearchWriter, document_from_row

__all__ = [
    "ClusterAuth",
    "DeletedDocument",
    "ElasticsearchSource",
    "ElasticsearchWriter",
    "PlainJsonNode",
    "document_from_row",
    "hits_to_batch",
    "make_client",
]
