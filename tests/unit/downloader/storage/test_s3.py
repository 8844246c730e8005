"""S3Storage against moto's standalone S3 server (real HTTP, started on a free port)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from dwca.read import DwCAReader

from downloader.config import Settings, load_settings
from downloader.dispatch.celery_app import prepare_storage
from downloader.errors import ConfigError, StorageUnavailable
from downloader.interfaces import EXPORT_KEY_PREFIX
from downloader.storage.s3 import DEFAULT_PART_SIZE, LIFECYCLE_RULE_ID, S3Storage
from tests.support.redis_server import free_port
from tests.support.s3_server import running_s3

pytestmark = pytest.mark.integration

BUCKET = "dwca-test-archives"
FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "dwca"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with running_s3() as server:
        boto3.client("s3", endpoint_url=server.endpoint_url).create_bucket(Bucket=BUCKET)
        yield server.endpoint_url


@pytest.fixture
def storage(endpoint: str, request: pytest.FixtureRequest) -> S3Storage:
    # A prefix per test keeps the tests independent inside one bucket.
    return S3Storage(BUCKET, endpoint_url=endpoint, prefix=f"t/{request.node.name}/")


def _listed(storage: S3Storage) -> list[str]:
    client = boto3.client("s3", endpoint_url=storage._client.meta.endpoint_url)
    answer = client.list_objects_v2(Bucket=BUCKET, Prefix=storage.prefix)
    return [o["Key"] for o in answer.get("Contents", [])]


def _pending_uploads(storage: S3Storage) -> list[str]:
    answer = storage._client.list_multipart_uploads(Bucket=BUCKET, Prefix=storage.prefix)
    return [u["Key"] for u in answer.get("Uploads", [])]


def test_small_archive_appears_only_on_publish(storage: S3Storage) -> None:
    writer = storage.open_writer("small.zip")
    writer.write(b"PK" + b"x" * 1000)
    assert not storage.exists("small.zip")
    assert _listed(storage) == []
    storage.publish("small.zip", writer, content_type="application/zip", filename="small.zip")
    assert storage.exists("small.zip")
    assert _listed(storage) == [storage.object_key("small.zip")]


def _tags(storage: S3Storage, key: str) -> dict[str, str]:
    answer = storage._client.get_object_tagging(Bucket=BUCKET, Key=storage.object_key(key))
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


def test_a_small_archive_carries_its_sha256_as_metadata_and_tag(
    storage: S3Storage,
) -> None:
    body = b"PK" + os.urandom(5000)
    digest = hashlib.sha256(body).hexdigest()
    writer = storage.open_writer("sum.zip")
    writer.write(body)
    storage.publish(
        "sum.zip", writer, content_type="application/zip", filename="sum.zip", sha256=digest
    )
    head = storage._client.head_object(Bucket=BUCKET, Key=storage.object_key("sum.zip"))
    assert head["Metadata"]["sha256"] == digest
    # ChecksumSHA256 is sent too (S3 verifies and keeps it); moto neither checks nor keeps it.
    assert _tags(storage, "sum.zip") == {"sha256": digest}


def test_multipart_upload_streams_parts_and_is_invisible_until_complete(
    storage: S3Storage,
) -> None:
    payload = os.urandom(1024) * (DEFAULT_PART_SIZE * 2 // 1024 + 100)  # > 2 parts
    writer = storage.open_writer("big.zip")
    for start in range(0, len(payload), 1_000_000):
        writer.write(payload[start : start + 1_000_000])
    # Two full parts went up while writing, yet nothing is listed under the key.
    assert _pending_uploads(storage) == [storage.object_key("big.zip")]
    assert not storage.exists("big.zip")
    digest = hashlib.sha256(payload).hexdigest()
    storage.publish(
        "big.zip", writer, content_type="application/zip", filename="big.zip", sha256=digest
    )
    assert _pending_uploads(storage) == []
    # A multipart object's metadata is fixed before the hash is known: it is tagged.
    assert _tags(storage, "big.zip") == {"sha256": digest}
    body = requests.get(storage.url("big.zip", base_url="", filename="big.zip"), timeout=60)
    assert body.status_code == 200
    assert hashlib.sha256(body.content).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_discard_leaves_nothing_behind(storage: S3Storage) -> None:
    writer = storage.open_writer("gone.zip")
    writer.write(os.urandom(DEFAULT_PART_SIZE + 10))  # one part already uploaded
    assert _pending_uploads(storage)
    storage.discard("gone.zip", writer)
    assert _pending_uploads(storage) == []
    assert not storage.exists("gone.zip")
    assert _listed(storage) == []


def test_presigned_url_serves_a_readable_archive_with_its_filename(
    storage: S3Storage, tmp_path: os.PathLike[str]
) -> None:
    # zipfile writes through the non-seekable writer (data descriptors), as the builder does.
    source = Path(FIXTURES) / "dwca-simple-test-archive.zip"
    writer = storage.open_writer("job-1.zip")
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(writer, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    storage.publish("job-1.zip", writer, content_type="application/zip", filename="job-1.zip")

    url = storage.url("job-1.zip", base_url="http://ignored", filename="job-1.zip")
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200
    assert 'filename="job-1.zip"' in answer.headers["Content-Disposition"]
    target = Path(tmp_path) / "job-1.zip"
    with Path(target).open("wb") as fh:
        fh.write(answer.content)
    with DwCAReader(target) as dwca, DwCAReader(source) as original:
        assert len(list(dwca)) == len(list(original)) > 0
        assert dwca.descriptor.core.type == original.descriptor.core.type


def test_public_base_url_instead_of_presigning(endpoint: str) -> None:
    storage = S3Storage(
        BUCKET, endpoint_url=endpoint, prefix="pub/", public_base_url="https://dl.example.org/"
    )
    assert storage.url("a b.zip", base_url="", filename="a b.zip") == (
        "https://dl.example.org/pub/a%20b.zip"
    )


def test_delete_and_missing_keys(storage: S3Storage) -> None:
    writer = storage.open_writer("del.zip")
    writer.write(b"data")
    storage.publish("del.zip", writer, content_type="application/zip", filename="del.zip")
    storage.delete("del.zip")
    assert not storage.exists("del.zip")
    storage.delete("del.zip")  # a missing key is not an error
    with pytest.raises(FileNotFoundError):
        storage.size("del.zip")


def test_lifecycle_rule_expires_the_prefix_and_keeps_other_rules(endpoint: str) -> None:
    storage = S3Storage(BUCKET, endpoint_url=endpoint, prefix="downloads/")
    other = {"ID": "keep-me", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
             "Expiration": {"Days": 90}}  # fmt: skip
    storage._client.put_bucket_lifecycle_configuration(
        Bucket=BUCKET,
        LifecycleConfiguration={"Rules": [other]},  # type: ignore[list-item]  # plain dict rule
    )
    storage.apply_lifecycle(30)
    storage.apply_lifecycle(30)  # idempotent: one rule of ours
    rules = {r["ID"]: r for r in storage.lifecycle_rules()}
    assert set(rules) == {"keep-me", LIFECYCLE_RULE_ID}
    ours = rules[LIFECYCLE_RULE_ID]
    assert ours["Filter"]["Prefix"] == "downloads/"
    assert ours["Expiration"]["Days"] >= 30


def test_unreachable_store_is_transient() -> None:
    storage = S3Storage(BUCKET, endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(StorageUnavailable):
        storage.exists("x.zip")
    writer = storage.open_writer("x.zip")
    writer.write(b"abc")
    with pytest.raises(StorageUnavailable):
        storage.publish("x.zip", writer, content_type="application/zip", filename="x.zip")


def test_writer_belongs_to_its_key(storage: S3Storage) -> None:
    writer = storage.open_writer("one.zip")
    with pytest.raises(ValueError):
        storage.publish("two.zip", writer, content_type="application/zip", filename="two.zip")
    storage.discard("one.zip", writer)
    with pytest.raises(ValueError):
        writer.write(b"more")


def _rule_matches(rule: dict[str, object], object_key: str) -> bool:
    """Whether a lifecycle rule's filter selects ``object_key`` (prefix filters, as ours)."""
    flt = rule.get("Filter")
    prefix = flt.get("Prefix", "") if isinstance(flt, dict) else rule.get("Prefix", "")
    return object_key.startswith(str(prefix))


def test_exports_live_outside_the_lifecycle_rule(endpoint: str) -> None:
    storage = S3Storage(BUCKET, endpoint_url=endpoint, prefix="expiring/")
    for key in ("download-job.zip", f"{EXPORT_KEY_PREFIX}export-job.zip"):
        writer = storage.open_writer(key)
        writer.write(b"PK archive")
        storage.publish(key, writer, content_type="application/zip", filename="a.zip")
        assert storage.exists(key)
    storage.apply_lifecycle(30)
    ours = {r["ID"]: r for r in storage.lifecycle_rules()}[LIFECYCLE_RULE_ID]
    client = boto3.client("s3", endpoint_url=endpoint)
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    download_key = storage.object_key("download-job.zip")
    export_key = storage.object_key(f"{EXPORT_KEY_PREFIX}export-job.zip")
    assert {download_key, export_key} <= set(listed)
    assert export_key == "exports/export-job.zip"
    assert _rule_matches(ours, download_key)
    assert not _rule_matches(ours, export_key)
    # The export is reachable and removable through its key like any archive.
    url = storage.url(f"{EXPORT_KEY_PREFIX}export-job.zip", base_url="", filename="rs_1.zip")
    assert requests.get(url, timeout=30).content == b"PK archive"
    storage.delete(f"{EXPORT_KEY_PREFIX}export-job.zip")
    assert not storage.exists(f"{EXPORT_KEY_PREFIX}export-job.zip")
    assert storage.exists("download-job.zip")


@pytest.mark.parametrize(("prefix", "exports_prefix"), [("", "exports/"), ("a/", "a/exports/")])
def test_a_rule_that_would_expire_exports_is_refused(
    endpoint: str, prefix: str, exports_prefix: str
) -> None:
    storage = S3Storage(BUCKET, endpoint_url=endpoint, prefix=prefix, exports_prefix=exports_prefix)
    before = storage.lifecycle_rules()
    with pytest.raises(ValueError, match="exports"):
        storage.apply_lifecycle(30)
    assert storage.lifecycle_rules() == before


def _s3_settings(endpoint: str, bucket: str, **overrides: object) -> Settings:
    values = {"storage": "s3", "s3_bucket": bucket, "s3_endpoint_url": endpoint, **overrides}
    return load_settings({}, overrides=values)


def test_check_names_a_missing_bucket_and_the_setting_that_creates_it(endpoint: str) -> None:
    S3Storage(BUCKET, endpoint_url=endpoint).check()
    with pytest.raises(FileNotFoundError, match=r"no-such-bucket.*s3_create_bucket"):
        S3Storage("no-such-bucket", endpoint_url=endpoint).check()


def test_worker_start_refuses_a_missing_bucket(endpoint: str) -> None:
    with pytest.raises(ConfigError, match=r"missing-bucket-refused.*s3_create_bucket"):
        prepare_storage(_s3_settings(endpoint, "missing-bucket-refused"))
    buckets = boto3.client("s3", endpoint_url=endpoint).list_buckets()["Buckets"]
    assert "missing-bucket-refused" not in [b["Name"] for b in buckets]


def test_worker_start_creates_the_bucket_when_asked(endpoint: str) -> None:
    prepare_storage(_s3_settings(endpoint, "created-at-start", s3_create_bucket=True))
    storage = S3Storage("created-at-start", endpoint_url=endpoint)
    storage.check()
    rules = boto3.client("s3", endpoint_url=endpoint).get_bucket_lifecycle_configuration(
        Bucket="created-at-start"
    )["Rules"]
    assert LIFECYCLE_RULE_ID in [r["ID"] for r in rules]
