"""The response records of a WARC file, read by the URL filter and the extractor alike.

A crawl holds damaged files: a download cut short, a file that is not a WARC file at all, an empty
one. None of them may end the run, and none may pass unnoticed, so reading a file ends in one of:
- every record read whole (`problem` is None);
- `file:empty`: the file has no byte;
- `file:not_warc`: its first bytes are not a WARC record (random bytes, text, gzip of text);
- `file:truncated_at=<offset>`: the record that starts at byte <offset> ends early (a cut download);
  the records before it are read as usual;
- `file:corrupt_after=<offset>`: the bytes after the record at <offset>, which was read whole, are
  not a WARC record (damage mid-way); the records up to it are read as usual.
Offsets are the records' byte offsets in the file as stored (compressed, for .warc.gz).

fastwarc ends a cut file silently (with a short last record, or with none for a gzip member cut
before its first decodable byte), and fails on bad bytes with an `OSError` that names no file and no
offset: this module turns both into the reasons above.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO, Iterator

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

EMPTY = "file:empty"
NOT_WARC = "file:not_warc"


class DamagedCrawlFile(ValueError):
    """A crawl file that could not be read whole, raised where the run is strict about it; the
    message names the file and the reason (with its offset)."""


class _TailKeeper(io.RawIOBase):
    """A stream's bytes passed through unchanged, keeping those from the last `mark`ed offset on: the
    end of a file is checked from what was read already, never read twice (over HTTP, a second
    request)."""

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self.raw, self.read_bytes = raw, 0
        self.kept, self.kept_from = bytearray(), 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:  # fastwarc asks once, where the stream starts; it never seeks
        return self.read_bytes

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.kept += data
        self.read_bytes += n
        return n

    def mark(self, offset: int) -> None:
        """Bytes before `offset` are no longer needed."""
        del self.kept[:max(0, offset - self.kept_from)]
        self.kept_from = max(self.kept_from, offset)

    def tail(self, offset: int) -> bytes:
        """Every byte from `offset` (at or after the last mark) to the end of the stream."""
        return bytes(self.kept[offset - self.kept_from:]) + self.raw.read()


class WarcScan:
    """The response records of one open WARC file, in file order, with their payloads unparsed.

    Iterating never raises for a damaged file: it ends, and `problem` says why (see the module
    doc). `records` counts the records of every type read before that."""

    def __init__(self, stream: BinaryIO, uri: str):
        self.stream, self.uri = _TailKeeper(stream), uri
        self.records = 0
        self.problem: str | None = None

    def __iter__(self) -> Iterator[WarcRecord]:
        last_whole: int | None = None
        try:
            # Every record type is read, so that a file of requests and metadata alone is told
            # apart from a file with no WARC record at all.
            for record in ArchiveIterator(self.stream, parse_http=False):
                # Both fields are mandatory: a record without them was cut inside its own headers.
                if "WARC-Type" not in record.headers or "Content-Length" not in record.headers:
                    self.problem = f"file:truncated_at={record.stream_pos}"
                    return
                self.records += 1
                if record.record_type == WarcRecordType.response:
                    yield record
                # What the reader above left of the block, read now: a block shorter than its
                # Content-Length means the file ends inside this record.
                read = record.reader.tell() + record.reader.consume()
                if read < record.content_length:
                    self.problem = f"file:truncated_at={record.stream_pos}"
                    return
                last_whole = record.stream_pos
                self.stream.mark(last_whole)
        except OSError:  # fastwarc's parse or gzip error: bad bytes where a record should start
            self.problem = NOT_WARC if last_whole is None else f"file:corrupt_after={last_whole}"
            return
        if self.records == 0:
            self.problem = EMPTY if self.stream.read_bytes == 0 else NOT_WARC
        elif last_whole is not None:
            self.problem = self._cut_after_last_record(last_whole)

    def _cut_after_last_record(self, last: int) -> str | None:
        """A .warc.gz file cut a few bytes into a record's gzip member ends where fastwarc finds
        nothing to decompress, silently. The last record's member must be followed by nothing:
        decompress it again and look at what comes after it."""
        tail = self.stream.tail(last)
        if tail[:2] != b"\x1f\x8b":  # an uncompressed file: fastwarc parsed every byte of it
            return None
        member = zlib.decompressobj(wbits=31)
        member.decompress(tail)
        if not member.eof:  # the last member itself lacks its end
            return f"file:truncated_at={last}"
        rest = member.unused_data
        if rest.strip(b"\x00\r\n "):
            return f"file:truncated_at={last + len(tail) - len(rest)}"
        return None

    def raise_if_damaged(self) -> None:
        if self.problem:
            raise DamagedCrawlFile(f"crawl file {self.uri}: {self.problem} (source.strict is on: a damaged "
                                   "crawl file fails the run; turn it off to skip and count such files)")

