"""Fetching an input video from an http(s) URL to a local file, safely.

Streams to disk (never whole in memory) with a size limit, a deadline on the whole fetch, a minimum
transfer rate and cancellation that a byte-at-a-time server cannot starve (``Watchdog``), refuses
HTML and other non-media answers, and, when a ``UrlPolicy`` says so, refuses
loopback, private, link-local and metadata addresses on every redirect hop
unless an allow-list permits them (server-side request forgery protection).

The address that was checked is the address connected to: each request goes to the IP
``UrlPolicy.pin`` resolved and checked (the host name travels in ``Host`` and as the TLS
server name), so a DNS answer that changes between the check and the connection (DNS
rebinding) cannot steer a fetch to a refused address.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from vidinfer.errors import Cancelled, FetchError, InvalidInput, PayloadTooLarge
from vidinfer.urls import parse_http_url

_NOT_MEDIA = ("text/html", "application/xhtml", "application/json", "text/plain", "application/xml", "text/xml")
MAX_REDIRECTS = 5

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class UrlPolicy:
    """Which hosts a fetch may reach. ``allow_private=True`` is for the local CLI."""

    allow_private: bool = False
    allow_hosts: frozenset[str] = field(default_factory=frozenset)
    allow_networks: tuple[Network, ...] = ()

    @classmethod
    def from_allowlist(cls, allowlist: str) -> UrlPolicy:
        """Parse ``VIDINFER_URL_ALLOWLIST``: hosts or CIDRs, comma-separated."""
        hosts: set[str] = set()
        networks: list[Network] = []
        for item in (x.strip() for x in allowlist.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower())
        return cls(allow_private=False, allow_hosts=frozenset(hosts), allow_networks=tuple(networks))

    def check(self, url: str, field: str = "input_url") -> str | None:
        """Raise ``FetchError`` if ``url`` may not be fetched (``InvalidInput`` if it is no well-formed
        http(s) URL); else the address checked (None when not resolved: private addresses allowed, or an
        allow-listed host name). ``field``: the request's field that gave the URL, for the message."""
        parsed = parse_http_url(url, field)
        if self.allow_private:
            return None
        host = parsed.host
        if host in self.allow_hosts:
            return None
        try:
            infos = socket.getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve host {host!r}: {exc.strerror}", code="url_unreachable") from exc
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if any(ip in net for net in self.allow_networks):
                continue
            if not _is_public(ip):
                raise FetchError(
                    f"{field} host {host!r} resolves to a non-public address ({ip}); "
                    "add it to VIDINFER_URL_ALLOWLIST to allow it",
                    code="url_forbidden",
                )
        return str(ipaddress.ip_address(infos[0][4][0])) if infos else None

    def pin(self, url: str, field: str = "input_url") -> tuple[str, dict[str, str], dict[str, str]]:
        """Check ``url`` and return (URL to request, headers, httpx extensions) that connect to the very
        address checked: the host name is kept for ``Host`` and TLS (SNI and certificate checks)."""
        address = self.check(url, field)
        if address is None:  # private addresses allowed (the CLI), or an allow-listed host name
            return url, {}, {}
        parts = urlsplit(url)
        host = f"[{address}]" if ":" in address else address
        netloc = f"{host}:{parts.port}" if parts.port else host
        return (urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc.rpartition("@")[2]},
                {"sni_hostname": parts.hostname or ""})


#: IPv6 prefixes that carry an IPv4 address in their last 32 bits and reach it through a gateway
_EMBEDDING = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"),  # NAT64
              ipaddress.ip_network("::/96"))  # IPv4-compatible (deprecated)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global unicast address, also when it wraps an IPv4 one (mapped, NAT64, 6to4, Teredo)."""
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is None and any(ip in net for net in _EMBEDDING):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return _is_public(inner)
    return True


def shown_url(url: str) -> str:
    """``url`` for messages and logs: without user info, query or fragment, where presigned URLs keep
    their credentials (``X-Amz-Signature``, tokens)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    hidden = "?…" if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{parts.path}{hidden}"


#: longest silence httpx allows one connect (and TLS handshake) or one read; the watchdog bounds the whole
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
#: seconds between the watchdog's looks at the clock, the transfer rate and the cancel flag
WATCH_EVERY = 0.2


class Watchdog:
    """Ends a fetch that runs past its deadline, transfers too slowly or is cancelled.

    httpx's timeouts bound each connect and each read, and a read's restarts with every byte, so a
    server that sends one byte every half second (in the headers or the body) is never cut off by
    them; a check in the reading loop does not run while a read blocks either. This thread looks at
    the clock on its own and shuts the connection's socket down, which wakes a blocked TLS handshake
    or read at once; the fetching thread then raises ``reason``. Sockets are learnt from httpcore's
    ``trace`` extension as each connection is made (a duplicate descriptor, closed when done).
    """

    def __init__(self, url: str, timeout: float, min_rate: float, rate_window: float,
                 should_cancel: Callable[[], bool] | None) -> None:
        self.url = shown_url(url)  # as messages name it
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.min_rate = min_rate
        self.rate_window = rate_window
        self.should_cancel = should_cancel
        #: body bytes received so far (raw, across redirect hops); written by the fetching thread
        self.received = 0
        self.reason: BaseException | None = None
        self._window = (time.monotonic(), 0)  # (start, bytes received by then)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vidinfer-fetch-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:  # noqa: PYI034 - typing.Self needs Python 3.11
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def trace(self, event: str, info: dict) -> None:
        """httpcore's ``trace`` extension: keep a handle on each new connection's socket."""
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        if sock is None:
            return
        handle = sock.dup()  # stays valid when TLS wraps (and detaches) the original object
        with self._lock:
            self._sockets.append(handle)
            stopped = self.reason is not None
        if stopped:  # the watchdog fired while this connection was being made
            _shut(handle)

    def check(self) -> None:
        """Raise why the fetch was stopped, if it was; the fetching thread calls it on every chunk."""
        if self.reason is None and self.remaining() <= 0:
            self.reason = self.timed_out()
        if self.reason is not None:
            raise self.reason

    def timed_out(self) -> FetchError:
        return FetchError(f"fetching {self.url} took longer than the {self.timeout:g} s allowed "
                          "(VIDINFER_FETCH_TIMEOUT)", code="url_timeout")

    def _look(self) -> BaseException | None:
        now = time.monotonic()
        if now >= self.deadline:
            return self.timed_out()
        start, before = self._window
        if self.min_rate > 0 and now - start >= self.rate_window:
            got = self.received - before
            if got < self.min_rate * (now - start):
                return FetchError(
                    f"fetching {self.url} was too slow: {got} bytes in the last {now - start:.0f} s, under the "
                    f"minimum of {self.min_rate:g} bytes/s (VIDINFER_FETCH_MIN_RATE)", code="url_timeout")
            self._window = (now, self.received)
        if self.should_cancel is not None and self.should_cancel():
            return Cancelled("the job was cancelled while its input was being fetched")
        return None

    def _watch(self) -> None:
        while not self._done.wait(WATCH_EVERY):
            try:
                reason = self._look()
            except BaseException as exc:  # noqa: BLE001 - e.g. the worker's parent is gone: stop, re-raised
                reason = exc
            if reason is None:
                continue
            with self._lock:
                if self.reason is None:
                    self.reason = reason
                for sock in self._sockets:
                    _shut(sock)
            return


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the other side
        pass


def fetch_to_file(
    url: str,
    dest: Path,
    *,
    policy: UrlPolicy,
    max_bytes: int,
    timeout: float,
    min_rate: float = 0.0,
    rate_window: float = 30.0,
    on_progress: Callable[[int, int | None], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Path:
    """Download ``url`` to ``dest``; follow redirects only to allowed hosts.

    ``timeout`` bounds the whole fetch (every hop's connect, headers and body); ``min_rate`` (bytes/s,
    0: off) fails a transfer that receives less over any ``rate_window`` seconds from the start, so a
    stalled server does not hold a worker for the whole ``timeout``; both fail with ``url_timeout``.
    ``should_cancel`` is polled a few times a second while the fetch runs: true raises ``Cancelled``.
    """
    current = url
    # the client first: loading its TLS certificates takes a while on a busy machine, before any network
    with httpx.Client(follow_redirects=False) as client, \
            Watchdog(url, timeout, min_rate, rate_window, should_cancel) as watchdog:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target, headers, extensions = policy.pin(current)  # checked here, connected to as checked
            except InvalidInput as exc:  # the request's URL is checked at submit: here, a redirect's target
                if current == url:
                    raise
                raise FetchError(f"{shown_url(url)} redirected to a URL that cannot be fetched: {exc.message}",
                                 code="url_unreachable") from None
            watchdog.check()
            left = watchdog.remaining()
            limits = httpx.Timeout(min(left, READ_TIMEOUT), connect=min(left, CONNECT_TIMEOUT))
            try:
                with client.stream("GET", target, headers=headers, timeout=limits,
                                   extensions={**extensions, "trace": watchdog.trace}) as response:
                    watchdog.check()
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        try:
                            current = urljoin(current, location)
                        except ValueError:  # "http://[::1" and the like
                            raise FetchError(f"{shown_url(url)} redirected to a malformed URL",
                                             code="url_unreachable") from None
                        continue
                    _check_response(url, response, max_bytes)
                    _stream_body(response, dest, max_bytes, watchdog, on_progress)
                    watchdog.check()  # a body read until the server closed: closed by the watchdog?
                    return dest
            except httpx.TimeoutException as exc:
                watchdog.check()
                connecting = isinstance(exc, httpx.ConnectTimeout)
                if left <= (CONNECT_TIMEOUT if connecting else READ_TIMEOUT):  # cut short by the deadline
                    raise watchdog.timed_out() from exc
                silence = f"could not connect in {CONNECT_TIMEOUT:g} s" if connecting else \
                    f"no data for {READ_TIMEOUT:g} s"
                raise FetchError(f"timed out fetching {shown_url(url)}: {silence}", code="url_timeout") from exc
            except httpx.HTTPError as exc:
                watchdog.check()  # the watchdog's shutdown surfaces here as a read or protocol error
                raise FetchError(f"cannot fetch {shown_url(url)}: {exc}", code="url_unreachable") from exc
    raise FetchError(f"too many redirects fetching {shown_url(url)}", code="url_unreachable")


def _check_response(url: str, response: httpx.Response, max_bytes: int) -> None:
    if response.status_code >= 400:
        raise FetchError(f"fetching {shown_url(url)} answered HTTP {response.status_code}", code="url_unreachable")
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith(_NOT_MEDIA):
        raise FetchError(f"{shown_url(url)} returned {ctype}, not a video", code="url_not_video")
    length = response.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"{shown_url(url)} is {int(length)} bytes; the limit is {max_bytes}", code="input_too_large")


def _stream_body(response: httpx.Response, dest: Path, max_bytes: int, watchdog: Watchdog,
                 on_progress: Callable[[int, int | None], None] | None) -> None:
    """Write the body as it arrives (each read's bytes, not buffered to a size, so the clock and the rate
    are looked at on every read, and the watchdog sees the bytes of a slow but honest link)."""
    total = int(response.headers["content-length"]) if response.headers.get("content-length", "").isdigit() else None
    got = 0
    before = watchdog.received
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for chunk in response.iter_bytes():
            watchdog.received = before + response.num_bytes_downloaded
            watchdog.check()
            got += len(chunk)
            if got > max_bytes:
                raise PayloadTooLarge(f"the input is larger than the limit of {max_bytes} bytes",
                                      code="input_too_large")
            out.write(chunk)
            if on_progress is not None:
                on_progress(got, total)
