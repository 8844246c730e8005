"""Read connections of the store kept open for a moment after use, and given up at once when
a writer waits.

Opening the store file costs ~14 ms (DuckDB reads its catalogue) and closing it ~4 ms: more
than half of a count at 1M records, and a share of every small download. So a connection that
has served an operation is parked here for :data:`IDLE_SECONDS` and handed to the next
operation of the process that wants one with the same configuration, instead of being
closed.

DuckDB lets one process write the file only while no other has it open, so parking must
never keep ``downloader ingest`` out. While an ingest waits for the file (and until it has
written) it holds a marker file beside the store (:func:`writer_waiting`); then nothing is
parked, and a reaper thread closes every parked connection within a quarter of a second. The
file is thus given back as promptly as before whenever a writer wants it, and at most
:data:`IDLE_SECONDS` after the last read otherwise. A parked connection is also closed when
the file's signature changed (a store replaced under its name) or it is older than its
source's window.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb

#: How long an unused connection stays open.
IDLE_SECONDS = 1.0

#: How often the reaper looks for connections to close.
REAP_SECONDS = 0.25

#: A writer's marker older than this is left by a killed ingest and ignored.
STALE_MARKER_SECONDS = 600.0


def marker_path(store: Path) -> Path:
    """The file an ingest holds beside ``store`` while it waits for it and writes."""
    return store.with_name(store.name + ".writer-waiting")


def writer_waiting(store: Path) -> bool:
    """Whether an ingest waits for (or writes) ``store`` now."""
    try:
        age = time.time() - marker_path(store).stat().st_mtime
    except OSError:
        return False
    return age < STALE_MARKER_SECONDS


@contextmanager
def waiting_writer(store: Path) -> Iterator[None]:
    """Hold the writer's marker for ``store`` (readers then park no connection)."""
    marker = marker_path(store)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n", encoding="ascii")
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            marker.unlink()


class _Parked:
    __slots__ = ("con", "opened", "parked", "signature")

    def __init__(
        self, con: duckdb.DuckDBPyConnection, signature: tuple[Any, ...], opened: float
    ) -> None:
        self.con = con
        self.signature = signature
        self.opened = opened
        self.parked = time.monotonic()


class IdleConnections:
    """Parked read connections by (store path, configuration); safe to share by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Held while connections taken out of the pool are closed (outside ``_lock``, as a
        # close can take a while): drain waits on it, so a writer never attaches while the
        # reaper is still closing a connection it took (DuckDB refuses a file that is open).
        self._closing = threading.Lock()
        self._parked: dict[tuple[Path, str], list[_Parked]] = {}
        self._reaper: threading.Thread | None = None

    def _close_all(self, entries: list[_Parked]) -> None:
        with self._closing:
            for entry in entries:
                _close(entry.con)

    @staticmethod
    def _key(path: Path, config: dict[str, Any]) -> tuple[Path, str]:
        return (path, repr(sorted(config.items())))

    def take(
        self, path: Path, config: dict[str, Any], signature: tuple[Any, ...], max_age: float
    ) -> tuple[duckdb.DuckDBPyConnection, float] | None:
        """A parked connection to ``path`` with ``config`` still current (the file's
        ``signature`` unchanged, younger than ``max_age``) and when it was opened, or None."""
        stale: list[_Parked] = []
        found: _Parked | None = None
        now = time.monotonic()
        with self._lock:
            parked = self._parked.get(self._key(path, config), [])
            while parked:
                entry = parked.pop()
                if entry.signature == signature and now - entry.opened < max_age:
                    found = entry
                    break
                stale.append(entry)
        self._close_all(stale)
        if found is None or writer_waiting(path):
            if found is not None:
                self._close_all([found])
            return None
        return found.con, found.opened

    def give(
        self,
        path: Path,
        config: dict[str, Any],
        con: duckdb.DuckDBPyConnection,
        *,
        signature: tuple[Any, ...],
        opened: float,
    ) -> None:
        """Park ``con`` for the next operation, or close it when a writer waits."""
        if signature[0] is None or writer_waiting(path):
            _close(con)
            return
        with self._lock:
            self._parked.setdefault(self._key(path, config), []).append(
                _Parked(con, signature, opened)
            )
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap_forever, name="duckdb-idle-reaper", daemon=True
                )
                self._reaper.start()

    def drain(self, path: Path) -> int:
        """Close every parked connection to ``path`` (a writer or another configuration
        wants the file); how many there were."""
        with self._lock:
            entries = [
                entry
                for key in [k for k in self._parked if k[0] == path]
                for entry in self._parked.pop(key)
            ]
        # Also waits for closes already under way (the reaper's, a take's stale ones).
        self._close_all(entries)
        return len(entries)

    def reap(self) -> None:
        """Close the connections idle for too long, and all of those whose store a writer
        waits for."""
        now = time.monotonic()
        closing: list[_Parked] = []
        with self._lock:
            waiting = {path: writer_waiting(path) for path, _ in self._parked}
            for key, entries in self._parked.items():
                keep = [e for e in entries if not waiting[key[0]] and now - e.parked < IDLE_SECONDS]
                closing.extend(e for e in entries if e not in keep)
                entries[:] = keep
        self._close_all(closing)

    def _reap_forever(self) -> None:
        while True:
            time.sleep(REAP_SECONDS)
            self.reap()


def _close(con: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):
        con.close()


#: The parked connections of this process.
IDLE = IdleConnections()


def _forget_after_fork() -> None:
    """A forked child (a Celery prefork pool process) starts with no parked connections of
    its own and no reaper: the parent's connections are not the child's to use or close."""
    global IDLE
    IDLE = IdleConnections()


os.register_at_fork(after_in_child=_forget_after_fork)
