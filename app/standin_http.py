"""The stand-in Memory API's HTTP plumbing: a threading server and its handler."""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from app.standin_schema import Answer, Request, error

if TYPE_CHECKING:
    from app.standin import StandIn


class Server(ThreadingHTTPServer):
    """A threading HTTP server that knows its stand-in."""

    daemon_threads = True
    # Benchmarks open many connections at once; the default backlog of 5 drops some.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], standin: StandIn) -> None:
        self.standin = standin
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up (the bridge's timeouts do, on hangs)."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Reads one HTTP request, asks the stand-in, writes its answer."""

    protocol_version = "HTTP/1.1"
    server: Server
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 30

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; the echo callback is the stand-in's voice."""

    def _serve(self) -> None:
        """Hand the request to the stand-in and write what it answers."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return self._write(error(400, "Content-Length must be an integer."))

        request = Request(
            self.command,
            self.path,
            self.headers.get("Content-Type", ""),
            self.headers.get("Authorization", ""),
            self.rfile.read(length),
            (time.monotonic(), time.time()),
        )
        answer = self.server.standin.handle(request)
        if answer is None:
            self.close_connection = True
            return None

        return self._write(answer)

    def _write(self, answer: Answer) -> None:
        """Send an answer with a JSON body and a Content-Length."""
        payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
