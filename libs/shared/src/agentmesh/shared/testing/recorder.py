"""A local HTTP server that records what it is sent (Sentry envelopes, OTLP exports)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """Every request the server got, with its body decompressed."""

    url: str
    port: int
    requests: list[Received] = field(default_factory=list)

    async def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float = 30.0
    ) -> Received:
        """The first request matching ``predicate``, waiting without blocking the loop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request in list(self.requests):
                if predicate(request):
                    return request
            await asyncio.sleep(0.05)
        raise TimeoutError(f"nothing matching arrived within {timeout}s: {self.requests!r}")


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # only when the client has it, as it then uses it

        decoded: bytes = brotli.decompress(body)
        return decoded
    return body


@contextlib.contextmanager
def recording_server() -> Iterator[Recorder]:
    """A recorder on 127.0.0.1 answering every POST with 200 and ``{}``."""
    recorder: Recorder

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = _decode(raw, (self.headers.get("Content-Encoding") or "").lower())
            headers = {k.lower(): v for k, v in self.headers.items()}
            recorder.requests.append(Received(self.path, headers, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    recorder = Recorder(url=f"http://127.0.0.1:{port}", port=port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
