"""Reading a batch upload off the wire, with a byte counter, into one spooled temporary file.

The body is either the JSONL itself or a ``multipart/form-data`` form whose ``file`` part holds it.
Either way nothing is kept beyond ``max_batch_bytes``: a Content-Length over the limit is refused
before a byte of the body is read, and a body without one (chunked) is refused the moment the
count passes the limit. The multipart form is parsed as it streams in (python-multipart's
streaming parser, not ``request.form()``, which would first write the whole upload to a temporary
file of its own): the ``file`` part's bytes go straight to the one spool, other parts are skipped.
"""

from __future__ import annotations

import hashlib
import tempfile
from typing import IO

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from scheduler.batches.service import InvalidBatch
from scheduler.errors import QueueError

SPOOL_IN_MEMORY_BYTES = 1 << 20
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and small fields around the file
FILE_PART = b"file"


class BodyTooLarge(QueueError):
    """More than the limit: ``line`` is where the limit fell when the body was counted as it
    came, ``declared`` the Content-Length that was refused before reading."""

    def __init__(self, limit_bytes: int, line: int | None = None,
                 declared: int | None = None) -> None:
        if line is not None:
            said = f"the upload is larger than {limit_bytes} bytes (the limit falls in line {line})"
        elif declared is not None:
            said = (f"the upload is {declared} bytes (its Content-Length), larger than the "
                    f"limit of {limit_bytes} bytes")
        else:
            said = f"the upload is larger than {limit_bytes} bytes"
        super().__init__(f"{said}; split it into several batches")
        self.line = line
        self.declared = declared


class _Spool:
    """The JSONL bytes, counted, hashed and spooled (memory, then a temporary file)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.size = self.newlines = 0

    def take(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.limit_bytes:
            line = self.newlines + chunk[: self.limit_bytes - self.size].count(b"\n") + 1
            raise BodyTooLarge(self.limit_bytes, line=line)
        self.size += len(chunk)
        self.newlines += chunk.count(b"\n")
        self.digest.update(chunk)
        self.file.write(chunk)


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def spool_upload(request: Request, limit_bytes: int) -> tuple[IO[bytes], str]:
    """The JSONL bytes (raw body, or the ``file`` part of a multipart form) in a spooled temp
    file, with their SHA-256; raises BodyTooLarge past the limit without reading further."""
    spool = _Spool(limit_bytes)
    try:
        declared = _content_length(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            if declared is not None and declared > limit_bytes + MULTIPART_OVERHEAD_BYTES:
                raise BodyTooLarge(limit_bytes, declared=declared)
            await _read_multipart(request, spool, limit_bytes + MULTIPART_OVERHEAD_BYTES)
        else:
            if declared is not None and declared > limit_bytes:
                raise BodyTooLarge(limit_bytes, declared=declared)
            async for chunk in request.stream():
                spool.take(chunk)
    except BaseException:
        spool.file.close()
        raise
    spool.file.seek(0)
    return spool.file, spool.digest.hexdigest()


async def _read_multipart(request: Request, spool: _Spool, raw_limit: int) -> None:
    """Feed the form to python-multipart as it arrives; the ``file`` part goes to ``spool``."""
    _, params = parse_options_header(request.headers["content-type"])
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidBatch("the multipart upload has no boundary in its Content-Type", [], 0)
    disposition = b""
    header_name = header_value = b""
    in_file = False
    files = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        nonlocal header_name
        header_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        nonlocal header_value
        header_value += data[start:end]

    def on_header_end() -> None:
        nonlocal disposition, header_name, header_value
        if header_name.lower() == b"content-disposition":
            disposition = header_value
        header_name = header_value = b""

    def on_headers_finished() -> None:
        nonlocal in_file, files, disposition
        _, options = parse_options_header(disposition)
        in_file = options.get(b"name") == FILE_PART
        disposition = b""
        if in_file:
            files += 1
            if files > 1:
                raise InvalidBatch("the multipart upload has more than one `file` part; send "
                                   "one JSONL file per batch", [], 0)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if in_file:
            spool.take(data[start:end])

    def on_part_end() -> None:
        nonlocal in_file
        in_file = False

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end})
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > raw_limit:
                raise BodyTooLarge(spool.limit_bytes)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise InvalidBatch(f"the multipart upload cannot be read: {exc}", [], 0) from None
    if files == 0:
        raise InvalidBatch("multipart upload needs a `file` part holding the JSONL", [], 0)
