"""Ingest: Darwin Core Archives in, a new version of the record store out.

- :mod:`.read`: reading a DwC-A (its descriptor, core and extension files) into Arrow;
- :mod:`.derive`: deriving the index fields (genus, geopoint, datecollected, ...) from the
  verbatim terms, as iDigBio does;
- :mod:`.load`: loading a recordset into the embedded DuckDB store as a new version
  (stable uuids, the deletion log);
- :mod:`.synthetic`: a synthetic archive of any size, for trials and benchmarks.

``downloader ingest --target elasticsearch`` loads the search cluster through
:mod:`downloader.sources.elasticsearch` from the same store.
"""
