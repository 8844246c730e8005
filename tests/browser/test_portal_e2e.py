"""One real run of the page against ``downloader serve`` with the fixtures: the count is the
API's, Download builds an archive whose sha256 the page shows, the history survives a
reload, a box drawn with the mouse counts what the API counts, nothing is fetched from
another host, and no script fails."""

from __future__ import annotations

import hashlib
import json
import zipfile
from typing import Any

import pytest
import requests
from dwca.read import DwCAReader

from tests.browser.conftest import LiveServer, Watched, open_page
from tests.support.schemas import validate_eml, validate_meta

expect = pytest.importorskip("playwright.sync_api").expect


def api_count(server: LiveServer, rq: dict[str, Any]) -> int:
    doc = server.api("/v2/count", params={"rq": json.dumps(rq)}).json()
    return int(doc["records"])


def test_a_researcher_builds_downloads_and_finds_it_again(
    watched: Watched, live_server: LiveServer
) -> None:
    page = open_page(watched)
    # Build {"genus": "acer"} in the builder; the JSON view follows.
    page.select_option("#add-field", "genus")
    page.click("#add-row")
    page.fill("#rows li:last-child .values input", "acer")
    expected = api_count(live_server, {"genus": "acer"})
    assert expected > 3000
    expect(page.locator("#count")).to_contain_text(f"{expected:,} records")
    page.click("#tab-json")
    assert json.loads(page.input_value("#rq-json")) == {"genus": "acer"}
    page.click("#tab-builder")
    page.fill("#label", "maples")

    page.click("#download")
    page.wait_for_selector("#job:not([hidden])")
    expect(page.locator("#job-state")).to_have_text("ready", timeout=120_000)
    link = page.get_attribute("#job-link", "href")
    assert link and "/archives/" in link
    sha = page.text_content("#job-sha")
    archive = requests.get(link, timeout=60)
    assert archive.status_code == 200
    assert hashlib.sha256(archive.content).hexdigest() == sha
    # A valid archive: its XML against the schemas, its rows through python-dwca-reader.
    # (Not the local-name check: this iDigBio data publishes dc: and dcterms: terms with one
    # local name, which the verbatim file keeps as published.)
    path = live_server.data_dir / "from-the-page.zip"
    path.write_bytes(archive.content)
    with zipfile.ZipFile(path) as zf:
        validate_meta(zf.read("meta.xml"))
        validate_eml(zf.read("eml.xml"))
    with DwCAReader(str(path)) as reader:
        assert sum(1 for _ in reader) == expected
    assert f"{expected:,} records" in page.text_content("#job-counts")

    # After a reload the download is still listed, with its link and label.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    row = page.locator("#history-rows tr", has_text="maples")
    expect(row).to_have_count(1)
    assert row.locator("a", has_text="Download").get_attribute("href") == link
    # The address kept the query.
    assert json.loads(page.input_value("#rq-json")) == {"genus": "acer"}

    assert watched.foreign() == []
    assert watched.errors == []


def test_a_box_drawn_on_the_map_counts_what_the_api_counts(
    watched: Watched, live_server: LiveServer
) -> None:
    page = open_page(watched)
    page.click("[data-tool=box]")
    box = page.locator("#map").bounding_box()
    assert box is not None
    # From the middle of the map to its lower right: a large box over the Americas/Atlantic.
    x0, y0 = box["x"] + box["width"] * 0.15, box["y"] + box["height"] * 0.2
    x1, y1 = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    expect(page.locator("#box-n")).not_to_have_value("")
    north, south = float(page.input_value("#box-n")), float(page.input_value("#box-s"))
    west, east = float(page.input_value("#box-w")), float(page.input_value("#box-e"))
    assert north > south and west < east
    rq = json.loads(page.input_value("#rq-json"))
    assert rq["geopoint"] == {
        "type": "geo_bounding_box",
        "top_left": {"lat": north, "lon": west},
        "bottom_right": {"lat": south, "lon": east},
    }
    expected = api_count(live_server, rq)
    expect(page.locator("#count")).to_contain_text(f"{expected:,} records")
    assert expected > 0

    # Typed coordinates redraw the same query (and a box across 180° is kept as given).
    page.fill("#box-n", "10")
    page.fill("#box-s", "-10")
    page.fill("#box-w", "170")
    page.fill("#box-e", "-170")
    page.click("#box-apply")
    rq = json.loads(page.input_value("#rq-json"))
    assert rq["geopoint"]["top_left"] == {"lat": 10, "lon": 170}
    assert rq["geopoint"]["bottom_right"] == {"lat": -10, "lon": -170}
    expect(page.locator("#count")).to_contain_text(f"{api_count(live_server, rq):,} records")

    # WKT in, the same polygon out.
    page.fill("#geo-text", "POLYGON((-90 20, -60 20, -60 50, -90 50, -90 20))")
    page.click("#geo-text-apply")
    rq = json.loads(page.input_value("#rq-json"))
    assert rq["geopoint"]["type"] == "geo_polygon"
    assert rq["geopoint"]["points"] == [[-90, 20], [-60, 20], [-60, 50], [-90, 50]]
    expect(page.locator("#count")).to_contain_text(f"{api_count(live_server, rq):,} records")
    assert watched.foreign() == []
    assert watched.errors == []


def test_the_page_lives_at_portal_and_browsers_are_sent_there(live_server: LiveServer) -> None:
    page = requests.get(live_server.url + "/portal/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    redirect = requests.get(
        live_server.url + "/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30
    )
    assert redirect.status_code == 303 and redirect.headers["Location"] == "/portal/"
    # Scripts calling / keep today's JSON.
    assert requests.get(live_server.url + "/", timeout=30).json()["portal"].endswith("/portal/")


def test_phone_width_and_shared_links(browser: Any, live_server: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        rq = {"genus": "acer", "hasImage": True}
        page.goto(live_server.url + "/portal/?rq=" + json.dumps(rq) + "&form=dwca-tsv")
        page.wait_for_selector("body[data-ready=true]")
        assert page.input_value("#form") == "dwca-tsv"
        expect(page.locator("#count")).to_contain_text(f"{api_count(live_server, rq):,} records")
        # The sections fit the phone's width (one column, nothing wider than the screen).
        for section in ("#query", "#map-section", "#options", "#history"):
            box = page.locator(section).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 391, section
        assert page.locator("#download").is_visible()
        assert errors == []
    finally:
        context.close()
