"""The sequential ZIP writer: classic and streamed entries, ZIP64, and a real 4 GiB+ entry."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest

from archive import zipstream
from archive.zipstream import HashingSink, ZipStream, fastest_deflate, zlib_deflate

STAMP = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)


def build(entries: dict[str, list[bytes]], **kwargs: Any) -> bytes:
    sink = io.BytesIO()
    hashing = HashingSink(sink)
    archive = ZipStream(hashing, timestamp=STAMP, **kwargs)
    for name, chunks in entries.items():
        archive.start(name)
        for chunk in chunks:
            archive.write(chunk)
        archive.finish()
    archive.close()
    data = sink.getvalue()
    assert hashing.size == len(data)
    assert hashing.sha256 == hashlib.sha256(data).hexdigest()
    return data


def local_header(data: bytes, offset: int = 0) -> dict[str, Any]:
    fields = struct.unpack_from("<4sHHHHHIIIHH", data, offset)
    name_length, extra_length = fields[9], fields[10]
    start = offset + 30 + name_length
    return {
        "signature": fields[0],
        "version": fields[1],
        "flags": fields[2],
        "crc": fields[6],
        "compressed": fields[7],
        "uncompressed": fields[8],
        "extra": data[start : start + extra_length],
    }


def test_small_entries_are_classic_with_sizes_in_the_header() -> None:
    data = build({"meta.xml": [b"<archive/>"], "occurrence.csv": [b"coreid\n", b"r1\n"]})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["meta.xml", "occurrence.csv"]
        assert zf.read("occurrence.csv") == b"coreid\nr1\n"
        info = zf.getinfo("meta.xml")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.date_time == (2024, 5, 1, 12, 30, 14)
        assert info.flag_bits & 0x08 == 0
        assert info.external_attr >> 16 == 0o100644
    header = local_header(data)
    assert header["flags"] & 0x08 == 0
    assert header["crc"] == zlib.crc32(b"<archive/>")
    assert header["uncompressed"] == len(b"<archive/>")
    assert header["extra"] == b""
    assert b"PK\x06\x06" not in data


def test_long_entries_stream_with_zip64_descriptor() -> None:
    chunks = [bytes(range(256)) * 64 for _ in range(20)]
    data = build({"big.csv": chunks, "meta.xml": [b"<x/>"]}, buffer_limit=1024)
    header = local_header(data)
    assert header["flags"] & 0x08
    assert header["version"] == 45
    assert (header["compressed"], header["uncompressed"]) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert header["extra"] == struct.pack("<HHQQ", 1, 16, 0, 0)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("big.csv") == b"".join(chunks)
        assert zf.read("meta.xml") == b"<x/>"
        assert zf.testzip() is None
    descriptor = data.index(b"PK\x07\x08")
    crc, _compressed, uncompressed = struct.unpack_from("<IQQ", data, descriptor + 4)
    assert crc == zlib.crc32(b"".join(chunks))
    assert uncompressed == sum(len(c) for c in chunks)


def test_lowered_limits_exercise_every_zip64_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipstream, "ZIP64_LIMIT", 50)
    monkeypatch.setattr(zipstream, "ZIP64_COUNT_LIMIT", 3)
    entries = {f"file{i}.txt": [f"content {i} ".encode() * 20] for i in range(5)}
    data = build(entries)
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == list(entries)
        for name, chunks in entries.items():
            assert zf.read(name) == b"".join(chunks)
        offsets = [info.header_offset for info in zf.infolist()]
        assert offsets[0] == 0 and offsets == sorted(offsets)


def test_empty_entry() -> None:
    data = build({"empty.csv": []})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("empty.csv") == b""


def test_non_ascii_names_are_flagged_utf8() -> None:
    data = build({"données.csv": [b"x"]})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
        assert info.filename == "données.csv"
        assert info.flag_bits & 0x800


@pytest.mark.parametrize("deflate", [fastest_deflate(), zlib_deflate(6)], ids=lambda d: d.name)
def test_every_deflate_gives_a_readable_reproducible_zip(deflate: zipstream.Deflate) -> None:
    chunks = [b"coreid,dwc:locality\n"] + [
        f"r{i},somewhere {i % 7}\n".encode() for i in range(2000)
    ]
    first = build({"o.csv": chunks}, deflate=deflate)
    assert build({"o.csv": chunks}, deflate=deflate) == first
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert zf.read("o.csv") == b"".join(chunks)


def test_fastest_deflate_prefers_isal_when_installed() -> None:
    pytest.importorskip("isal")
    assert fastest_deflate().name == "isal"


def test_dates_before_1980_are_clamped() -> None:
    assert zipstream.dos_datetime(datetime(1970, 1, 1)) == ((0 << 9) | (1 << 5) | 1, 0)


class TailSink:
    """Keeps the first and last bytes written, counts the rest: a 4 GiB zip without disk."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head = bytearray()
        self.tail = bytearray()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(self.head) < self.keep:
            self.head += view[: self.keep - len(self.head)]
        self.tail += view
        if len(self.tail) > 2 * self.keep:
            del self.tail[: len(self.tail) - self.keep]
        self.size += len(view)
        return len(view)


class SparseFile(io.RawIOBase):
    """A read-only file of ``size`` bytes holding ``head`` and ``tail``, zeros between."""

    def __init__(self, head: bytes, tail: bytes, size: int) -> None:
        self.head, self.tail, self.length, self.position = head, tail, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.length}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self.length - self.position))
        tail_start = self.length - len(self.tail)
        for i in range(count):
            at = self.position + i
            if at < len(self.head):
                buffer[i] = self.head[at]
            elif at >= tail_start:
                buffer[i] = self.tail[at - tail_start]
            else:
                buffer[i] = 0
        self.position += count
        return count


def test_real_entry_past_4_gib_streams_with_zip64() -> None:
    """Over 4 GiB of CSV through the real writer; only the zip's ends are kept in memory.

    The data compresses well, so this proves 8-byte sizes; offsets past 4 GiB (which need
    over 4 GiB of compressed output) are covered with lowered limits above.
    """
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    line = b"00000000-aaaa-bbbb-cccc-dddddddddddd,acer rubrum,Boston MA,42.5,-71.25\n"
    chunk = line * (8 * 1024 * 1024 // len(line))
    repeats = (4 * 1024**3) // len(chunk) + 3  # a little over 4 GiB
    total = len(chunk) * repeats
    assert total > 0xFFFFFFFF

    sink = TailSink(keep=64 * 1024)
    hashing = HashingSink(sink)  # type: ignore[arg-type]  # only write() is needed
    archive = ZipStream(hashing, timestamp=STAMP)
    archive.add("meta.xml", b"<archive/>")
    archive.start("occurrence.csv")
    view = memoryview(chunk)
    crc = 0
    for _ in range(repeats):
        archive.write(view)
        crc = isal_zlib.crc32(view, crc)
    archive.finish()
    archive.add("eml.xml", b"<eml/>")
    archive.close()
    assert sink.size == hashing.size

    # Python's zipfile reads the central directory and its ZIP64 extra fields from the tail.
    sparse = SparseFile(bytes(sink.head), bytes(sink.tail), sink.size)
    with zipfile.ZipFile(io.BufferedReader(sparse)) as zf:
        _meta, big, eml = zf.infolist()
        assert big.filename == "occurrence.csv"
        assert big.file_size == total
        assert crc == big.CRC
        assert big.flag_bits & 0x08
        assert zf.read("meta.xml") == b"<archive/>"
    tail = bytes(sink.tail)
    # Offsets and counts fit in 32 bits, so the classic end record suffices.
    assert b"PK\x06\x06" not in tail
    # The data descriptor of the big entry carries 8-byte sizes.
    descriptor = tail.rindex(b"PK\x07\x08")
    d_crc, d_compressed, d_uncompressed = struct.unpack_from("<IQQ", tail, descriptor + 4)
    assert (d_crc, d_uncompressed, d_compressed) == (crc, total, big.compress_size)
    # The last entry, past 4 GiB, is readable from the tail alone.
    eml_header = local_header(tail, eml.header_offset - (sink.size - len(tail)))
    assert eml_header["signature"] == b"PK\x03\x04"


def test_partial_writes_of_a_raw_sink_are_completed() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            piece = bytes(memoryview(data)[:7])
            self.data += piece
            return len(piece)

    trickle = Trickle()
    hashing = HashingSink(trickle)  # type: ignore[arg-type]  # a RawIOBase is a binary sink
    archive = ZipStream(hashing, timestamp=STAMP)
    archive.add("a.txt", b"hello world " * 50)
    archive.close()
    assert hashing.size == len(trickle.data)
    assert hashing.sha256 == hashlib.sha256(trickle.data).hexdigest()
    with zipfile.ZipFile(io.BytesIO(bytes(trickle.data))) as zf:
        assert zf.read("a.txt") == b"hello world " * 50
