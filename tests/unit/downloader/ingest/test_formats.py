"""What the TDWG text guide allows and portals write: descriptors, encodings, line ends,
headerless files, Event cores; and bad input named by file and line, never half loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from downloader.ingest.load import ingest_archive, store_path
from downloader.ingest.read import ArchiveRejected
from downloader.ingest.stage import MalformedRows
from tests.unit.downloader.ingest.helpers import rows

DWC = "http://rs.tdwg.org/dwc/terms/"
ROOT = Path(__file__).resolve().parents[4]


def block(
    tag: str,
    location: str,
    terms: list[str],
    *,
    row_type: str = DWC + "Occurrence",
    id_tag: str = "id",
    attrs: str = 'fieldsTerminatedBy="," fieldsEnclosedBy="&quot;" ignoreHeaderLines="1"',
    encoding: str = "UTF-8",
) -> str:
    fields = "".join(
        f'<field index="{i + 1}" term="{t if "://" in t else DWC + t}"/>'
        for i, t in enumerate(terms)
    )
    return (
        f'<{tag} encoding="{encoding}" {attrs} linesTerminatedBy="\\n" rowType="{row_type}">'
        f'<files><location>{location}</location></files><{id_tag} index="0"/>{fields}</{tag}>'
    )


def archive(
    tmp_path: Path, name: str, blocks: list[str], files: dict[str, bytes], **kw: str
) -> Path:
    path = tmp_path / name
    meta_attrs = "".join(f' {k}="{v}"' for k, v in kw.items())
    meta = (
        f'<archive xmlns="http://rs.tdwg.org/dwc/text/"{meta_attrs}>'
        + "".join(blocks)
        + "</archive>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.xml", meta)
        for member, data in files.items():
            zf.writestr(member, data)
    return path


def occurrence_archive(
    tmp_path: Path, body: bytes, *, encoding: str = "UTF-8", eol: bytes = b"\n", **kw: str
) -> Path:
    terms = ["scientificName", "locality"]
    return archive(
        tmp_path,
        "a.zip",
        [block("core", "occurrence.csv", terms, encoding=encoding)],
        {"occurrence.csv": b"id,scientificName,locality" + eol + body},
        **kw,
    )


def test_crlf_lines_and_line_breaks_inside_quoted_cells(tmp_path: Path) -> None:
    body = b'1,Acer rubrum,"a field\r\nby the river"\r\n2,"Quercus ""alba""",x\r\n'
    result = ingest_archive(tmp_path, occurrence_archive(tmp_path, body, eol=b"\r\n"))
    assert result.records == 2
    got = rows(tmp_path, "SELECT data FROM records ORDER BY data->>'dwc:locality'")
    values = [json.loads(d) for (d,) in got]
    assert values[0]["dwc:locality"] == "a field\r\nby the river"
    assert values[1]["dwc:scientificName"] == 'Quercus "alba"'
    assert rows(tmp_path, "SELECT count(*) FROM records WHERE genus = 'acer'") == [(1,)]


def test_a_cell_of_megabytes_loads_whole(tmp_path: Path) -> None:
    """Lines up to 16 MB are read (real archives carry long remarks or JSON cells): the
    CSV reader's buffers, sized for the staging memory, still hold such a line."""
    locality = "river bank " * 600_000  # 6.6 MB
    body = f"1,Acer rubrum,{locality}\n2,Quercus alba,x\n".encode()
    assert ingest_archive(tmp_path, occurrence_archive(tmp_path, body)).records == 2
    assert rows(tmp_path, "SELECT strlen(data->>'dwc:locality') FROM records ORDER BY 1") == [
        (1,),
        (len(locality),),
    ]


def test_declared_latin_1_and_windows_1252_are_decoded(tmp_path: Path) -> None:
    latin = occurrence_archive(
        tmp_path, "1,Acer rubrum,Bogotá\n".encode("latin-1"), encoding="ISO-8859-1"
    )
    ingest_archive(tmp_path / "a", latin)
    assert rows(tmp_path / "a", "SELECT locality FROM records") == [("bogotá",)]
    cp = occurrence_archive(
        tmp_path, "1,Acer rubrum,“Bogotá”\n".encode("cp1252"), encoding="windows-1252"
    )
    ingest_archive(tmp_path / "b", cp)
    assert rows(tmp_path / "b", "SELECT data->>'dwc:locality' FROM records") == [("“Bogotá”",)]


def test_files_without_header_lines(tmp_path: Path) -> None:
    path = archive(
        tmp_path,
        "h.zip",
        [
            block(
                "core",
                "occ.txt",
                ["scientificName", "country"],
                attrs='fieldsTerminatedBy="\\t" fieldsEnclosedBy="" ignoreHeaderLines="0"',
            )
        ],
        {"occ.txt": b"1\tAcer rubrum\tCanada\n2\tAcer saccharum\t\n"},
    )
    assert ingest_archive(tmp_path, path).records == 2
    assert rows(tmp_path, "SELECT country FROM records ORDER BY country NULLS LAST") == [
        ("canada",),
        (None,),
    ]


def test_a_metadata_attribute_naming_a_missing_file_warns_and_loads(tmp_path: Path) -> None:
    path = occurrence_archive(tmp_path, b"1,Acer rubrum,x\n", metadata="eml.xml")
    result = ingest_archive(tmp_path, path)
    assert result.records == 1
    assert any("eml.xml" in w and "not in the archive" in w for w in result.warnings)


def test_event_core_occurrences_inherit_their_event(tmp_path: Path) -> None:
    path = archive(
        tmp_path,
        "event.zip",
        [
            block(
                "core",
                "event.txt",
                ["eventDate", "country", "samplingProtocol"],
                row_type=DWC + "Event",
            ),
            block(
                "extension",
                "occurrence.txt",
                ["occurrenceID", "scientificName", "country"],
                id_tag="coreid",
            ),
        ],
        {
            "event.txt": b"id,eventDate,country,protocol\nE1,1999-05-01,Canada,trap\n"
            b"E2,2001-07-02,Mexico,net\n",
            "occurrence.txt": b"eventID,occurrenceID,scientificName,country\n"
            b"E1,o1,Acer rubrum,\nE1,o2,Acer saccharum,\nE2,o3,Quercus alba,Belize\n",
        },
    )
    result = ingest_archive(tmp_path, path)
    assert result.records == 3
    got = rows(
        tmp_path,
        "SELECT data->>'dwc:occurrenceID', country, year(datecollected), "
        "data->>'dwc:samplingProtocol' FROM records ORDER BY 1",
    )
    # The event's terms fill in; the occurrence's own value wins (o3 is in Belize).
    assert got == [
        ("o1", "canada", 1999, "trap"),
        ("o2", "canada", 1999, "trap"),
        ("o3", "belize", 2001, "net"),
    ]


def test_a_checklist_is_refused_saying_it_holds_no_occurrences(tmp_path: Path) -> None:
    path = archive(
        tmp_path,
        "taxa.zip",
        [block("core", "taxon.txt", ["scientificName"], row_type=DWC + "Taxon")],
        {"taxon.txt": b"id,scientificName\n1,Acer\n"},
    )
    with pytest.raises(ArchiveRejected, match=r"Taxon \(a checklist\).*no Occurrence file"):
        ingest_archive(tmp_path, path)


def test_a_row_with_the_wrong_number_of_fields_is_named_and_nothing_loads(
    tmp_path: Path,
) -> None:
    good = occurrence_archive(tmp_path, b"1,Acer rubrum,x\n")
    ingest_archive(tmp_path, good)
    bad = archive(
        tmp_path,
        "bad.zip",
        [block("core", "occurrence.csv", ["scientificName", "locality"])],
        {"occurrence.csv": b"id,scientificName,locality\n1,Acer,x\n2,Quercus,y,extra\n3,Pinus,z\n"},
    )
    with pytest.raises(MalformedRows) as info:
        ingest_archive(tmp_path, bad, recordset="a")
    message = str(info.value)
    assert "occurrence.csv" in message and "line 3" in message and "4 fields" in message
    assert "--skip-bad-rows" in message
    # The recordset is still its first version.
    assert rows(tmp_path, "SELECT version, record_count FROM recordsets") == [(1, 1)]
    result = ingest_archive(tmp_path, bad, recordset="a", skip_bad_rows=True)
    assert (result.records, result.skipped) == (2, (("occurrence.csv", 1),))


def test_bytes_invalid_in_the_declared_encoding_are_named(tmp_path: Path) -> None:
    bad = occurrence_archive(tmp_path, b"1,Acer rubrum,ok\n2,Acer,caf\xe9\n")
    with pytest.raises(MalformedRows, match=r"occurrence\.csv.*line 3.*not valid"):
        ingest_archive(tmp_path, bad)
    assert not store_path(tmp_path).exists() or rows(tmp_path, "SELECT count(*) FROM records") == [
        (0,)
    ]
    transcoded = occurrence_archive(tmp_path, b"1,Acer,ok\n2,Acer,\x81\n", encoding="windows-1252")
    with pytest.raises(
        MalformedRows, match=r"occurrence\.csv line 3: bytes that are not valid cp1252"
    ):
        ingest_archive(tmp_path, transcoded)


def test_a_killed_ingest_leaves_the_previous_version_whole(tmp_path: Path) -> None:
    first = occurrence_archive(tmp_path, b"1,Acer rubrum,x\n2,Acer saccharum,y\n")
    ingest_archive(tmp_path, first, recordset="rs")
    second = archive(
        tmp_path,
        "b.zip",
        [block("core", "occurrence.csv", ["scientificName", "locality"])],
        {"occurrence.csv": b"id,scientificName,locality\n" + b"".join(
            b"%d,Quercus alba,z\n" % i for i in range(5000)
        )},
    )  # fmt: skip
    # The ingest kills itself with SIGKILL inside the write transaction, after the new rows
    # went in and just before the version is committed.
    script = (
        "import os, signal, sys\n"
        "from downloader.ingest import load\n"
        "def die(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "load.bump_data_version = die\n"
        "load.ingest_archive(sys.argv[1], sys.argv[2], recordset='rs')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(second)],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert rows(tmp_path, "SELECT version, record_count FROM recordsets") == [(1, 2)]
    assert rows(tmp_path, "SELECT count(*), min(version) FROM records") == [(2, 1)]
    assert rows(tmp_path, "SELECT genus FROM records ORDER BY genus") == [("acer",), ("acer",)]
    # The killed ingest's staging folder is removed by the next one, which loads whole.
    assert list(tmp_path.glob(".ingest-*"))
    result = ingest_archive(tmp_path, second, recordset="rs")
    assert (result.version, result.records) == (2, 5000)
    assert not list(tmp_path.glob(".ingest-*"))
