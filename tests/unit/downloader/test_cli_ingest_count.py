"""`downloader ingest` and `downloader count` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from downloader.cli import main
from tests.unit.downloader.cli_support import cli_count

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dwca"
DEMO = str(FIXTURES / "demo-occurrence-multimedia.zip")
GBIF = str(FIXTURES / "gbif-results.zip")
TAXON = str(FIXTURES / "dwca-star-test-archive.zip")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("cli")
    assert main(["ingest", "--data-dir", str(d), DEMO, GBIF, "--synthetic", "3000"]) == 0
    return str(d)


def test_ingest_prints_a_summary_per_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", "--data-dir", str(tmp_path), DEMO]) == 0
    out = capsys.readouterr().out
    assert "version 1: 60 records, 38 media records" in out
    assert main(["ingest", "--data-dir", str(tmp_path), DEMO]) == 0
    assert "version 2: 60 records" in capsys.readouterr().out


def test_taxon_core_fails_clearly_and_others_still_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", "--data-dir", str(tmp_path), TAXON, DEMO]) == 1
    captured = capsys.readouterr()
    assert "dwca-star-test-archive.zip" in captured.err
    assert "http://rs.tdwg.org/dwc/terms/Taxon" in captured.err
    assert "Traceback" not in captured.err
    assert "60 records" in captured.out


def test_skip_unsupported_warns_and_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ingest", "--data-dir", str(tmp_path), "--skip-unsupported", TAXON, DEMO]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "Taxon" in captured.err
    assert "60 records" in captured.out
    missing = str(tmp_path / "missing.zip")
    assert main(["ingest", "--data-dir", str(tmp_path), "--skip-unsupported", missing]) == 0


def test_if_empty_skips_a_filled_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--data-dir", str(tmp_path), "--if-empty", DEMO]) == 0
    assert "60 records" in capsys.readouterr().out
    assert main(["ingest", "--data-dir", str(tmp_path), "--if-empty", GBIF]) == 0
    assert "already holds 60 records" in capsys.readouterr().out


def test_ingest_without_anything_to_load_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["ingest", "--data-dir", str(tmp_path)]) == 2


def test_count_human_readable(data_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--data-dir", data_dir, '{"genus": "Acer"}']) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("media records") and " records, " in out


@pytest.mark.parametrize(
    "rq",
    [
        {"genus": "acer"},
        {"genus": ["acer", "quercus"]},
        {"commonname": {"type": "exists"}},
        {"continent": {"type": "missing"}},
        {"datecollected": {"type": "range", "gte": "1900", "lte": "1950-06"}},
        {"minelevation": {"type": "range", "gte": 100, "lt": 900}},
        {"family": {"type": "prefix", "value": "Sapind"}},
        {"data": {"type": "fulltext", "value": "red maple"}},
        {"hasImage": True},
        {
            "geopoint": {
                "type": "geo_bounding_box",
                "top_left": {"lat": 50, "lon": -130},
                "bottom_right": {"lat": 25, "lon": -60},
            }
        },
        {"geopoint": {"type": "geo_distance", "distance": "1000km", "lat": 40, "lon": -100}},
        {
            "geopoint": {
                "type": "geo_polygon",
                "value": [[-130, 25], [-60, 25], [-60, 50], [-130, 50], [-130, 25]],
            }
        },
        {"data.dwc:basisOfRecord": "preservedspecimen"},
        {"flags": "geopoint_0_coord"},
    ],
)
def test_count_every_query_type(data_dir: str, rq: dict[str, object]) -> None:
    records, _ = cli_count(data_dir, rq)
    everything, _ = cli_count(data_dir, {})
    assert 0 < records < everything


def test_count_with_mq(data_dir: str) -> None:
    records, media = cli_count(data_dir, {"genus": "acer"}, {"format": "image/jpeg"})
    all_acer, acer_media = cli_count(data_dir, {"genus": "acer"})
    assert 0 < records < all_acer
    assert media == acer_media


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (['{"genusx": "acer"}'], "genusx"),
        (["{bad json"], "not valid JSON"),
        (["[1, 2]"], "JSON object"),
        (
            ['{"geopoint": {"type": "geo_distance", "distance": "1km", "lat": 200, "lon": 0}}'],
            "lat",
        ),
        (["{}", "--mq", '{"nosuch": 1}'], "nosuch"),
    ],
)
def test_bad_query_exits_2_with_message_and_no_traceback(
    data_dir: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["count", "--data-dir", data_dir, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
