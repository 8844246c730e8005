"""Archive storage in a local directory, served by this service's own HTTP handlers.

A writer is a temporary file ``<root>/.tmp-<key>-<random>`` in the same directory as the
final archive, so publishing is one ``os.replace`` (atomic on POSIX): a reader sees either
nothing or the whole archive, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import IO
from urllib.parse import quote

from downloader.errors import StorageUnavailable
from downloader.interfaces import EXPORT_KEY_PREFIX

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
TMP_PREFIX = ".tmp-"


def _check_key(key: str) -> str:
    # An export's key namespace matters only to storages that expire archives by themselves;
    # here exports stay plain files beside downloads (their names are job ids, never shared),
    # so /archives/<job id>/ serves both alike.
    key = key.removeprefix(EXPORT_KEY_PREFIX)
    # Keys become file names: refuse anything that could leave the directory.
    if not _KEY.match(key) or ".." in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    """:class:`~downloader.interfaces.Storage` over a directory (``<data_dir>/archives``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where the published archive ``key`` lives (for the download handler)."""
        return self.root / _check_key(key)

    def open_writer(self, key: str) -> IO[bytes]:
        """A new temporary file for ``key``; invisible under ``key`` until published."""
        tmp = self.root / f"{TMP_PREFIX}{_check_key(key)}-{secrets.token_hex(6)}"
        try:
            return Path(tmp).open("w+b")  # the caller owns the file until publish/discard
        except OSError as exc:
            raise StorageUnavailable(f"cannot write archives to {self.root}: {exc}") from exc

    def publish(
        self,
        key: str,
        writer: IO[bytes],
        *,
        content_type: str,
        filename: str,
        sha256: str | None = None,
    ) -> None:
        """Flush and fsync the writer, then rename it to ``key`` and fsync the directory.

        ``content_type``, ``filename`` and ``sha256`` are not stored: the download handler
        derives them from the job, which is the single record of them.
        """
        del content_type, filename, sha256
        final = self.path(key)
        try:
            writer.flush()
            os.fsync(writer.fileno())
            writer.close()
            Path(writer.name).replace(final)
            self._fsync_dir()
        except OSError as exc:
            self.discard(key, writer)
            raise StorageUnavailable(f"cannot publish archive {key}: {exc}") from exc

    def discard(self, key: str, writer: IO[bytes]) -> None:
        """Close and delete a partial write."""
        del key
        with contextlib.suppress(OSError):
            writer.close()
        with contextlib.suppress(FileNotFoundError):
            Path(writer.name).unlink()

    def exists(self, key: str) -> bool:
        """Whether ``key`` has been published (and not deleted)."""
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove a published archive; a missing key is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()
        self._fsync_dir()

    def url(self, key: str, *, base_url: str, filename: str) -> str:
        """``<base_url>/archives/<key without extension>/<filename>``: the job id in the path
        and a meaningful last segment, so ``curl -O`` and browsers save a sensible name."""
        stem = _check_key(key).rsplit(".", 1)[0]
        return f"{base_url.rstrip('/')}/archives/{quote(stem)}/{quote(filename)}"

    def check(self) -> None:
        """Raise when the archive directory is missing or not writable."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"the archive directory {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"the archive directory {self.root} is not writable")

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by writers that died; returns how many were removed.

        Only safe when no writer is active (at start-up of ``serve``, before workers run).
        """
        removed = 0
        for tmp in self.root.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
        return removed

    def _fsync_dir(self) -> None:
        # Persist the rename itself; without this a crash could forget the published name.
        try:
            fd = os.open(self.root, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
