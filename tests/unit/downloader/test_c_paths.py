"""A whole archive from the embedded store is the same with the C parts of the build
(archive/_rows.c: the row join and the verbatim split) and without them, as on a machine
where the extension could not be built."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from dwca.read import DwCAReader

from archive import cells
from downloader.backends import make_context
from downloader.build import build_archive
from downloader.config import load_settings
from downloader.ingest.load import ingest_synthetic
from downloader.service import downloads as service
from downloader.sources.duckdb import verbatim

DATA_FILES = ["occurrence.csv", "occurrence_raw.csv", "multimedia.csv", "multimedia_raw.csv"]


class _Held:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def dispatch(self, job_id: str, *, records: int | None = None) -> None:
        self.ids.append(job_id)


def _build(data_dir: Path, rq: str) -> dict[str, bytes]:
    held = _Held()
    ctx = make_context(load_settings({}, overrides={"data_dir": str(data_dir)}), dispatcher=held)
    service.request_download(ctx, {"rq": rq}, force=True, base_url="http://svc")
    job = build_archive(held.ids[-1], ctx)
    assert job is not None and job.state == "SUCCESS" and job.archive_key
    path = data_dir / "archives" / job.archive_key
    with DwCAReader(str(path)) as reader:
        assert len(list(reader)) == job.counts["records"] > 0
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in DATA_FILES}


@pytest.mark.skipif(cells._compiled is None, reason="archive._rows was not built")
@pytest.mark.parametrize("rq", ["{}", '{"class": "actinopterygii"}'])
def test_an_archive_is_the_same_with_and_without_the_c_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rq: str
) -> None:
    ingest_synthetic(tmp_path, 400, seed=3)
    with_c = _build(tmp_path, rq)
    monkeypatch.setattr(cells, "ROW_JOIN", "arrow")
    monkeypatch.setattr(verbatim, "USE_C", False)
    without = _build(tmp_path, rq)
    for name in DATA_FILES:
        assert with_c[name] == without[name], name
    # Every data file holds rows beyond its header, the media files included.
    assert all(data.count(b"\n") > 1 for data in with_c.values())
