"""write_archive: an ArchiveSpec and its batches in, a DwC-A zip (or a bare CSV/TSV) out.

How the work is split. The calling thread reads each data file's batches and cuts them
into pieces of a few MiB of text; :data:`ENCODERS` pool threads turn pieces into CSV/TSV
bytes with Arrow kernels (:mod:`archive.cells`, which hold the GIL only between kernels);
the bytes go, in the pieces' order, to a writer thread through a small bounded queue. The
writer thread computes CRC-32, deflates (isal / zlib-ng / zlib, which all release the GIL),
hashes (sha256) and writes to the sink. So reading, encoding and compression share the
cores, and memory stays flat: at most a few pieces and chunks of a few MiB are in flight
whatever the archive's size (and Arrow allocates from :func:`archive.memory.use_compact_pool`).

Zip entries, in this order: the data files (in spec order), the citation files,
citations.txt, rights.txt, the extra files, eml.xml, meta.xml (meta.json for ``parquet``,
whose data files :mod:`archive.parquet` writes). Every entry carries
``spec.timestamp``, so the same spec over the same data gives the same bytes.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, BinaryIO

import pyarrow as pa

from archive import cells, dwca
from archive.eml import eml_xml
from archive.errors import ArchiveCancelled, ArchiveError
from archive.memory import use_compact_pool
from archive.meta import meta_json, meta_xml
from archive.models import ArchiveResult, ArchiveSpec, DataFile, EmlInfo
from archive.parquet import write_parquet
from archive.zipstream import Deflate, HashingSink, ZipStream

#: Encoded bytes aimed at per chunk handed to the writer thread.
CHUNK_BYTES = 4 * 1024 * 1024
#: Most rows encoded at once (keeps progress reports and cancellation checks frequent).
CHUNK_ROWS = 16_384
#: Fewest rows encoded at once (per-call overheads dominate below this).
MIN_CHUNK_ROWS = 1_024
#: Chunks that may wait for the writer thread (deflate keeps ahead of encoding, so a short
#: queue is enough; each queued chunk keeps its encoded rows alive).
QUEUE_DEPTH = 2
#: Pieces encoded at once (two made a 1M-record build ~1.5 s faster than one, for ~20 MB
#: more peak RSS).
ENCODERS = 2


class _WriterThread:
    """Runs sink operations (deflate, CRC, sha256, write) in order on a second thread.

    Errors raised there are re-raised on the calling thread at the next :meth:`call` or at
    :meth:`close`. After :meth:`abort`, queued operations are skipped.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(
            maxsize=QUEUE_DEPTH
        )
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None or self._aborted:
                continue
            function, args = item
            try:
                function(*args)
            except BaseException as exc:  # re-raised on the calling thread
                self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._aborted = True
            raise error

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)``; blocks while the queue is full."""
        self._raise_pending()
        while True:
            try:
                self._queue.put((function, args), timeout=0.5)
                return
            except queue.Full:
                self._raise_pending()

    def close(self) -> None:
        """Wait for every queued operation; re-raise the first error one raised."""
        self._queue.put(None)
        self._thread.join()
        self._raise_pending()

    def abort(self) -> None:
        """Skip what is still queued and stop the thread (after a failure or a cancel)."""
        self._aborted = True
        self._queue.put(None)
        self._thread.join()


def _check_spec(spec: ArchiveSpec) -> None:
    core = spec.core  # raises unless there is exactly one
    names = [f.filename for f in spec.files]
    if dwca.is_zip(spec.form):
        names += [c.filename for c in spec.citations]
        names += [dwca.metadata_file_name(spec.form), dwca.descriptor_name(spec.form)]
        names += [dwca.CITATIONS_TXT, dwca.RIGHTS_TXT]
        names += [e.filename for e in spec.extras]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ArchiveError(f"file names used twice in the archive: {', '.join(duplicates)}")
    for data_file in spec.files if dwca.is_zip(spec.form) else [core]:
        if not data_file.columns:
            raise ArchiveError(f"{data_file.filename} has no columns", filename=data_file.filename)


class _Progress:
    """Counts rows per file and reports the records+media running total."""

    def __init__(self, callback: Callable[[int], None] | None) -> None:
        self.rows: dict[str, int] = {}
        self.counted = 0
        self._callback = callback

    def add(self, data_file: DataFile, rows: int) -> None:
        self.rows[data_file.filename] = self.rows.get(data_file.filename, 0) + rows
        if data_file.kind != "other":
            self.counted += rows
            if self._callback is not None:
                self._callback(self.counted)


def _row_pieces(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """``batch`` cut into zero-copy slices of about :data:`CHUNK_BYTES` encoded bytes."""
    if batch.num_rows == 0:
        return []
    # nbytes can overstate a slice's share of shared buffers (dictionaries, say), so the
    # estimate only ever shrinks a piece down to MIN_CHUNK_ROWS rows.
    per_row = max(1, batch.nbytes // batch.num_rows)
    step = max(MIN_CHUNK_ROWS, min(CHUNK_ROWS, CHUNK_BYTES // per_row))
    return [batch.slice(start, step) for start in range(0, batch.num_rows, step)]


def _value_error(data_file: DataFile, piece: pa.RecordBatch, err: cells.RowsError) -> ArchiveError:
    coreid: str | None
    try:
        value = piece.column(0)[err.row].as_py()
        coreid = None if value is None else str(value)
    except Exception:  # the coreid column itself may be the unreadable one
        coreid = None
    column = data_file.columns[err.column].header
    where = f"the row with coreid {coreid!r}" if coreid is not None else f"row {err.row}"
    return ArchiveError(
        f"{data_file.filename}: {where}, column {column!r}: the value {err.reason}",
        filename=data_file.filename,
        coreid=coreid,
        column=column,
    )


def _write_data_file(
    data_file: DataFile,
    *,
    delimiter: str,
    emit: Callable[[Any], None],
    progress: _Progress,
    should_cancel: Callable[[], bool],
) -> None:
    headers = [c.header for c in data_file.columns]
    emit(cells.header_line(headers, delimiter))
    progress.rows.setdefault(data_file.filename, 0)
    width = len(headers)
    # Pieces are encoded on a small pool, in order of arrival, so that encoding a wide file
    # uses the core the reader leaves idle; at most ENCODERS pieces are in flight.
    inflight: deque[tuple[pa.RecordBatch, Future[bytes | memoryview]]] = deque()

    def emit_oldest() -> None:
        piece, future = inflight.popleft()
        try:
            rows = future.result()
        except cells.RowsError as err:
            raise _value_error(data_file, piece, err) from None
        # bytes, or a memoryview that keeps its Arrow buffer alive until written.
        emit(rows)
        progress.add(data_file, piece.num_rows)

    with ThreadPoolExecutor(max_workers=ENCODERS, thread_name_prefix="archive-encode") as pool:
        try:
            for batch in data_file.batches():
                if should_cancel():
                    raise ArchiveCancelled(f"cancelled while writing {data_file.filename}")
                if batch.num_columns != width:
                    raise ArchiveError(
                        f"{data_file.filename}: a batch has {batch.num_columns} columns but "
                        f"the file has {width} ({', '.join(headers)})",
                        filename=data_file.filename,
                    )
                for piece in _row_pieces(batch):
                    while len(inflight) >= ENCODERS:
                        emit_oldest()
                    inflight.append(
                        (piece, pool.submit(cells.encode_rows, piece.columns, delimiter))
                    )
            while inflight:
                emit_oldest()
        finally:
            for _, future in inflight:
                future.cancel()


def _write_file(
    spec: ArchiveSpec,
    data_file: DataFile,
    *,
    delimiter: str,
    emit: Callable[[Any], None],
    progress: _Progress,
    should_cancel: Callable[[], bool],
) -> None:
    """One data file of a zip, as delimited text or, for the Parquet forms, as Parquet."""
    if dwca.is_parquet(spec.form):
        progress.rows.setdefault(data_file.filename, 0)
        write_parquet(
            data_file,
            emit=emit,
            on_rows=lambda n: progress.add(data_file, n),
            should_cancel=should_cancel,
        )
    else:
        _write_data_file(
            data_file,
            delimiter=delimiter,
            emit=emit,
            progress=progress,
            should_cancel=should_cancel,
        )


def _never() -> bool:
    return False


def write_archive(
    spec: ArchiveSpec,
    sink: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    deflate: Deflate | None = None,
) -> ArchiveResult:
    """Write the archive described by ``spec`` to ``sink`` and say what was written.

    ``sink`` is only appended to (no seek), so it can be a file, a pipe or an upload
    stream. For the ``dwca-*``, ``parquet`` and ``simple-*`` forms it receives a zip; for
    ``csv``/``tsv`` the core data file alone. Each data file's ``batches`` factory is called
    on this thread.

    ``progress`` is called on this thread after every chunk of rows (a few thousand) with
    the running number of rows written to ``records`` and ``mediarecords`` files (see
    :meth:`ArchiveSpec.expected_rows` for its final value). ``should_cancel`` is checked
    before each batch; when it returns True :class:`ArchiveCancelled` is raised and the sink
    holds an incomplete archive. A value that cannot be written raises
    :class:`ArchiveError` naming the file, the row's ``coreid`` and the column; errors from
    a ``batches`` factory or from ``sink`` propagate unchanged. ``deflate`` overrides the
    deflate implementation (default: the fastest installed, see
    :func:`archive.zipstream.fastest_deflate`).
    """
    _check_spec(spec)
    use_compact_pool()
    cancel = should_cancel or _never
    delimiter = dwca.delimiter(spec.form)
    counter = _Progress(progress)
    hashing = HashingSink(sink)
    thread = _WriterThread()
    try:
        if dwca.is_zip(spec.form):
            _write_zip(spec, hashing, thread, delimiter, counter, cancel, deflate)
        elif dwca.is_packed(spec.form):
            _write_packed(spec, hashing, thread, delimiter, counter, cancel, deflate)
        else:
            _write_data_file(
                spec.core,
                delimiter=delimiter,
                emit=lambda data: thread.call(hashing.write, data),
                progress=counter,
                should_cancel=cancel,
            )
        thread.close()
    except BaseException:
        thread.abort()
        raise
    counts = {
        kind: max(
            (counter.rows.get(f.filename, 0) for f in spec.files if f.kind == kind), default=0
        )
        for kind in ("records", "mediarecords")
    }
    return ArchiveResult(
        size=hashing.size,
        sha256=hashing.sha256,
        rows=dict(counter.rows),
        records=counts["records"],
        mediarecords=counts["mediarecords"],
    )


def _write_zip(
    spec: ArchiveSpec,
    hashing: HashingSink,
    thread: _WriterThread,
    delimiter: str,
    counter: _Progress,
    cancel: Callable[[], bool],
    deflate: Deflate | None,
) -> None:
    archive = ZipStream(hashing, timestamp=spec.timestamp, deflate=deflate)
    for data_file in spec.files:
        if cancel():
            raise ArchiveCancelled(f"cancelled before writing {data_file.filename}")
        thread.call(archive.start, data_file.filename)
        _write_file(
            spec,
            data_file,
            delimiter=delimiter,
            emit=lambda data: thread.call(archive.write, data),
            progress=counter,
            should_cancel=cancel,
        )
        thread.call(archive.finish)
    publisher = spec.eml.publisher_url or spec.eml.publisher_name
    texts = [
        dwca.render_citation(c, publisher=publisher, accessed=spec.timestamp)
        for c in spec.citations
    ]
    for citation, text in zip(spec.citations, texts, strict=True):
        thread.call(archive.add, citation.filename, text.encode("utf-8"))
    eml = _written_eml(spec, counter)
    citations = dwca.render_citations(eml, spec.credits, accessed=spec.timestamp)
    thread.call(archive.add, dwca.CITATIONS_TXT, citations.encode("utf-8"))
    rights = dwca.render_rights(eml, spec.credits)
    thread.call(archive.add, dwca.RIGHTS_TXT, rights.encode("utf-8"))
    for extra in spec.extras:
        if cancel():
            raise ArchiveCancelled(f"cancelled before writing {extra.filename}")
        thread.call(archive.start, extra.filename)
        for chunk in extra.chunks():
            thread.call(archive.write, chunk)
        thread.call(archive.finish)
    metadata = dwca.metadata_file_name(spec.form)
    thread.call(archive.add, metadata, eml_xml(eml, citation=texts[0] if texts else None))
    if spec.form == "parquet":
        descriptor = meta_json(spec.files, metadata=metadata)
    else:
        descriptor = meta_xml(spec.files, delimiter=delimiter, metadata=metadata)
    thread.call(archive.add, dwca.descriptor_name(spec.form), descriptor)
    thread.call(archive.close)


def _write_packed(
    spec: ArchiveSpec,
    hashing: HashingSink,
    thread: _WriterThread,
    delimiter: str,
    counter: _Progress,
    cancel: Callable[[], bool],
    deflate: Deflate | None,
) -> None:
    """GBIF's simple downloads: the core file alone in a zip (tab-separated, or Parquet)."""
    archive = ZipStream(hashing, timestamp=spec.timestamp, deflate=deflate)
    core = spec.core
    thread.call(archive.start, core.filename)
    _write_file(
        spec,
        core,
        delimiter=delimiter,
        emit=lambda data: thread.call(archive.write, data),
        progress=counter,
        should_cancel=cancel,
    )
    thread.call(archive.finish)
    thread.call(archive.close)


def _written_eml(spec: ArchiveSpec, counter: _Progress) -> EmlInfo:
    """``spec.eml`` with the counts actually written where the archive has such files, so
    that eml.xml and citations.txt stay true even if the data changed between the service's
    count and the stream."""
    eml = spec.eml
    written = {
        kind: [f for f in spec.files if f.kind == kind] for kind in ("records", "mediarecords")
    }
    if written["records"]:
        eml = replace(eml, record_count=max(counter.rows[f.filename] for f in written["records"]))
    if written["mediarecords"]:
        eml = replace(
            eml, media_count=max(counter.rows[f.filename] for f in written["mediarecords"])
        )
    return eml
