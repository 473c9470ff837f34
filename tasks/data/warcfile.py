"""The response records of a WARC file, read by the URL filter and the extractor alike.

A file that is not a WARC file fails with one line that names it: fastwarc's own error ("Invalid
WARC header") does not say which file, and an empty file would otherwise pass as a crawl file
without pages.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType


class NotAWarcFile(ValueError):
    """The file holds no readable WARC records; the message names the file."""


def response_records(stream: BinaryIO, uri: str) -> Iterator[WarcRecord]:
    """The response records of an open WARC file, in file order, with their payloads unparsed."""
    records = 0
    try:
        # Every record type is read, so that a file of requests and metadata alone is told apart
        # from a file with no WARC record at all.
        for record in ArchiveIterator(stream, parse_http=False):
            records += 1
            if record.record_type == WarcRecordType.response:
                yield record
    except OSError as err:  # fastwarc's parse error, or a read error of the stream: either way, this file
        raise NotAWarcFile(f"{uri} could not be read as a WARC file ({err})") from None
    if records == 0:
        raise NotAWarcFile(f"{uri} holds no WARC record (empty, or not a WARC file)")
