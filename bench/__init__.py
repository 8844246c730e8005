"""Benchmarks of the download service: ``python -m bench`` (``make bench``).

Our archive build against a baseline (the iDigBio worker's way) and the machine's limit
(DuckDB COPY, then deflate) on the same data in the same run; the search-cluster build
against a bare scroll read; the HTTP API under load. See bench/results/ and the README.
"""
