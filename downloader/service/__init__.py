"""What each request does, one module per resource, with nothing of HTTP in it.

- :mod:`.downloads`: ask for a download, its status, counts, local archives, cancel, cleanup;
- :mod:`.exports`: cached exports of recordset versions;
- :mod:`.jobs`: the jobs resource (any job by id) and who may cancel it.

Every function takes the process's :class:`~downloader.backends.Context` first and raises
our own errors, which :mod:`downloader.api` maps to HTTP codes in one place.
"""
