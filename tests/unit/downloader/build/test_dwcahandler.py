"""ALA's dwcahandler reads our archives whole: ``validate_dwca`` passes and every column of
every data file comes through (it keys columns by the local name of their term, and refused
archives where two columns of one file shared one).

The archives come from two real recordsets ingested side by side (a Symbiota portal's
with Identification and MeasurementOrFact extensions, and an iDigBio download): their
verbatim terms include ``dc:type`` beside ``dcterms:type`` and ``http://`` beside
``https://`` spellings of Symbiota's terms."""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from downloader.ingest.load import ingest_archive
from tests.support.schemas import check_local_names
from tests.unit.downloader.export_support import Service, read_zip, running_service

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "real-dwca"
SYMBIOTA = FIXTURES / "symbiota-seinet-pere-2025-02-13.zip"
IDIGBIO = FIXTURES / "idigbio-download-acer-rubrum-2022-05-11.zip"


@pytest.fixture(scope="module")
def dwcahandler() -> Any:
    """The dwcahandler package. Its modules call ``logging.basicConfig(level=INFO)`` when
    imported, so the root logger is put back as it was for the rest of the suite."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return pytest.importorskip(
            "dwcahandler.dwca.core_dwca",
            reason="dwcahandler (ALA, PyPI) is in the test extra: pip install -e '.[test]'",
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("dwcahandler")
    ingest_archive(data, SYMBIOTA)
    ingest_archive(data, IDIGBIO)
    with running_service(data) as svc:
        yield svc


def download(svc: Service, where: Path, **params: str) -> Path:
    response = svc.get("/v2/download", params=params)
    assert response.status_code == 200, response.text
    svc.build_all()
    status = svc.get(response.json()["status_url"]).json()
    assert status["task_status"] == "SUCCESS", status
    content = svc.get(status["download_url"]).content
    if params.get("form", "dwca-csv") == "dwca-csv":
        read_zip(content, where)  # schemas, python-dwca-reader
    else:
        where.write_bytes(content)
    return where


def data_files(path: Path) -> dict[str, list[list[str]]]:
    """The rows (header first) of each data file in the zip, as the csv module reads them."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        check_local_names(zf.read("meta.xml"))
        for name in zf.namelist():
            if name.endswith((".csv", ".txt")) and "citation" not in name and "rights" not in name:
                text = zf.read(name).decode("utf-8")
                delimiter = "\t" if name.endswith(".txt") else ","
                out[name] = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    return out


@pytest.mark.parametrize(
    ("form", "rq"),
    [
        ("dwca-csv", "{}"),  # both recordsets, with the Symbiota extensions
        ("dwca-gbif", "{}"),
        ("dwca-csv", '{"genus": "nothing-is-called-this"}'),  # empty: header-only files
    ],
)
def test_dwcahandler_validates_our_archives_and_keeps_every_column(
    dwcahandler: Any, service: Service, tmp_path: Path, form: str, rq: str
) -> None:
    from dwcahandler import DwcaHandler  # imported by the fixture, logging put back

    path = download(service, tmp_path / "a.zip", rq=rq, form=form)
    written = data_files(path)
    assert DwcaHandler.validate_dwca(str(path)) is True

    reader = dwcahandler.Dwca(dwca_file_loc=str(path))
    reader.extract_dwca()
    contents = [reader.core_content, *reader.ext_content]
    read = {c.meta_info.file_name: c.df_content for c in contents}
    assert set(read) == set(written)
    for name, frame in read.items():
        # Every column is read, under its own name, with every row and the same ids.
        header, *rows = written[name]
        assert len(frame.columns) == len(header), name
        assert len(set(frame.columns)) == len(frame.columns), name
        assert len(frame) == len(rows), name
        assert list(frame.iloc[:, 0]) == [r[0] for r in rows], name
        if rq == "{}" and name.split(".")[0] in ("occurrence", "verbatim"):
            assert len(rows) > 3000
    if rq == "{}":
        assert any(name.startswith("identification") for name in read)
