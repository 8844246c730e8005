"""Running the command line in-process, as the CLI tests do."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from downloader.cli import main


def cli_count(data_dir: str | Path, rq: object, mq: object | None = None) -> tuple[int, int]:
    """(records, media records) that ``downloader count --json`` prints for ``rq``/``mq``."""
    out = io.StringIO()
    argv = ["count", "--data-dir", str(data_dir), json.dumps(rq), "--json"]
    if mq is not None:
        argv += ["--mq", json.dumps(mq)]
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    body = json.loads(out.getvalue())
    return body["records"], body["mediarecords"]
