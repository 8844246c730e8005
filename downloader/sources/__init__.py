"""Record sources: the embedded DuckDB store (:mod:`.duckdb`) and an Elasticsearch or
OpenSearch cluster (:mod:`.elasticsearch`), both behind
:class:`~downloader.interfaces.RecordSource`."""
