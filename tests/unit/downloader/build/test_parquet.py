"""``form=parquet``: the archive's every data file as Parquet, read back with pandas and
DuckDB, against the ``dwca-csv`` download of the same query on the same store (a Symbiota
recordset with Identification and MeasurementOrFact extensions): the same files, rows,
ids and columns, each column with its term URI (meta.json, the file's key-value metadata,
the Arrow field metadata) and the catalogue's type."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archive import dwca
from downloader.ingest.load import ingest_archive
from query import fields as catalogue
from tests.support.schemas import validate_eml
from tests.unit.downloader.export_support import Service, read_zip, running_service

SYMBIOTA = (
    Path(__file__).resolve().parents[3]
    / "fixtures"
    / "real-dwca"
    / "symbiota-seinet-pere-2025-02-13.zip"
)
NOTHING = '{"genus": "nothing-is-called-this"}'


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("parquet")
    ingest_archive(data, SYMBIOTA)
    with running_service(data) as svc:
        yield svc


def download(svc: Service, **params: str) -> tuple[dict[str, Any], bytes]:
    response = svc.get("/v2/download", params=params)
    assert response.status_code == 200, response.text
    svc.build_all()
    status = svc.get(response.json()["status_url"]).json()
    assert status["task_status"] == "SUCCESS", status
    return status, svc.get(status["download_url"]).content


def unzip(content: bytes, where: Path) -> dict[str, Path]:
    where.mkdir()
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        assert zf.testzip() is None
        zf.extractall(where)
        return {name: where / name for name in zf.namelist()}


def csv_twin(name: str) -> str:
    return {"meta.json": "meta.xml"}.get(name, name.replace(".parquet", ".csv"))


@pytest.mark.parametrize("rq", ["{}", NOTHING])
def test_a_parquet_download_holds_the_dwca_csv_download_in_parquet(
    service: Service, tmp_path: Path, rq: str
) -> None:
    status, content = download(service, rq=rq, form="parquet")
    assert status["format"] == "parquet"
    assert status["download_url"].endswith(".zip")
    _, csv_content = download(service, rq=rq)
    csv_archive = read_zip(csv_content, tmp_path / "dwca.zip")  # schemas, python-dwca-reader
    files = unzip(content, tmp_path / "parquet")

    # The same file set, in the same order, whatever the result (empty included).
    assert [csv_twin(n) for n in files] == csv_archive.names
    for name in ("occurrence", "occurrence_raw", "multimedia", "multimedia_raw"):
        assert f"{name}.parquet" in files
    for name in ("records.citation.txt", "citations.txt", "rights.txt", "eml.xml"):
        assert name in files
    if rq == "{}":  # the extensions of the matching records (none when nothing matches)
        assert {"identification.parquet", "extendedmeasurementorfact.parquet"} <= set(files)
    validate_eml(files["eml.xml"].read_bytes())
    descriptor = json.loads(files["meta.json"].read_text("utf-8"))
    assert descriptor["format"] == "parquet" and descriptor["metadata"] == "eml.xml"
    assert descriptor["core"]["location"] == "occurrence.parquet"
    described = [descriptor["core"], *descriptor["extensions"]]
    assert [d["location"] for d in described] == [n for n in files if n.endswith(".parquet")]

    meta_xml = csv_archive.meta_xml
    con = duckdb.connect()
    for entry in described:
        name = entry["location"]
        path = files[name]
        csv_rows = csv_archive.files[csv_twin(name)].decode("utf-8")
        frame_csv = pd.read_csv(io.StringIO(csv_rows), dtype=str, keep_default_na=False)

        # pandas and DuckDB read the same rows, columns and ids as the CSV has.
        frame = pd.read_parquet(path)
        assert list(frame.columns) == list(frame_csv.columns), name
        assert len(frame) == len(frame_csv), name
        assert sorted(frame["coreid"]) == sorted(frame_csv["coreid"]), name
        (count,) = con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()
        assert count == len(frame_csv), name
        if rq == "{}" and name.startswith("occurrence"):
            assert count > 100

        # Term URIs: meta.json, the Arrow field metadata and the key-value metadata agree,
        # and say what meta.xml of the dwca-csv download says.
        schema = pq.read_schema(path)
        assert [f["name"] for f in entry["fields"]] == schema.names
        for field, column in zip(entry["fields"], schema, strict=True):
            term = (column.metadata or {}).get(b"term")
            assert (term.decode() if term else None) == field["term"], (name, field)
            if field["term"]:
                assert f'index="{field["index"]}" term="{field["term"]}"' in meta_xml
        kv = dict(
            con.execute(
                "SELECT decode(key), decode(value) FROM parquet_kv_metadata(?)", [str(path)]
            ).fetchall()
        )
        assert kv["dwca:rowType"] == entry["rowType"]
        assert kv["dwca:core"] == ("true" if name == "occurrence.parquet" else "false")
        terms = {f["name"]: f["term"] for f in entry["fields"] if f["term"]}
        assert json.loads(kv["dwca:terms"]) == terms

    # Types: the catalogue's, whatever the result (numbers, booleans, lists, the point as a
    # struct, dates as UTC timestamps); verbatim terms as strings.
    for name, rtype in (("occurrence.parquet", "records"), ("multimedia.parquet", "mediarecords")):
        schema = pq.read_schema(files[name])
        by_header = {f.csv_header: f for f in catalogue.fields(rtype)}
        kinds = set()
        for column in schema:
            if column.name in by_header:
                kind = by_header[column.name].kind
                kinds.add(kind)
                assert column.type == dwca.ARROW_TYPES[kind], (name, column.name)
        assert {"float", "boolean", "date", "list"} <= kinds
    occurrence = pq.read_schema(files["occurrence.parquet"])
    assert occurrence.field("idigbio:geoPoint").type == pa.struct(
        [("lat", pa.float64()), ("lon", pa.float64())]
    )
    assert occurrence.field("idigbio:eventDate").type == pa.timestamp("us", tz="UTC")
    raw = pq.read_schema(files["occurrence_raw.parquet"])
    assert all(pa.types.is_string(t) for t in raw.types)
    if rq == "{}":
        frame = pd.read_parquet(files["occurrence.parquet"])
        points = frame["idigbio:geoPoint"].dropna()
        assert len(points) and all(-90 <= p["lat"] <= 90 for p in points)


def test_a_parquet_download_of_media_and_of_unique_names(service: Service, tmp_path: Path) -> None:
    _, content = download(service, rq="{}", form="parquet", core_type="mediarecords")
    files = unzip(content, tmp_path / "media")
    descriptor = json.loads(files["meta.json"].read_text("utf-8"))
    assert descriptor["core"]["location"] == "multimedia.parquet"
    frame = pd.read_parquet(files["multimedia.parquet"])
    assert len(frame) > 0 and frame["coreid"].is_unique

    _, content = download(service, rq="{}", form="parquet", core_type="uniquenames")
    files = unzip(content, tmp_path / "names")
    frame = pd.read_parquet(files["names.parquet"])
    assert list(frame.columns) == ["coreid", "dwc:scientificName", "idigbio:itemCount"]
    assert str(frame["idigbio:itemCount"].dtype) == "int64"
    assert frame["idigbio:itemCount"].sum() > 100


def test_simple_columns_take_gbifs_casing() -> None:
    # GBIF's SIMPLE_CSV / SIMPLE_PARQUET: text as published where the record has it, else
    # our index's value (higher taxa capitalised); ISO codes, ranks and the basisOfRecord
    # enum upper-cased.
    from downloader.build.plan import _SIMPLE_READ, _SIMPLE_TERMS, _simple_batches

    n = 3
    columns: dict[str, pa.Array] = {"coreid": pa.array(["a", "b", "c"])}
    for name in _SIMPLE_READ:
        columns[name] = pa.nulls(n, pa.string())
    columns["geopoint"] = pa.nulls(n, pa.struct([("lat", pa.float64()), ("lon", pa.float64())]))
    columns["datecollected"] = pa.nulls(n, pa.timestamp("us"))
    columns["hasImage"] = pa.array([True, False, None])
    columns["genus"] = pa.array(["acer", "quercus", None])
    columns["scientificname"] = pa.array(["acer rubrum l.", "quercus alba", None])
    columns["countrycode"] = pa.array(["us", "can", None])
    columns["taxonrank"] = pa.array(["species", None, "genus"])
    columns["basisofrecord"] = pa.array(["preservedspecimen", "fossilspecimen", "weird"])
    for term in _SIMPLE_TERMS:
        columns[term] = pa.nulls(n)  # a term no record publishes
    columns["dwc:scientificName"] = pa.array(["Acer rubrum L.", "  ", None])
    columns["dwc:genus"] = pa.array(["Acer", None, None])
    batch = pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))
    (out,) = list(_simple_batches([batch]))
    got = out.to_pydict()
    assert got["scientificName"] == ["Acer rubrum L.", "quercus alba", None]
    assert got["genus"] == ["Acer", "Quercus", None]
    assert got["countryCode"] == ["US", "CAN", None]
    assert got["taxonRank"] == ["SPECIES", None, "GENUS"]
    assert got["basisOfRecord"] == ["PRESERVED_SPECIMEN", "FOSSIL_SPECIMEN", "WEIRD"]
    assert got["gbifID"] == ["a", "b", "c"]
