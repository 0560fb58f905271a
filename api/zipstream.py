"""A zip archive written as a stream of chunks, one per entry: never the whole archive in memory.

``zipfile`` writes to an unseekable sink using data descriptors; we drain the sink after each
entry. Images are already compressed, so entries are stored, not deflated.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator

from storage.models import utcnow


class _Sink:
    """A write-only file: what zipfile writes is collected until drained (no tell, no seek)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def zip_stream(entries: Iterable[tuple[str, Callable[[], bytes]]]) -> Iterator[bytes]:
    """Yield a zip of ``(name, load)`` entries; ``load`` is called only when its turn comes."""
    sink = _Sink()
    stamp = utcnow().timetuple()[:6]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, load in entries:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = 0o644 << 16
            archive.writestr(info, load())
            chunk = sink.drain()
            if chunk:
                yield chunk
    yield sink.drain()
