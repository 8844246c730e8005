"""Several reads of the same documents from one pass over the cluster
(:meth:`ElasticsearchSource.shared_batches`): the first read pages through the cluster and
writes the other reads' batches of every page to temporary Arrow files (:class:`_Spool`),
which the other reads then replay. An archive's indexed and verbatim files of one record
type are two such reads."""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa

from downloader.sources.elasticsearch.client import page_size
from downloader.sources.elasticsearch.hits import Page
from query.fields import RecordType

if TYPE_CHECKING:  # only for annotations: the source imports this module
    from downloader.sources.elasticsearch.source import ElasticsearchSource


def _ipc_options() -> pa.ipc.IpcWriteOptions:
    return pa.ipc.IpcWriteOptions(compression="lz4" if pa.Codec.is_available("lz4") else None)


class _Spool:
    """Record batches kept in an unnamed temporary file (an Arrow IPC stream, lz4-compressed
    when this pyarrow has lz4) until they are replayed once. A batch whose schema differs
    from the first one's makes the spool unusable (:meth:`finish` gives False) rather than
    failing the read: the caller then reads the cluster again."""

    def __init__(self) -> None:
        # Kept open across calls; closed by replay() or discard().
        self.file: IO[bytes] | None = tempfile.TemporaryFile()  # noqa: SIM115
        self.writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.usable = True

    def write(self, batch: pa.RecordBatch) -> None:
        if not self.usable or self.file is None:
            return
        try:
            if self.writer is None:
                self.writer = pa.ipc.new_stream(self.file, batch.schema, options=_ipc_options())
            self.writer.write_batch(batch)
        except ValueError:  # pa.ArrowInvalid: another schema
            self.usable = False

    def finish(self) -> bool:
        """Close the writing side; whether the spool can be replayed."""
        if self.writer is not None:
            try:
                self.writer.close()
            except ValueError:
                self.usable = False
            self.writer = None
        if not self.usable:
            self.discard()
        return self.usable

    def discard(self) -> None:
        self.usable = False
        if self.file is not None:
            self.file.close()
            self.file = None

    def replay(self) -> Iterator[pa.RecordBatch]:
        """The batches written, in order; the file is gone afterwards."""
        file, self.file = self.file, None
        if file is None:
            return
        with file:
            if file.tell() == 0:  # nothing was written: no batches
                return
            file.seek(0)
            yield from pa.ipc.open_stream(file)


class PageSpool:
    """The answers of one scroll (JSON text, as they came) kept in an unnamed temporary file
    until they are replayed once (see :meth:`ElasticsearchSource.read_ahead`): the pages a
    merge's tally read, for the read of the same documents that follows."""

    def __init__(self) -> None:
        # Kept open across calls; closed by replay() or discard().
        self.file: IO[bytes] | None = tempfile.TemporaryFile()  # noqa: SIM115
        self.pages = 0

    def write(self, answer: bytes) -> None:
        """Keep one answer."""
        if self.file is not None:
            self.file.write(len(answer).to_bytes(8, "little"))
            self.file.write(answer)
            self.pages += 1

    def discard(self) -> None:
        """Drop the answers kept."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def replay(self) -> Generator[bytes, None, None]:
        """The answers written, in order; the file is gone afterwards."""
        file, self.file = self.file, None
        if file is None:
            return
        with file:
            file.seek(0)
            for _ in range(self.pages):
                size = int.from_bytes(file.read(8), "little")
                yield file.read(size)


class SharedRead:
    """The reads of one :meth:`ElasticsearchSource.shared_batches` call."""

    def __init__(
        self,
        source: ElasticsearchSource,
        rtype: RecordType,
        rq: dict[str, Any] | None,
        mq: dict[str, Any] | None,
        reads: Sequence[tuple[Sequence[str], Sequence[str]]],
        batch_size: int,
    ) -> None:
        self.source, self.rtype, self.rq, self.mq = source, rtype, rq, mq
        self.reads = [(list(fields), list(terms)) for fields, terms in reads]
        self.batch_size = batch_size
        self.spools: dict[int, _Spool] = {}
        self.led = False

    def read(self, i: int) -> Iterator[pa.RecordBatch]:
        """The batches of read ``i``."""
        spool = self.spools.pop(i, None)
        if spool is not None:
            yield from spool.replay()
        elif i == 0 and not self.led:
            self.led = True
            yield from self._lead()
        else:
            fields, terms = self.reads[i]
            yield from self.source.batches(
                self.rtype,
                self.rq,
                self.mq,
                fields=fields,
                raw_terms=terms,
                batch_size=self.batch_size,
            )

    def _lead(self) -> Iterator[pa.RecordBatch]:
        """Read 0 from the cluster, spooling the other reads' batches of every page (both
        on the page thread)."""
        rtype, reads = self.rtype, self.reads
        spools = {j: _Spool() for j in range(1, len(reads))}

        def convert(page: Page) -> pa.RecordBatch:
            for j, spool in spools.items():
                spool.write(page.batch(*reads[j]))
            return page.batch(*reads[0])

        finished = False
        try:
            size = page_size(self.batch_size)
            for plan in self.source._read_plans(rtype, self.rq, self.mq):
                yield from self.source._pages(rtype, plan, reads, size, convert)
            finished = True
        finally:
            for j, spool in spools.items():
                if finished and spool.finish():
                    self.spools[j] = spool
                else:
                    spool.discard()
