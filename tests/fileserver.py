"""Loopback HTTP servers for ``input_url`` tests: a local folder, and hostile servers that never finish.

    with serve_directory(tmp_path) as base:
        client.submit(f"{base}/video.mp4", ...)

    with serve_hostile() as slow:
        client.submit(f"{slow.url}/drip", ...)      # see HostileServer for the paths

(the test servers allow loopback URLs with ``VIDINFER_URL_ALLOWLIST=127.0.0.0/8``).
"""

from __future__ import annotations

import functools
import http.server
import select
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["HostileServer", "serve_directory", "serve_hostile"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_directory(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 at a free port; yields the base URL (no trailing slash)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class HostileServer:
    """A raw-socket server that answers by path, slowly or never (``interval``: seconds per dripped byte):

    - ``/drip``: a 200 with a 10 MB ``Content-Length``, then one body byte per ``interval``
    - ``/drip-headers``: the status line, then one header byte per ``interval``, never ending the headers
    - ``/stall-body``: the headers, then nothing
    - ``/stall-headers``: reads the request, answers nothing (an ``https://`` URL to any path: accepts the
      TCP connection and never answers the TLS handshake)
    - ``/slow?rate=N&size=M``: ``M`` bytes of video/mp4 at about ``N`` bytes/s, then the end: an honest slow link
    - ``/flood``: a 200 whose body never ends, sent as fast as the client takes it

    ``requested`` lists the paths asked for; the server holds every connection until its client goes away
    (or the server stops), so ``wait_idle`` tells that a fetch let go of every connection it made.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.requested: list[str] = []
        self._open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.allow_reuse_address = True
        self._server.server_bind()
        self._server.server_activate()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)

    def wait_requested(self, path: str, timeout: float = 30.0) -> None:
        """Wait until a request for ``path`` has come (``""``: something not HTTP, a TLS handshake)."""
        _wait(lambda: path in self.requested, timeout, f"no request for {path!r} came")

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every connection made to the server has been closed by its client."""
        _wait(lambda: self._open == 0, timeout, f"{self._open} connections still open")

    # -- the server side ------------------------------------------------------------------------------
    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self._open += 1
        try:
            self._answer(sock)
        finally:
            with self._lock:
                self._open -= 1

    def _answer(self, sock: socket.socket) -> None:
        path = self._read_request(sock)
        self.requested.append((path or "").split("?")[0])
        try:
            if path is None or path.startswith("/stall-headers"):
                self._hold(sock)
            elif path.startswith("/stall-body"):
                sock.sendall(_HEADERS)
                self._hold(sock)
            elif path.startswith("/drip-headers"):
                sock.sendall(b"HTTP/1.1 200 OK\r\n")
                self._drip(sock, b"X-Slow: " + b"a" * 10_000_000)
            elif path.startswith("/drip"):
                sock.sendall(_HEADERS)
                self._drip(sock, b"\0" * 10_000_000)
            elif path.startswith("/flood"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                while not self._stop.is_set():
                    sock.sendall(b"x" * 65536)
            elif path.startswith("/slow"):
                query = dict(item.split("=", 1) for item in path.partition("?")[2].split("&") if "=" in item)
                self._slow(sock, int(query.get("rate", "10000")), int(query.get("size", "20000")))
                return
            else:
                sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
        except OSError:  # the client went away mid-send
            pass

    def _read_request(self, sock: socket.socket) -> str | None:
        """The request's path, or None when what came is not an HTTP request (a TLS handshake)."""
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            ready, _, _ = select.select([sock], [], [], 0.1)
            if self._stop.is_set():
                return None
            if not ready:
                continue
            piece = sock.recv(4096)
            if not piece:
                return None
            data += piece
            if not data[:1].isalpha():  # a TLS ClientHello starts with byte 0x16
                return None
        parts = data.split(b"\r\n", 1)[0].split()
        return parts[1].decode("latin-1") if len(parts) == 3 else None

    def _gone(self, sock: socket.socket, wait: float) -> bool:
        """Wait up to ``wait`` s; True when the client closed the connection or the server stops."""
        ready, _, _ = select.select([sock], [], [], wait)
        if self._stop.is_set():
            return True
        if ready:
            try:
                return sock.recv(4096) == b""
            except OSError:
                return True
        return False

    def _hold(self, sock: socket.socket) -> None:
        while not self._gone(sock, 0.1):
            pass

    def _drip(self, sock: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            sock.sendall(data[i:i + 1])
            if self._gone(sock, self.interval):
                return

    def _slow(self, sock: socket.socket, rate: int, size: int) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nConnection: close\r\n"
                     + f"Content-Length: {size}\r\n\r\n".encode())
        step = max(1, rate // 10)  # ten pieces a second
        sent = 0
        while sent < size and not self._stop.is_set():
            piece = min(step, size - sent)
            sock.sendall(b"\0" * piece)
            sent += piece
            time.sleep(0.1)

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _wait(done: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(0.05)


_HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 10000000\r\n\r\n"


@contextmanager
def serve_hostile(interval: float = 0.5) -> Iterator[HostileServer]:
    """A ``HostileServer`` on 127.0.0.1 at a free port, for the time of the block."""
    server = HostileServer(interval).start()
    try:
        yield server
    finally:
        server.close()
