"""Archive storage in S3 (or any S3-compatible store: MinIO, Ceph RGW, ...), through boto3.

This is the only module that imports boto3. Vendor errors are translated here: a missing key
becomes :class:`FileNotFoundError`, a 5xx answer, throttling or a broken connection becomes
:class:`~downloader.errors.StorageUnavailable` (transient: the Celery task retries it), and
anything else (access denied, a missing bucket) an :class:`OSError` that names the problem.

An archive is streamed into a multipart upload while it is being built: parts of at least
``part_size`` bytes (8 MiB by default, S3's minimum is 5 MiB) are uploaded as they fill, by a
small thread pool so that compressing and uploading overlap. S3 shows nothing under the key
until the upload is completed, which is what :meth:`S3Storage.publish` does; an aborted upload
(:meth:`S3Storage.discard`) leaves nothing behind. Archives smaller than one part are sent with
a single ``PutObject`` at publish time, which is just as atomic.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import mimetypes
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from downloader.errors import StorageUnavailable
from downloader.interfaces import EXPORT_KEY_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

#: Default multipart part size. S3 needs >= 5 MiB for every part but the last, and allows at
#: most 10,000 parts, so 8 MiB parts carry archives up to ~78 GiB; larger archives grow the
#: part size on the fly (see ``_S3Writer._next_part_size``).
DEFAULT_PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000
#: SigV4 presigned URLs live at most seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: The lifecycle rule this service owns in the bucket's lifecycle configuration.
LIFECYCLE_RULE_ID = "dwca-downloader-expire-archives"

#: Error codes S3 and compatible stores use for conditions a retry may fix.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
    }
)
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchUpload"})

T = TypeVar("T")


def _translate(exc: Exception, what: str) -> Exception:
    """Our exception for a boto3/botocore failure while doing ``what``."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = error.get("Message") or code or str(exc)
        if status >= 500 or code in _TRANSIENT_CODES:
            return StorageUnavailable(f"S3 is unavailable while {what}: {message}")
        if code in _MISSING_CODES or status == 404:
            return FileNotFoundError(f"S3 has no such object while {what}: {message}")
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return PermissionError(f"S3 refused access while {what}: {message}")
        return OSError(f"S3 error while {what}: {code} {message}".strip())
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return StorageUnavailable(f"S3 cannot be reached while {what}: {exc}")
    return OSError(f"S3 client error while {what}: {exc}")


def _call(what: str, func: Callable[..., T], /, **kwargs: Any) -> T:
    """Call one boto3 method, translating its errors at this edge."""
    try:
        return func(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, what) from exc


class _S3Writer(io.RawIOBase):
    """A write-only binary file whose bytes go to an S3 multipart upload, part by part.

    Not seekable, but it reports its position through :meth:`tell` (``zipfile`` then writes
    data descriptors instead of seeking back, and the archive stays a stream). Uploads run on
    at most ``concurrency`` threads; at most that many parts wait in memory.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        object_key: str,
        *,
        part_size: int,
        content_type: str,
        concurrency: int = 2,
    ) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self.object_key = object_key
        self._part_size = part_size
        self.content_type = content_type
        self._buffer = bytearray()
        self._position = 0
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
        self._concurrency = concurrency
        self._lock = threading.Lock()
        self.finished = False

    # -- the file interface ------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def write(self, data: Any) -> int:  # bytes-like, as IO[bytes] allows
        if self.closed or self.finished:
            raise ValueError("write to a finished S3 upload")
        view = memoryview(data).cast("B")
        self._buffer += view
        self._position += len(view)
        while len(self._buffer) >= self._part_size:
            chunk = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            self._submit_part(chunk)
        return len(view)

    # -- the upload ----------------------------------------------------------------------

    def _ensure_upload(self) -> str:
        if self._upload_id is None:
            response = _call(
                f"starting the upload of {self.object_key}",
                self._client.create_multipart_upload,
                Bucket=self._bucket,
                Key=self.object_key,
                ContentType=self.content_type,
            )
            self._upload_id = response["UploadId"]
        return self._upload_id

    def _submit_part(self, chunk: bytes) -> None:
        upload_id = self._ensure_upload()
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise OSError(f"archive {self.object_key} needs more than {MAX_PARTS} parts")
        # Bound memory: wait for the oldest outstanding part before queueing another, and
        # surface an upload error as early as possible.
        pending = [f for f in self._parts if not f.done()]
        if len(pending) >= self._concurrency:
            pending[0].result()
        for done in self._parts:
            if done.done() and done.exception() is not None:
                done.result()
        self._parts.append(self._pool.submit(self._upload_part, upload_id, number, chunk))
        self._part_size = self._next_part_size()

    def _next_part_size(self) -> int:
        """Grow parts once the upload has used most of S3's 10,000 parts at this size."""
        used = len(self._parts)
        if used and used % 1000 == 0:
            projected = self._position * MAX_PARTS // max(used, 1)
            if projected > self._part_size * (MAX_PARTS - used):
                return self._part_size * 2
        return self._part_size

    def _upload_part(self, upload_id: str, number: int, chunk: bytes) -> dict[str, Any]:
        response = _call(
            f"uploading part {number} of {self.object_key}",
            self._client.upload_part,
            Bucket=self._bucket,
            Key=self.object_key,
            UploadId=upload_id,
            PartNumber=number,
            Body=chunk,
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def complete(self, *, content_type: str, filename: str, sha256: str | None = None) -> None:
        """Upload what is left and make the object visible (with ``sha256`` recorded, see
        :meth:`S3Storage.publish`)."""
        if self.finished:
            raise ValueError(f"upload of {self.object_key} already finished")
        try:
            if self._upload_id is None:
                # Smaller than one part: a single PutObject is atomic too.
                extra: dict[str, Any] = {}
                if sha256:
                    # S3 checks the body against ChecksumSHA256 and keeps it (GetObject with
                    # ChecksumMode=ENABLED returns it); the metadata and tag say it in hex.
                    extra = {
                        "ChecksumSHA256": base64.b64encode(bytes.fromhex(sha256)).decode(),
                        "Metadata": {"sha256": sha256},
                        "Tagging": f"sha256={sha256}",
                    }
                _call(
                    f"uploading {self.object_key}",
                    self._client.put_object,
                    Bucket=self._bucket,
                    Key=self.object_key,
                    Body=bytes(self._buffer),
                    ContentType=content_type,
                    ContentDisposition=_content_disposition(filename),
                    **extra,
                )
            else:
                if self._buffer or not self._parts:
                    self._submit_part(bytes(self._buffer))
                self._buffer.clear()
                parts = [f.result() for f in self._parts]
                _call(
                    f"completing the upload of {self.object_key}",
                    self._client.complete_multipart_upload,
                    Bucket=self._bucket,
                    Key=self.object_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )
                if sha256:
                    self._tag_sha256(sha256)
                if content_type != self.content_type:
                    log.warning(
                        "archive %s was uploaded as %s, not %s (the type is fixed when a "
                        "multipart upload starts)",
                        self.object_key,
                        self.content_type,
                        content_type,
                    )
        except BaseException:
            self.abort()
            raise
        self.finished = True
        self._pool.shutdown(wait=True)
        super().close()

    def _tag_sha256(self, sha256: str) -> None:
        """Tag a completed multipart object with its sha256. Its metadata is fixed when the
        upload starts, before the hash is known, and S3's own checksum of a multipart object
        is a checksum of part checksums; a tag can be added afterwards without copying.
        Best effort: without ``s3:PutObjectTagging`` the archive is still whole, and the
        job (status ``checksum``, the download link's ``ETag``) keeps the sha256."""
        try:
            _call(
                f"tagging {self.object_key}",
                self._client.put_object_tagging,
                Bucket=self._bucket,
                Key=self.object_key,
                Tagging={"TagSet": [{"Key": "sha256", "Value": sha256}]},
            )
        except (OSError, StorageUnavailable) as exc:
            log.warning("could not tag %s with its sha256: %s", self.object_key, exc)

    def abort(self) -> None:
        """Throw the upload away; S3 frees the parts already sent."""
        if self.finished:
            return
        self.finished = True
        for future in self._parts:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._buffer.clear()
        if self._upload_id is not None:
            try:
                _call(
                    f"aborting the upload of {self.object_key}",
                    self._client.abort_multipart_upload,
                    Bucket=self._bucket,
                    Key=self.object_key,
                    UploadId=self._upload_id,
                )
            except (OSError, StorageUnavailable):
                # The bucket's lifecycle rule also aborts incomplete uploads after a day,
                # so a failed abort costs storage for a while, never a visible archive.
                log.warning("could not abort the upload of %s", self.object_key, exc_info=True)
        super().close()

    def close(self) -> None:
        """Closing without :meth:`complete` must not publish anything: it aborts."""
        if not self.finished:
            self.abort()
        super().close()


def _content_disposition(filename: str) -> str:
    """An ``attachment`` header value that survives any file name (RFC 6266 / 5987)."""
    ascii_name = filename.encode("ascii", "replace").decode("ascii").replace('"', "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


class S3Storage:
    """Archives in an S3 bucket under ``prefix``; download URLs are presigned (or public).

    ``endpoint_url`` points at any S3-compatible store (empty: AWS). Keys handed to this
    class are relative (``<job id>.zip``); the object key is ``prefix + key``. Recordset
    exports (keys under :data:`~downloader.interfaces.EXPORT_KEY_PREFIX`) go under
    ``exports_prefix`` instead, outside ``prefix`` and so outside the lifecycle rule that
    expires downloads: an export is kept until an admin deletes it.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str = "",
        region: str = "us-east-1",
        prefix: str = "",
        exports_prefix: str = "exports/",
        public_base_url: str = "",
        presign_seconds: int = MAX_PRESIGN_SECONDS,
        part_size: int = DEFAULT_PART_SIZE,
        max_attempts: int = 5,
        client: S3Client | None = None,
    ) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix
        self.exports_prefix = exports_prefix
        self.public_base_url = public_base_url.rstrip("/")
        self.presign_seconds = min(int(presign_seconds), MAX_PRESIGN_SECONDS)
        self.part_size = part_size
        if client is None:
            config = Config(
                region_name=region or None,
                signature_version="s3v4",
                # Adaptive retries absorb throttling and brief 5xx bursts inside one call;
                # what still fails becomes StorageUnavailable and the task retries later.
                retries={"max_attempts": max_attempts, "mode": "adaptive"},
                connect_timeout=10,
                read_timeout=120,
                # Path-style addressing works with every S3-compatible store (MinIO, Ceph)
                # and with endpoints that have no wildcard DNS; AWS itself keeps virtual.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
            )
            client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)
        self._client: S3Client = client

    def object_key(self, key: str) -> str:
        """The bucket key of a relative archive key (an export's under ``exports_prefix``)."""
        if key.startswith(EXPORT_KEY_PREFIX):
            return f"{self.exports_prefix}{key.removeprefix(EXPORT_KEY_PREFIX)}"
        return f"{self.prefix}{key}"

    # -- the Storage port --------------------------------------------------------------

    def open_writer(self, key: str) -> IO[bytes]:
        """A writer streaming into a multipart upload; nothing is visible until publish."""
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        writer = _S3Writer(
            self._client,
            self.bucket,
            self.object_key(key),
            part_size=self.part_size,
            content_type=content_type,
        )
        return writer  # type: ignore[return-value]  # RawIOBase is a binary file; typeshed keeps them apart

    def publish(
        self,
        key: str,
        writer: IO[bytes],
        *,
        content_type: str,
        filename: str,
        sha256: str | None = None,
    ) -> None:
        """Complete the upload: the archive appears under ``key`` whole or not at all.

        ``sha256`` (hex) goes with the object: as the tag ``sha256`` always, and for an
        archive sent in one PutObject also as ``x-amz-meta-sha256`` and S3's own
        ``ChecksumSHA256``, which S3 verifies against the bytes it received."""
        s3_writer = self._own_writer(key, writer)
        s3_writer.complete(content_type=content_type, filename=filename, sha256=sha256)

    def discard(self, key: str, writer: IO[bytes]) -> None:
        """Abort the upload; no part of it ever becomes visible."""
        self._own_writer(key, writer).abort()

    def exists(self, key: str) -> bool:
        """Whether a published archive is under ``key``."""
        try:
            _call(
                f"checking {key}",
                self._client.head_object,
                Bucket=self.bucket,
                Key=self.object_key(key),
            )
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        """Bytes of the published archive under ``key``; FileNotFoundError when missing."""
        answer = _call(
            f"reading {key}",
            self._client.head_object,
            Bucket=self.bucket,
            Key=self.object_key(key),
        )
        return int(answer["ContentLength"])

    def delete(self, key: str) -> None:
        """Delete the archive; S3 treats a missing key as deleted already."""
        _call(
            f"deleting {key}",
            self._client.delete_object,
            Bucket=self.bucket,
            Key=self.object_key(key),
        )

    def url(self, key: str, *, base_url: str, filename: str) -> str:
        """A presigned GET URL that downloads as ``filename`` (or the public URL).

        ``base_url`` (this service's address) is not used: S3 serves the bytes itself.
        """
        object_key = self.object_key(key)
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(object_key)}"
        return self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": object_key,
                "ResponseContentDisposition": _content_disposition(filename),
            },
            ExpiresIn=self.presign_seconds,
        )

    # -- bucket set-up -------------------------------------------------------------------

    def check(self) -> None:
        """Raise when the bucket is missing (:class:`FileNotFoundError`), refused
        (:class:`PermissionError`) or S3 cannot be reached (``StorageUnavailable``)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            translated = _translate(exc, f"checking bucket {self.bucket}")
            if isinstance(translated, FileNotFoundError):
                raise FileNotFoundError(
                    f"the S3 bucket {self.bucket} does not exist: create it, or set "
                    "s3_create_bucket: true"
                ) from exc
            raise translated from exc

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (deployments usually create it)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            translated = _translate(exc, f"checking bucket {self.bucket}")
            if not isinstance(translated, FileNotFoundError):
                raise translated from exc
        region = self._client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        _call(f"creating bucket {self.bucket}", self._client.create_bucket, **kwargs)

    def apply_lifecycle(self, retention_days: float) -> None:
        """Make the bucket expire archives under ``prefix`` after ``retention_days``
        (downloads only: exports live under ``exports_prefix``, which the rule's filter does
        not match; a ValueError if it would).

        Explicit deletion by ``cleanup`` stays the main mechanism (it also marks the job
        EXPIRED); this rule is the safety net for archives whose cleanup never ran. S3
        counts whole days, rounded up, so the rule never deletes an archive early. Other
        rules in the bucket's configuration are kept.
        """
        if self.exports_prefix.startswith(self.prefix):
            # The rule matches by key prefix: it would delete the exports it must keep.
            raise ValueError(
                f"the S3 lifecycle rule expires every key under s3_prefix {self.prefix!r}, "
                f"which holds the recordset exports ({self.exports_prefix!r}); put the "
                "exports prefix outside s3_prefix"
            )
        days = max(1, math.ceil(retention_days)) + 1
        rule: dict[str, Any] = {
            "ID": LIFECYCLE_RULE_ID,
            "Filter": {"Prefix": self.prefix},
            "Status": "Enabled",
            "Expiration": {"Days": days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        try:
            current = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
            # Typed loosely: rules read back are re-sent as they are, next to ours.
            rules: list[Any] = [
                r for r in current.get("Rules", []) if r.get("ID") != LIFECYCLE_RULE_ID
            ]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "NoSuchLifecycleConfiguration":
                raise _translate(exc, f"reading the lifecycle of {self.bucket}") from exc
            rules = []
        rules.append(rule)
        _call(
            f"setting the lifecycle of {self.bucket}",
            self._client.put_bucket_lifecycle_configuration,
            Bucket=self.bucket,
            LifecycleConfiguration={"Rules": rules},
        )

    def lifecycle_rules(self) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules (for checks and the health endpoint)."""
        try:
            answer = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") == "NoSuchLifecycleConfiguration":
                return []
            raise _translate(exc, f"reading the lifecycle of {self.bucket}") from exc
        return [dict(r) for r in answer.get("Rules", [])]

    def _own_writer(self, key: str, writer: IO[bytes]) -> _S3Writer:
        if not isinstance(writer, _S3Writer) or writer.object_key != self.object_key(key):
            raise ValueError(f"writer does not belong to {key}")
        return writer
