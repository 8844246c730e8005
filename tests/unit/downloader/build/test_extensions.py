"""Downloads carry the verbatim extensions ingest kept (Identification, MeasurementOrFact...)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from downloader.ingest.load import ingest_archive
from tests.unit.downloader.export_support import Service, read_zip, running_service

SYMBIOTA = (
    Path(__file__).resolve().parents[3]
    / "fixtures"
    / "real-dwca"
    / "symbiota-seinet-pere-2025-02-13.zip"
)
IDENTIFICATION = "http://rs.tdwg.org/dwc/terms/Identification"
EMOF = "http://rs.iobis.org/obis/terms/ExtendedMeasurementOrFact"


def download(svc: Service, tmp_path: Path, name: str, **params: str) -> dict[str, bytes]:
    """Ask for a download, build it, and re-read the archive (schemas, dwca-reader)."""
    response = svc.get("/v2/download", params=params)
    assert response.status_code == 200, response.text
    svc.build_all()
    status = svc.get(response.json()["status_url"]).json()
    assert status["task_status"] == "SUCCESS", status
    archive = read_zip(svc.get(status["download_url"]).content, tmp_path / name)
    return archive.files


def data_rows(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8"))))[1:]


def test_a_download_includes_the_recordsets_extensions_unless_told_not_to(
    tmp_path: Path,
) -> None:
    ingest_archive(tmp_path, SYMBIOTA)
    with running_service(tmp_path) as svc:
        files = download(svc, tmp_path, "all.zip", rq="{}")
        assert len(data_rows(files["identification.csv"])) == 145
        assert len(data_rows(files["extendedmeasurementorfact.csv"])) == 77
        meta = files["meta.xml"].decode()
        assert f'rowType="{IDENTIFICATION}"' in meta and f'rowType="{EMOF}"' in meta
        # Each extension row is keyed by its record's uuid, the core's id.
        core_ids = {r[0] for r in data_rows(files["occurrence.csv"])}
        assert {r[0] for r in data_rows(files["identification.csv"])} <= core_ids

        # A query: only the extension rows of the matching records.
        some = data_rows(files["occurrence.csv"])[:1]
        uuid = some[0][0]
        files = download(svc, tmp_path, "one.zip", rq=f'{{"uuid": "{uuid}"}}')
        rows = data_rows(files["identification.csv"])
        assert rows and {r[0] for r in rows} == {uuid}

        files = download(svc, tmp_path, "none.zip", rq="{}", extensions="false")
        assert "identification.csv" not in files
        assert "extendedmeasurementorfact.csv" not in files


def test_a_bad_extensions_value_is_a_400_naming_it(tmp_path: Path) -> None:
    ingest_archive(tmp_path, SYMBIOTA)
    with running_service(tmp_path) as svc:
        response = svc.get("/v2/download", params={"rq": "{}", "extensions": "maybe"})
        assert response.status_code == 400
        assert "extensions" in response.text
