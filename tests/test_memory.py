"""The Memory API client: every answer, and every failure to get one, is a Reply."""

import socket
import threading
import time

from jobs.memory import MemoryApi, _retry_after


def drip_server(status_line: bytes, delay: float) -> tuple[socket.socket, int]:
    """Serve one connection: headers at once, then the body one byte per ``delay``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(status_line + b"\r\nContent-Length: 100\r\n\r\n")
            try:
                for _ in range(100):
                    conn.sendall(b"x")
                    time.sleep(delay)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_a_dripping_answer_is_cut_at_the_timeout():
    """A 202 whose body drips in byte by byte is no answer after the timeout."""
    server, port = drip_server(b"HTTP/1.1 202 Accepted", delay=0.3)
    api = MemoryApi(f"http://127.0.0.1:{port}", ("AC0", "t"), timeout=1.0, pool=1)
    started = time.monotonic()
    reply = api.post_events("mem_store_x", "mem_profile_x", ["{}"])
    elapsed = time.monotonic() - started
    server.close()

    assert reply.status == 0
    assert "Timeout" in reply.body
    assert elapsed < 2.5


def test_retry_after_in_seconds_dates_and_nonsense():
    """Retry-After is read as seconds or a date, capped at an hour, never a crash."""
    assert _retry_after("3") == 3.0
    assert _retry_after("-5") == 0.0
    assert _retry_after("garbage") == 0.0
    assert _retry_after("nan") == 0.0
    for huge in ("inf", "1e400", "86400000"):
        assert _retry_after(huge) == 3600.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 55 <= _retry_after(future) <= 61


def test_no_server_is_no_answer():
    """A refused connection becomes a Reply with status 0, not an exception."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = MemoryApi(f"http://127.0.0.1:{port}", ("AC0", "t"), timeout=1.0, pool=1)
    reply = api.post_events("mem_store_x", "mem_profile_x", ["{}"])
    assert reply.status == 0
    assert reply.error.startswith("no answer")
