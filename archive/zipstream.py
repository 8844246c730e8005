"""A sequential ZIP writer: streamed deflate entries, ZIP64, sha256 and size on the fly.

The sink is only ever appended to (no seek, no read), so it can be a pipe, a socket or an
upload stream. Each entry is compressed with a raw-deflate stream from the fastest library
installed (python-isal, then zlib-ng, then zlib) at a fixed level, so the same input gives
the same bytes on the same installation.

An entry whose compressed form stays under :data:`BUFFER_LIMIT` is held in memory until it
ends and written with its sizes and CRC in the local header: a classic entry with no data
descriptor and no ZIP64 fields, readable by every tool. A longer entry is streamed: its local
header carries a ZIP64 extra field with zero sizes, and a ZIP64 data descriptor (8-byte
sizes) follows its data (APPNOTE 4.3.9, 4.5.3). The central directory repeats the ZIP64
extra field for streamed entries and for any size or offset that does not fit 32 bits, and
a ZIP64 end-of-central-directory record and locator are written when the archive needs them.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, Protocol

#: Compressed bytes an entry may hold in memory before it is streamed with a data descriptor.
BUFFER_LIMIT = 4 * 1024 * 1024
#: Sizes and offsets at or above this get ZIP64 fields (tests lower it to exercise them).
ZIP64_LIMIT = 0xFFFFFFFF
#: Entry counts at or above this get the ZIP64 end record.
ZIP64_COUNT_LIMIT = 0xFFFF
#: What a 32-bit (16-bit) field holds when the real value is in a ZIP64 field.
_MARKER32 = 0xFFFFFFFF
_MARKER16 = 0xFFFF

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sBBHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")
_END64 = struct.Struct("<4sQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<4sIQI")
_DESCRIPTOR64 = struct.Struct("<4sIQQ")

_VERSION_DEFLATE = 20
_VERSION_ZIP64 = 45
_MADE_BY_UNIX = 3
_FLAG_DESCRIPTOR = 0x08
_FLAG_UTF8 = 0x800
_DEFLATED = 8
#: Regular file, rw-r--r--, in the high half of the external attributes (Unix "made by").
_EXTERNAL_ATTR = (0o100644 & 0xFFFF) << 16


class _Compressor(Protocol):
    def compress(self, data: Any, /) -> bytes: ...
    def flush(self, mode: int = ..., /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Deflate:
    """A raw-deflate implementation: its name, a compressor factory and its CRC-32."""

    name: str
    compressobj: Callable[[], _Compressor]
    crc32: Callable[[Any, int], int]


def fastest_deflate() -> Deflate:
    """python-isal when importable, else zlib-ng, else the standard zlib, all at level 1.

    Level 1 keeps deflate well ahead of CSV encoding (isal level 1 compresses typical
    occurrence CSV about 3.5:1, zlib's default level 6 about 4:1 at a tenth of the speed).
    The level is fixed so archives are reproducible on a given installation; different
    libraries produce different, equally valid, deflate streams.
    """
    try:
        from isal import isal_zlib

        return Deflate(
            "isal",
            lambda: isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15),
            isal_zlib.crc32,
        )
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng

        return Deflate(
            "zlib-ng",
            lambda: zlib_ng.compressobj(1, zlib_ng.DEFLATED, -15),
            zlib_ng.crc32,
        )
    except ImportError:
        pass
    return Deflate("zlib", lambda: zlib.compressobj(1, zlib.DEFLATED, -15), zlib.crc32)


def zlib_deflate(level: int = 6) -> Deflate:
    """The standard library's zlib at ``level`` (for comparisons and tests)."""
    return Deflate("zlib", lambda: zlib.compressobj(level, zlib.DEFLATED, -15), zlib.crc32)


class HashingSink:
    """Wraps a binary sink, counting bytes and computing their sha256 as they pass."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> None:
        """Write all of ``data`` (any bytes-like object) to the sink."""
        view = memoryview(data).cast("B")
        self._sha256.update(view)
        self.size += view.nbytes
        # A raw (unbuffered) file may take only part of the bytes. A sink whose write()
        # returns None (many file-like objects) is taken to have written everything.
        while view:
            written = self._sink.write(view)
            view = view[len(view) if written is None else written :]

    @property
    def sha256(self) -> str:
        """The hex sha256 of everything written so far."""
        return self._sha256.hexdigest()


def dos_datetime(moment: datetime) -> tuple[int, int]:
    """The MS-DOS (date, time) of ``moment`` in UTC, clamped to 1980..2107 (2 s resolution)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    year = min(max(moment.year, 1980), 2107)
    if year != moment.year:
        moment = datetime(year, 1, 1)
    date = ((year - 1980) << 9) | (moment.month << 5) | moment.day
    time = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    return date, time


@dataclass(slots=True)
class _Entry:
    name: bytes
    flags: int
    crc: int
    compressed: int
    uncompressed: int
    offset: int
    streamed: bool


class ZipStream:
    """Writes a ZIP file sequentially to a :class:`HashingSink`.

    Use :meth:`add` for small entries already in memory, or :meth:`start`, :meth:`write`
    (any number of times) and :meth:`finish` for a streamed one; one entry at a time. End
    with :meth:`close`, which writes the central directory.
    """

    def __init__(
        self,
        sink: HashingSink,
        *,
        timestamp: datetime,
        deflate: Deflate | None = None,
        buffer_limit: int | None = None,
    ) -> None:
        self._sink = sink
        self._date, self._time = dos_datetime(timestamp)
        self._deflate = deflate or fastest_deflate()
        self._buffer_limit = BUFFER_LIMIT if buffer_limit is None else buffer_limit
        self._entries: list[_Entry] = []
        self._offset = 0
        # The entry being written: its name, compressor, CRC, sizes, and its compressed
        # bytes while they are still held back (None once the entry is streaming).
        self._name: bytes | None = None
        self._compressor: _Compressor | None = None
        self._crc = 0
        self._in = 0
        self._out = 0
        self._held: list[bytes] | None = None
        self._entry_offset = 0

    def _emit(self, data: Any) -> None:
        self._sink.write(data)
        self._offset += len(data) if isinstance(data, bytes) else memoryview(data).nbytes

    @staticmethod
    def _flags(name: bytes) -> int:
        return 0 if name.isascii() else _FLAG_UTF8

    def add(self, name: str, data: bytes) -> None:
        """Write a whole entry from memory (meta.xml, eml.xml, citations)."""
        self.start(name)
        self.write(data)
        self.finish()

    def start(self, name: str) -> None:
        """Begin an entry called ``name``."""
        if self._name is not None:
            raise RuntimeError("finish the current entry before starting another")
        self._name = name.encode("utf-8")
        self._compressor = self._deflate.compressobj()
        self._crc = 0
        self._in = 0
        self._out = 0
        self._held = []
        self._entry_offset = self._offset

    def write(self, data: Any) -> None:
        """Append ``data`` (bytes-like) to the current entry."""
        assert self._compressor is not None, "no entry started"
        size = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        if size == 0:
            return
        self._crc = self._deflate.crc32(data, self._crc)
        self._in += size
        self._put(self._compressor.compress(data))

    def _put(self, compressed: bytes) -> None:
        if not compressed:
            return
        self._out += len(compressed)
        if self._held is None:
            self._emit(compressed)
            return
        self._held.append(compressed)
        if self._out >= self._buffer_limit:
            self._begin_streaming()

    def _begin_streaming(self) -> None:
        assert self._name is not None and self._held is not None
        name = self._name
        flags = self._flags(name) | _FLAG_DESCRIPTOR
        extra = struct.pack("<HHQQ", 0x0001, 16, 0, 0)
        self._emit(
            _LOCAL.pack(
                b"PK\x03\x04",
                _VERSION_ZIP64,
                flags,
                _DEFLATED,
                self._time,
                self._date,
                0,
                _MARKER32,
                _MARKER32,
                len(name),
                len(extra),
            )
        )
        self._emit(name)
        self._emit(extra)
        for chunk in self._held:
            self._emit(chunk)
        self._held = None

    def finish(self) -> None:
        """End the current entry: flush the compressor, write header or data descriptor."""
        assert self._compressor is not None and self._name is not None, "no entry started"
        self._put(self._compressor.flush())
        name = self._name
        streamed = self._held is None
        if streamed:
            flags = self._flags(name) | _FLAG_DESCRIPTOR
            self._emit(_DESCRIPTOR64.pack(b"PK\x07\x08", self._crc, self._out, self._in))
        else:
            flags = self._flags(name)
            self._emit(
                _LOCAL.pack(
                    b"PK\x03\x04",
                    _VERSION_DEFLATE,
                    flags,
                    _DEFLATED,
                    self._time,
                    self._date,
                    self._crc,
                    self._out,
                    self._in,
                    len(name),
                    0,
                )
            )
            self._emit(name)
            for chunk in self._held or ():
                self._emit(chunk)
        self._entries.append(
            _Entry(name, flags, self._crc, self._out, self._in, self._entry_offset, streamed)
        )
        self._name = None
        self._compressor = None
        self._held = None

    def close(self) -> None:
        """Write the central directory and the end records."""
        if self._name is not None:
            raise RuntimeError("the current entry was not finished")
        directory_offset = self._offset
        for entry in self._entries:
            self._emit(self._central_record(entry))
        directory_size = self._offset - directory_offset
        count = len(self._entries)
        needs_zip64 = (
            count >= ZIP64_COUNT_LIMIT
            or directory_offset >= ZIP64_LIMIT
            or directory_size >= ZIP64_LIMIT
        )
        if needs_zip64:
            end64_offset = self._offset
            self._emit(
                _END64.pack(
                    b"PK\x06\x06",
                    _END64.size - 12,
                    (_MADE_BY_UNIX << 8) | _VERSION_ZIP64,
                    _VERSION_ZIP64,
                    0,
                    0,
                    count,
                    count,
                    directory_size,
                    directory_offset,
                )
            )
            self._emit(_LOCATOR64.pack(b"PK\x06\x07", 0, end64_offset, 1))
        self._emit(
            _END.pack(
                b"PK\x05\x06",
                0,
                0,
                _MARKER16 if count >= ZIP64_COUNT_LIMIT else count,
                _MARKER16 if count >= ZIP64_COUNT_LIMIT else count,
                _MARKER32 if directory_size >= ZIP64_LIMIT else directory_size,
                _MARKER32 if directory_offset >= ZIP64_LIMIT else directory_offset,
                0,
            )
        )

    def _central_record(self, entry: _Entry) -> bytes:
        # ZIP64 fields appear in a fixed order, each only when its 32-bit field is the
        # 0xFFFFFFFF marker. A streamed entry always has both sizes there, as in its local
        # header; the offset only when it does not fit.
        fields: list[int] = []
        uncompressed = compressed = offset = 0
        if entry.streamed or entry.uncompressed >= ZIP64_LIMIT or entry.compressed >= ZIP64_LIMIT:
            fields += [entry.uncompressed, entry.compressed]
            uncompressed = compressed = _MARKER32
        else:
            uncompressed, compressed = entry.uncompressed, entry.compressed
        if entry.offset >= ZIP64_LIMIT:
            fields.append(entry.offset)
            offset = _MARKER32
        else:
            offset = entry.offset
        extra = b""
        if fields:
            extra = struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields)
        version = _VERSION_ZIP64 if fields or entry.streamed else _VERSION_DEFLATE
        return (
            _CENTRAL.pack(
                b"PK\x01\x02",
                version,
                _MADE_BY_UNIX,
                version,
                entry.flags,
                _DEFLATED,
                self._time,
                self._date,
                entry.crc,
                compressed,
                uncompressed,
                len(entry.name),
                len(extra),
                0,
                0,
                0,
                _EXTERNAL_ATTR,
                offset,
            )
            + entry.name
            + extra
        )
