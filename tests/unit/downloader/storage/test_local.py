"""Local archive storage: nothing is visible until publish, publish is a rename, keys are safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from downloader.interfaces import EXPORT_KEY_PREFIX
from downloader.storage.local import LocalStorage


def test_written_archive_appears_only_when_published(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "archives")
    writer = storage.open_writer("job1.zip")
    writer.write(b"partial")
    assert not storage.exists("job1.zip")
    assert not (tmp_path / "archives" / "job1.zip").exists()
    writer.write(b" and the rest")
    storage.publish("job1.zip", writer, content_type="application/zip", filename="x.zip")
    assert storage.exists("job1.zip")
    assert storage.path("job1.zip").read_bytes() == b"partial and the rest"
    # No temporary file is left behind.
    assert sorted(p.name for p in (tmp_path / "archives").iterdir()) == ["job1.zip"]


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    writer = storage.open_writer("job2.zip")
    writer.write(b"truncated")
    storage.discard("job2.zip", writer)
    assert list(tmp_path.iterdir()) == []
    assert not storage.exists("job2.zip")


def test_delete_and_stale_temporaries(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    writer = storage.open_writer("a.zip")
    storage.publish("a.zip", writer, content_type="application/zip", filename="a.zip")
    storage.delete("a.zip")
    storage.delete("a.zip")  # a missing key is not an error
    assert not storage.exists("a.zip")
    storage.open_writer("b.zip").close()  # a writer that died before publishing
    assert storage.remove_stale_temporaries() == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["../evil.zip", "a/b.zip", "", ".hidden", "x\n.zip"])
def test_keys_cannot_escape_the_directory(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        LocalStorage(tmp_path).open_writer(key)


def test_url_names_the_job_and_a_meaningful_file(tmp_path: Path) -> None:
    url = LocalStorage(tmp_path).url(
        "0b9f.zip", base_url="http://h:1/", filename="dwca-acer-0b9f.zip"
    )
    assert url == "http://h:1/archives/0b9f/dwca-acer-0b9f.zip"


def test_export_keys_are_plain_files_beside_downloads(tmp_path: Path) -> None:
    # Only S3 keeps exports apart (its lifecycle rule); here they stay where they always were.
    storage = LocalStorage(tmp_path / "archives")
    key = f"{EXPORT_KEY_PREFIX}job3.zip"
    writer = storage.open_writer(key)
    writer.write(b"export")
    storage.publish(key, writer, content_type="application/zip", filename="rs_1.zip")
    assert storage.path(key) == tmp_path / "archives" / "job3.zip"
    assert storage.exists(key) and storage.exists("job3.zip")
    assert storage.url(key, base_url="http://svc", filename="rs_1.zip") == (
        "http://svc/archives/job3/rs_1.zip"
    )
    with pytest.raises(ValueError):
        storage.path(f"{EXPORT_KEY_PREFIX}../job3.zip")
    storage.delete(key)
    assert not storage.exists("job3.zip")
