"""write_archive end to end: every file, form and core type, the edges, and failure modes.

Every archive written here is re-read with python-dwca-reader (see ``helpers.read_archive``).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from archive import (
    ArchiveCancelled,
    ArchiveError,
    ArchiveResult,
    ArchiveSpec,
    Citation,
    Column,
    DataFile,
    dwca,
    write_archive,
    writer,
    zipstream,
)
from archive.models import Form
from tests.unit.archive.helpers import (
    EML_NS,
    TIMESTAMP,
    batch,
    data_file,
    eml_info,
    read_archive,
    read_bare,
    rows_of,
    spec,
)

RECORD_FIELDS = ["uuid", "scientificname", "geopoint", "datecollected", "hasImage", "recordids"]
MEDIA_FIELDS = ["uuid", "accessuri"]
RAW_TERMS = ["dwc:scientificName", "dwc:locality", "symbiota:verbatimScientificName"]
RECORD_TYPES = {
    "idigbio:geoPoint": pa.struct([("lat", pa.float64()), ("lon", pa.float64())]),
    "idigbio:eventDate": pa.timestamp("us"),
    "idigbio:hasImage": pa.bool_(),
    "idigbio:recordIds": pa.list_(pa.string()),
}


def record_rows() -> list[list[Any]]:
    """Three records with typed values, including nulls and values needing quotes."""
    return [
        [
            "r1",
            "r1",
            "acer rubrum",
            {"lat": 42.5, "lon": -71.25},
            datetime(1990, 5, 1),
            True,
            ["urn:a", "urn:b"],
        ],
        ["r2", "r2", 'acer "red", maple', None, None, False, []],
        [
            "r3",
            "r3",
            "érable\nrouge",
            {"lat": -0.0, "lon": 2.0},
            datetime(2001, 1, 2, 3, 4, 5),
            None,
            None,
        ],
    ]


def records_archive(form: Form = "dwca-csv", *, batch_rows: int = 2) -> ArchiveSpec:
    """The default download: records core (indexed), records raw, media and media raw."""
    ext = dwca.file_extension(form)
    rcols = dwca.index_columns("records", RECORD_FIELDS)
    rows = record_rows()
    rbatches = [
        batch(rcols, rows[i : i + batch_rows], **RECORD_TYPES) for i in range(0, 3, batch_rows)
    ]
    raw = dwca.raw_columns(RAW_TERMS)
    raw_rows: list[list[Any]] = [
        ["r1", "Acer rubrum L.", "Boston, MA", None],
        ["r2", "Acer\trubrum", 'the "old" mill', "x"],
        ["r3", "Érable rouge", None, None],
    ]
    mcols = dwca.index_columns("mediarecords", MEDIA_FIELDS)
    media_rows: list[list[Any]] = [
        ["r1", "m1", "https://img.example/1.jpg"],
        ["r1", "m2", "https://img.example/2.jpg"],
        ["r3", "m3", None],
    ]
    mraw = dwca.raw_columns(["ac:accessURI", "dcterms:format"])
    mraw_rows: list[list[Any]] = [
        ["r1", "https://img.example/1.jpg", "image/jpeg"],
        ["r1", "https://img.example/2.jpg", "image/jpeg"],
        ["r3", None, None],
    ]
    files = [
        data_file(f"occurrence.{ext}", rcols, rbatches, core=True),
        data_file(f"occurrence_raw.{ext}", raw, [batch(raw, raw_rows)]),
        data_file(
            f"multimedia.{ext}",
            mcols,
            [batch(mcols, media_rows)],
            kind="mediarecords",
            row_type=dwca.MULTIMEDIA,
        ),
        data_file(
            f"multimedia_raw.{ext}",
            mraw,
            [batch(mraw, mraw_rows)],
            kind="mediarecords",
            row_type=dwca.MULTIMEDIA,
        ),
    ]
    citations = [
        Citation(
            "records.citation.txt",
            '{"genus": "acer"}',
            3,
            {"rs-b": 1, "rs-a": 1, "rs-c": 1},
            "https://portal.example.org/recordsets/{id}",
        ),
        Citation(
            "mediarecords.citation.txt",
            '{"genus": "acer"}',
            3,
            {"rs-a": 3},
            "https://portal.example.org/recordsets/{id}",
        ),
    ]
    eml = eml_info(record_count=3, media_count=3, recordset_counts={"rs-a": 2, "rs-b": 1})
    return spec(files, form=form, citations=citations, eml=eml)


def write(path: Path, archive_spec: ArchiveSpec, **kwargs: Any) -> ArchiveResult:
    with path.open("wb") as sink:
        return write_archive(archive_spec, sink, **kwargs)


@pytest.mark.parametrize("form", ["dwca-csv", "dwca-tsv"])
def test_default_archive_has_every_file_linked_and_typed(tmp_path: Path, form: Form) -> None:
    archive_spec = records_archive(form)
    path = tmp_path / "a.zip"
    result = write(path, archive_spec)
    back = read_archive(path, archive_spec)
    ext = dwca.file_extension(form)

    assert back.names == [
        f"occurrence.{ext}",
        f"occurrence_raw.{ext}",
        f"multimedia.{ext}",
        f"multimedia_raw.{ext}",
        "records.citation.txt",
        "mediarecords.citation.txt",
        "citations.txt",
        "rights.txt",
        "eml.xml",
        "meta.xml",
    ]
    assert back.core_ids == ["r1", "r2", "r3"]
    first, second, third = back.core_rows
    term = "http://portal.idigbio.org/terms/"
    dwc = "http://rs.tdwg.org/dwc/terms/"
    assert first[f"{term}geoPoint"] == '{"lat": 42.5, "lon": -71.25}'
    assert json.loads(first[f"{term}geoPoint"]) == {"lat": 42.5, "lon": -71.25}
    assert first[f"{term}datecollected"] == "1990-05-01T00:00:00+00:00"
    assert first[f"{term}hasImage"] == "true"
    assert first[f"{term}recordIds"] == '["urn:a", "urn:b"]'
    assert second[f"{dwc}scientificName"] == 'acer "red", maple'
    assert second[f"{term}geoPoint"] == ""
    assert second[f"{term}recordIds"] == "[]"
    assert second[f"{term}hasImage"] == "false"
    assert third[f"{dwc}scientificName"] == "érable\nrouge"
    assert third[f"{term}geoPoint"] == '{"lat": -0.0, "lon": 2.0}'
    assert third[f"{term}datecollected"] == "2001-01-02T03:04:05+00:00"
    assert third[f"{term}hasImage"] == ""

    raw = back.extension_rows[f"occurrence_raw.{ext}"]
    assert back.extension_coreids[f"occurrence_raw.{ext}"] == ["r1", "r2", "r3"]
    assert raw[1][f"{dwc}locality"] == 'the "old" mill'
    assert raw[1][f"{dwc}scientificName"] == "Acer\trubrum"
    assert raw[1]["symbiota:verbatimScientificName"] == "x"
    assert back.extension_coreids[f"multimedia.{ext}"] == ["r1", "r1", "r3"]
    media = back.extension_rows[f"multimedia.{ext}"]
    assert media[0]["http://rs.tdwg.org/ac/terms/accessURI"] == "https://img.example/1.jpg"

    assert result.rows == {
        f"occurrence.{ext}": 3,
        f"occurrence_raw.{ext}": 3,
        f"multimedia.{ext}": 3,
        f"multimedia_raw.{ext}": 3,
    }
    assert (result.records, result.mediarecords) == (3, 3)
    content = path.read_bytes()
    assert result.size == len(content)
    assert result.sha256 == hashlib.sha256(content).hexdigest()


def test_citation_files_use_our_publisher_sorted_by_count_then_id(tmp_path: Path) -> None:
    archive_spec = records_archive()
    path = tmp_path / "a.zip"
    write(path, archive_spec)
    back = read_archive(path, archive_spec)
    assert back.texts["records.citation.txt"] == (
        "https://portal.example.org (2024),\n"
        'Query: {"genus": "acer"},\n'
        "3 records, accessed on 2024-05-01T12:30:15+00:00,\n"
        "contributed by 3 Recordsets, Recordset identifiers:\n"
        "https://portal.example.org/recordsets/rs-a (1 records)\n"
        "https://portal.example.org/recordsets/rs-b (1 records)\n"
        "https://portal.example.org/recordsets/rs-c (1 records)\n"
    )
    lines = back.texts["mediarecords.citation.txt"].splitlines()
    assert lines[-1] == "https://portal.example.org/recordsets/rs-a (3 records)"


def test_eml_states_query_counts_date_publisher_rights_and_citation(tmp_path: Path) -> None:
    archive_spec = records_archive()
    path = tmp_path / "a.zip"
    write(path, archive_spec)
    eml = read_archive(path, archive_spec).eml
    assert eml.get("packageId") == archive_spec.eml.package_id
    dataset = eml.find("dataset")
    assert dataset is not None
    assert dataset.findtext("title") == archive_spec.eml.title
    assert dataset.findtext("creator/organizationName") == "Example Biodiversity Portal"
    assert dataset.findtext("contact/onlineUrl") == "https://portal.example.org"
    assert dataset.findtext("pubDate") == "2024-05-01"
    abstract = " ".join(p.text or "" for p in dataset.findall("abstract/para"))
    assert '{"genus": "acer"}' in abstract
    assert "3 records" in abstract and "3 media records" in abstract
    assert "2 recordsets" in abstract
    rights = dataset.findtext("intellectualRights/para")
    assert rights == archive_spec.eml.intellectual_rights
    citation = eml.findtext("additionalMetadata/metadata/gbif/citation")
    assert citation is not None and citation.startswith("https://portal.example.org (2024),")
    assert eml.tag == f"{EML_NS}eml"


def test_eml_counts_are_the_rows_actually_written(tmp_path: Path) -> None:
    archive_spec = records_archive()
    stale = ArchiveSpec(
        archive_spec.form,
        archive_spec.files,
        archive_spec.citations,
        eml_info(record_count=999, media_count=999),
        archive_spec.timestamp,
    )
    path = tmp_path / "a.zip"
    write(path, stale)
    text = read_archive(path, stale).texts["eml.xml"]
    assert "3 records and 3 media records" in text
    assert "999" not in text


@pytest.mark.parametrize("form", ["csv", "tsv"])
def test_bare_forms_write_only_the_core_file(tmp_path: Path, form: Form) -> None:
    archive_spec = records_archive(form)
    path = tmp_path / f"download.{form}"
    result = write(path, archive_spec)
    content = path.read_bytes()
    assert not content.startswith(b"PK")
    rows = read_bare(path, archive_spec, tmp_path)
    assert rows[0] == [c.header for c in archive_spec.core.columns]
    assert [r[0] for r in rows[1:]] == ["r1", "r2", "r3"]
    assert rows[2][2] == 'acer "red", maple'
    assert rows[3][2] == "érable\nrouge"
    assert result.rows == {archive_spec.core.filename: 3}
    assert result.sha256 == hashlib.sha256(content).hexdigest()


def test_mediarecords_core(tmp_path: Path) -> None:
    mcols = dwca.index_columns("mediarecords", MEDIA_FIELDS)
    mraw = dwca.raw_columns(["ac:accessURI"])
    files = [
        data_file(
            "multimedia.csv",
            mcols,
            [batch(mcols, [["m1", "m1", "https://a/1"], ["m2", "m2", "https://a/2"]])],
            core=True,
            kind="mediarecords",
            row_type=dwca.MULTIMEDIA,
        ),
        data_file(
            "multimedia_raw.csv",
            mraw,
            [batch(mraw, [["m1", "https://a/1"], ["m2", "https://a/2"]])],
            kind="mediarecords",
            row_type=dwca.MULTIMEDIA,
        ),
    ]
    archive_spec = spec(files)
    path = tmp_path / "m.zip"
    result = write(path, archive_spec)
    back = read_archive(path, archive_spec)
    assert back.core_ids == ["m1", "m2"]
    assert 'rowType="http://rs.tdwg.org/ac/terms/Multimedia"' in back.texts["meta.xml"]
    assert (result.records, result.mediarecords) == (0, 2)


@pytest.mark.parametrize(
    ("core_type", "value_header", "values"),
    [
        ("uniquelocality", "dwc:locality", ["boston", "paris, france"]),
        ("uniquenames", "dwc:scientificName", ["acer rubrum", "acer saccharum"]),
    ],
)
def test_unique_value_cores_link_records_by_value_id(
    tmp_path: Path, core_type: dwca.UniqueCoreType, value_header: str, values: list[str]
) -> None:
    counts = pa.record_batch([pa.array(values), pa.array([2, 1], pa.int64())], names=["v", "n"])
    core_batches = list(dwca.unique_value_batches(core_type, [counts]))
    record_values = pa.array([values[0], values[1], values[0]])
    rcols = dwca.index_columns("records", ["uuid"])
    records = pa.record_batch(
        [dwca.unique_ids(core_type, record_values), pa.array(["r1", "r2", "r3"])],
        names=["coreid", "uuid"],
    )
    files = [
        data_file(
            dwca.unique_file_name(core_type),
            dwca.unique_columns(core_type),
            core_batches,
            core=True,
            kind="other",
            row_type=dwca.ROW_TYPES[core_type],
        ),
        data_file("occurrence.csv", rcols, [records]),
    ]
    archive_spec = spec(files)
    path = tmp_path / "u.zip"
    result = write(path, archive_spec)
    back = read_archive(path, archive_spec)
    assert back.core_ids == [dwca.unique_id(core_type, v) for v in values]
    value_term = dwca.unique_columns(core_type)[1].term_uri or ""
    assert [r[value_term] for r in back.core_rows] == values
    assert [r["http://portal.idigbio.org/terms/itemCount"] for r in back.core_rows] == ["2", "1"]
    assert back.extension_coreids["occurrence.csv"][2] == back.core_ids[0]
    assert result.rows[dwca.unique_file_name(core_type)] == 2
    assert result.records == 3
    assert dwca.unique_columns(core_type)[1].header == value_header


@pytest.mark.parametrize("form", ["dwca-csv", "dwca-tsv", "csv", "tsv"])
@pytest.mark.parametrize("batches", [[], "empty-batch"])
def test_empty_result_is_still_a_valid_archive(tmp_path: Path, form: Form, batches: Any) -> None:
    rcols = dwca.index_columns("records", RECORD_FIELDS)
    source = [] if batches == [] else [batch(rcols, [], **RECORD_TYPES)]
    raw = dwca.raw_columns(RAW_TERMS)
    ext = dwca.file_extension(form)
    files = [
        data_file(f"occurrence.{ext}", rcols, source, core=True),
        data_file(f"occurrence_raw.{ext}", raw, []),
    ]
    citations = [Citation("records.citation.txt", "{}", 0, {}, "")]
    archive_spec = spec(files, form=form, citations=citations)
    path = tmp_path / "empty"
    result = write(path, archive_spec)
    assert result.rows[f"occurrence.{ext}"] == 0
    assert result.records == 0
    if form.startswith("dwca"):
        back = read_archive(path, archive_spec)
        assert back.core_ids == []
        assert back.extension_rows[f"occurrence_raw.{ext}"] == []
        assert "0 records, accessed on" in back.texts["records.citation.txt"]
    else:
        assert read_bare(path, archive_spec, tmp_path) == [[c.header for c in rcols]]


def test_one_record(tmp_path: Path) -> None:
    rcols = dwca.index_columns("records", ["uuid"])
    files = [data_file("occurrence.csv", rcols, [batch(rcols, [["r1", "r1"]])], core=True)]
    archive_spec = spec(files)
    path = tmp_path / "one.zip"
    write(path, archive_spec)
    back = read_archive(path, archive_spec)
    assert back.core_ids == ["r1"]


@pytest.mark.parametrize("form", ["dwca-csv", "dwca-tsv"])
def test_awkward_text_survives_the_round_trip(tmp_path: Path, form: Form) -> None:
    values = [
        "plain",
        "comma, inside",
        'quote " inside',
        '"fully quoted"',
        "tab\tinside",
        "line\nbreak",
        "carriage\rreturn",
        "crlf\r\nboth",
        "unicode: 北京 Ærø 🦋 \u2028 end",
        " leading and trailing ",
        "",
        "\\backslash\\",
        '{"looks": "like json"}',
    ]
    columns = dwca.raw_columns(["dwc:locality"])
    rows = [[f"r{i}", v] for i, v in enumerate(values)]
    ext = dwca.file_extension(form)
    files = [data_file(f"occurrence_raw.{ext}", columns, [batch(columns, rows)], core=True)]
    archive_spec = spec(files, form=form)
    path = tmp_path / "awkward.zip"
    write(path, archive_spec)
    back = read_archive(path, archive_spec)
    assert [r["http://rs.tdwg.org/dwc/terms/locality"] for r in back.core_rows] == values
    with zipfile.ZipFile(path) as zf:
        content = zf.read(f"occurrence_raw.{ext}")
    assert rows_of(content, dwca.delimiter(form))[1:] == rows
    # Only the cells that need it are quoted (RFC 4180 minimal quoting).
    assert b"\nr0" + dwca.delimiter(form).encode() + b"plain\n" in content


def test_nulls_are_empty_cells(tmp_path: Path) -> None:
    rcols = dwca.index_columns("records", RECORD_FIELDS)
    rows = [["r1", None, None, None, None, None, None]]
    files = [data_file("occurrence.csv", rcols, [batch(rcols, rows, **RECORD_TYPES)], core=True)]
    archive_spec = spec(files)
    path = tmp_path / "nulls.zip"
    write(path, archive_spec)
    back = read_archive(path, archive_spec)
    assert set(back.core_rows[0].values()) == {""}
    with zipfile.ZipFile(path) as zf:
        assert zf.read("occurrence.csv").splitlines()[1] == b"r1,,,,,,"


def test_very_wide_raw_records(tmp_path: Path) -> None:
    terms = [f"dwc:term{i:03d}" for i in range(400)]
    columns = dwca.raw_columns(terms)
    rows: list[list[str | None]] = [
        [f"r{r}", *(f"v{r}-{i}" if (i + r) % 3 else None for i in range(400))] for r in range(50)
    ]
    files = [
        data_file(
            "occurrence_raw.csv",
            columns,
            [batch(columns, rows[:20]), batch(columns, rows[20:])],
            core=True,
        )
    ]
    archive_spec = spec(files)
    path = tmp_path / "wide.zip"
    write(path, archive_spec)
    back = read_archive(path, archive_spec)
    assert len(back.core_rows) == 50
    assert back.core_rows[7]["http://rs.tdwg.org/dwc/terms/term001"] == "v7-1"
    assert back.core_rows[7]["http://rs.tdwg.org/dwc/terms/term002"] == ""
    assert len(back.core_rows[0]) == 400


def test_same_input_gives_byte_identical_archives(tmp_path: Path) -> None:
    first = tmp_path / "1.zip"
    second = tmp_path / "2.zip"
    a = write(first, records_archive(batch_rows=1))
    b = write(second, records_archive(batch_rows=2))
    assert first.read_bytes() == second.read_bytes()
    assert a.sha256 == b.sha256
    with zipfile.ZipFile(first) as zf:
        assert {info.date_time for info in zf.infolist()} == {(2024, 5, 1, 12, 30, 14)}
    read_archive(first, records_archive())


def test_progress_counts_record_and_media_rows(tmp_path: Path) -> None:
    archive_spec = records_archive(batch_rows=1)
    seen: list[int] = []
    write(tmp_path / "p.zip", archive_spec, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == archive_spec.expected_rows({"records": 3, "mediarecords": 3}) == 12
    assert seen[:3] == [1, 2, 3]
    read_archive(tmp_path / "p.zip", archive_spec)


def test_cancel_between_batches(tmp_path: Path) -> None:
    archive_spec = records_archive(batch_rows=1)
    calls = 0

    def should_cancel() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    before = threading.active_count()
    with pytest.raises(ArchiveCancelled):
        write(tmp_path / "c.zip", archive_spec, should_cancel=should_cancel)
    assert threading.active_count() == before
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(tmp_path / "c.zip")


def test_unencodable_value_names_file_row_and_column(tmp_path: Path) -> None:
    columns = [
        Column("coreid", None),
        Column("dwc:locality", "http://rs.tdwg.org/dwc/terms/locality"),
    ]
    good = pa.record_batch(
        [pa.array(["r1", "r2"]), pa.array([b"ok", b"fine"], pa.binary())], names=["a", "b"]
    )
    bad = pa.record_batch(
        [pa.array(["r3", "r4"]), pa.array([b"ok", b"bad \xff byte"], pa.binary())],
        names=["a", "b"],
    )
    files = [data_file("occurrence_raw.csv", columns, [good, bad], core=True)]
    with pytest.raises(ArchiveError) as caught:
        write(tmp_path / "bad.zip", spec(files))
    message = str(caught.value)
    assert "occurrence_raw.csv" in message
    assert "'r4'" in message
    assert "'dwc:locality'" in message
    assert "UTF-8" in message
    assert (caught.value.filename, caught.value.coreid, caught.value.column) == (
        "occurrence_raw.csv",
        "r4",
        "dwc:locality",
    )


def test_unsupported_type_is_an_error_not_a_dropped_row(tmp_path: Path) -> None:
    columns = [Column("coreid", None), Column("x", "http://example.org/x")]
    weird = pa.record_batch([pa.array(["r1"]), pa.array([1], pa.duration("s"))], names=["a", "b"])
    with pytest.raises(ArchiveError, match=r"'r1'.*'x'.*duration"):
        write(tmp_path / "w.zip", spec([data_file("o.csv", columns, [weird], core=True)]))


def test_batch_with_wrong_width_is_an_error(tmp_path: Path) -> None:
    rcols = dwca.index_columns("records", ["uuid", "scientificname"])
    narrow = pa.record_batch([pa.array(["r1"]), pa.array(["r1"])], names=["a", "b"])
    with pytest.raises(
        ArchiveError, match=r"occurrence\.csv: a batch has 2 columns but the file has 3"
    ):
        write(tmp_path / "w.zip", spec([data_file("occurrence.csv", rcols, [narrow], core=True)]))


@pytest.mark.parametrize("cores", [0, 2])
def test_spec_needs_exactly_one_core(tmp_path: Path, cores: int) -> None:
    rcols = dwca.index_columns("records", ["uuid"])
    files = [data_file(f"f{i}.csv", rcols, [], core=i < cores) for i in range(2)]
    with pytest.raises(ArchiveError, match="exactly one core"):
        write(tmp_path / "x.zip", spec(files))


def test_duplicate_file_names_are_refused(tmp_path: Path) -> None:
    rcols = dwca.index_columns("records", ["uuid"])
    files = [
        data_file("occurrence.csv", rcols, [], core=True),
        data_file("occurrence.csv", rcols, []),
    ]
    with pytest.raises(ArchiveError, match="used twice"):
        write(tmp_path / "x.zip", spec(files))


def test_source_errors_propagate_and_stop_the_writer_thread(tmp_path: Path) -> None:
    rcols = dwca.index_columns("records", ["uuid"])

    def failing() -> Any:
        yield batch(rcols, [["r1", "r1"]])
        raise ConnectionError("search cluster went away")

    files = [DataFile("occurrence.csv", dwca.OCCURRENCE, rcols, failing, core=True)]
    before = threading.active_count()
    with pytest.raises(ConnectionError, match="went away"):
        write(tmp_path / "x.zip", spec(files))
    assert threading.active_count() == before


def test_sink_errors_propagate(tmp_path: Path) -> None:
    class FullDisk(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_archive(records_archive(), FullDisk())  # type: ignore[arg-type]


def test_archive_past_the_zip64_limits_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real 4 GiB case is in test_zipstream; here the limits are lowered so every ZIP64
    # structure appears in a small archive that python-dwca-reader must still read.
    monkeypatch.setattr(zipstream, "ZIP64_LIMIT", 100)
    monkeypatch.setattr(zipstream, "BUFFER_LIMIT", 64)
    archive_spec = records_archive()
    path = tmp_path / "z64.zip"
    write(path, archive_spec)
    back = read_archive(path, archive_spec)
    assert back.core_ids == ["r1", "r2", "r3"]
    content = path.read_bytes()
    assert b"PK\x06\x06" in content and b"PK\x06\x07" in content
    assert b"PK\x07\x08" in content


def test_timestamp_with_offset_is_stamped_in_utc(tmp_path: Path) -> None:
    from datetime import timedelta, timezone

    archive_spec = records_archive()
    local = TIMESTAMP.astimezone(timezone(timedelta(hours=-5)))
    shifted = ArchiveSpec(
        archive_spec.form, archive_spec.files, archive_spec.citations, archive_spec.eml, local
    )
    write(tmp_path / "a.zip", archive_spec)
    write(tmp_path / "b.zip", shifted)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert TIMESTAMP.tzinfo is UTC
    assert local.utcoffset() == timedelta(hours=-5)
    assert datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC) == local


def _many_pieces(monkeypatch: pytest.MonkeyPatch, encoders: int) -> None:
    """Cut every batch into pieces of at most 7 rows, encoded ``encoders`` at a time."""
    monkeypatch.setattr(writer, "CHUNK_ROWS", 7)
    monkeypatch.setattr(writer, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(writer, "ENCODERS", encoders)


def _numbered_file(rows: int, *, bad_row: int | None = None) -> DataFile:
    columns = [
        Column("coreid", None),
        Column("dwc:locality", "http://rs.tdwg.org/dwc/terms/locality"),
    ]
    ids = [f"r{i:04d}" for i in range(rows)]
    texts = [b"bad \xff" if i == bad_row else f"place, {i}".encode() for i in range(rows)]
    whole = pa.record_batch([pa.array(ids), pa.array(texts, pa.binary())], names=["a", "b"])
    batches = [whole.slice(start, 50) for start in range(0, rows, 50)]
    return data_file("occurrence_raw.csv", columns, batches, core=True)


@pytest.mark.parametrize("encoders", [1, 2, 3])
def test_pieces_encoded_at_once_are_written_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoders: int
) -> None:
    _many_pieces(monkeypatch, encoders)
    archive_spec = spec([_numbered_file(500)])
    seen: list[int] = []
    write(tmp_path / "o.zip", archive_spec, progress=seen.append)
    back = read_archive(tmp_path / "o.zip", archive_spec)
    assert back.core_ids == [f"r{i:04d}" for i in range(500)]
    assert seen == sorted(seen) and seen[-1] == 500
    with zipfile.ZipFile(tmp_path / "o.zip") as zf:
        content = zf.read("occurrence_raw.csv")
    assert rows_of(content)[1:] == [[f"r{i:04d}", f"place, {i}"] for i in range(500)]
    monkeypatch.setattr(writer, "ENCODERS", 1)
    monkeypatch.setattr(writer, "CHUNK_ROWS", 16_384)
    write(tmp_path / "one.zip", spec([_numbered_file(500)]))
    with zipfile.ZipFile(tmp_path / "one.zip") as zf:
        assert zf.read("occurrence_raw.csv") == content


def test_bad_value_in_a_piece_encoded_beside_others_names_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _many_pieces(monkeypatch, 3)
    before = threading.active_count()
    with pytest.raises(ArchiveError) as caught:
        write(tmp_path / "bad.zip", spec([_numbered_file(500, bad_row=333)]))
    assert (caught.value.coreid, caught.value.column) == ("r0333", "dwc:locality")
    assert threading.active_count() == before
