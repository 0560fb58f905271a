"""How ``imgq api`` serves the app: uvicorn's HTTP protocol, with ``TCP_NODELAY`` on every
connection.

Several processes on one port (``imgq api --workers N``) share a listening socket that uvicorn
binds itself, with protocol number 0; asyncio then leaves Nagle's algorithm on for the
connections it accepts, and each answer (headers, then body: two writes) waits out the client's
delayed ACK, about 40 ms per request on Linux. One process binding its own port does not.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's own protocol (httptools when installed, else h11) that sends at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
