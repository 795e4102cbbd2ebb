"""A pass-through HTTP proxy in front of a sandbox that keeps every request body, so a
test can check the exact bytes the sandbox received."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Recorded:
    """What went through: (method, path, body bytes) in arrival order."""

    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, method: str, path_end: str) -> list[bytes]:
        with self.lock:
            return [b for m, p, b in self.requests if m == method and p.endswith(path_end)]


@contextmanager
def recording_proxy(
    target_root: str, missing: str | None = None, echo: str | None = None
) -> Iterator[tuple[str, Recorded]]:
    """Yield (the proxy's root URL, what it recorded); forwards to ``target_root``.
    `missing`: a path end the proxy answers 404 itself, as a server without the route;
    `echo`: a path end whose POSTs it answers 422 quoting the request's Authorization
    header in the message and a field's error, as a server that echoes what it got."""
    target = urlsplit(target_root)
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with recorded.lock:
                recorded.requests.append((self.command, self.path, body))
            if missing is not None and self.path.split("?")[0].endswith(missing):
                self._answer(404, "text/html", b"<html><body>404 Not Found</body></html>")
                return
            if echo is not None and self.command == "POST" and self.path.endswith(echo):
                said = f"rejected for {self.headers.get('Authorization')}"
                error = {"message": said, "errors": {"description": [said]}}
                self._answer(422, "application/json", json.dumps(error).encode())
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=30
            )
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _answer(self, status: int, kind: str, page: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()
