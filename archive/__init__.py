"""Darwin Core Archive writing: CSV/TSV data files, meta.xml, eml.xml, citations, zip.

This package is pure: it takes Arrow batches and a writable binary sink, nothing else.
"""
