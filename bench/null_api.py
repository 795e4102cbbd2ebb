"""An API that costs (almost) nothing: the `own-cost` scenario's server.

Every POST is answered 201 with a given body whose ``data.id`` counts up (so no two
rows claim one appointment); every GET with an empty calendar (``{"items": []}``).
No authentication, no validation, no rate limit, no state: what a client spends
against it is its own cost, not the server's, which on a 2-core machine otherwise
shares the CPUs with the client (the sandbox's work is about half of a
`throughput` run's).

    python -m bench.null_api --body FILE --port-file FILE    (until SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

_ID = b'"data":{"id":'


class _Answers:
    """The 201 body with the next id, and the calendar's answer."""

    def __init__(self, body: bytes) -> None:
        start = body.find(_ID)
        if start < 0:
            raise ValueError('the body has no "data":{"id": to count up')
        end = body.index(b",", start + len(_ID))
        self._head, self._tail = body[: start + len(_ID)], body[end:]
        self._next = 0

    def created(self) -> bytes:
        self._next += 1
        return _response(b"201 Created", self._head + str(self._next).encode() + self._tail)

    def calendar(self) -> bytes:
        return _response(b"200 OK", b'{"items":[]}')


def _response(status: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % (status, len(body)) + body


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: all a client here sends."""

    def __init__(self, answers: _Answers) -> None:
        self._answers = answers
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return  # the body is still coming
            self._buffer = self._buffer[end + 4 + length :]
            get = head.startswith("GET ")
            assert self._transport is not None
            self._transport.write(self._answers.calendar() if get else self._answers.created())


async def serve(body: bytes, ready: Callable[[int], None], port: int = 0) -> None:
    """Serve on 127.0.0.1 until SIGTERM or SIGINT; `ready` gets the port."""
    answers = _Answers(body)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(answers), "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="an API that costs nothing (bench only)")
    parser.add_argument("--body", type=Path, required=True, help="a 201 body to answer with")
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    port_file: Path = args.port_file

    def ready(port: int) -> None:
        port_file.write_text(str(port))

    asyncio.run(serve(args.body.read_bytes(), ready, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
