"""Fetching an input video from an http(s) URL to a local file, safely.

Streams to disk (never whole in memory) with a size and a time limit, refuses
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from vidinfer.errors import FetchError, PayloadTooLarge
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
        allow-listed host name)."""
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
                    f"input_url host {host!r} resolves to a non-public address ({ip}); "
                    "add it to VIDINFER_URL_ALLOWLIST to allow it",
                    code="url_forbidden",
                )
        return str(ipaddress.ip_address(infos[0][4][0])) if infos else None

    def pin(self, url: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """Check ``url`` and return (URL to request, headers, httpx extensions) that connect to the very
        address checked: the host name is kept for ``Host`` and TLS (SNI and certificate checks)."""
        address = self.check(url)
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


def fetch_to_file(
    url: str,
    dest: Path,
    *,
    policy: UrlPolicy,
    max_bytes: int,
    timeout: float,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest``; follow redirects only to allowed hosts."""
    deadline = time.monotonic() + timeout
    current = url
    limits = httpx.Timeout(min(timeout, 30.0))
    with httpx.Client(follow_redirects=False, timeout=limits) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target, headers, extensions = policy.pin(current)  # checked here, connected to as checked
            try:
                with client.stream("GET", target, headers=headers, extensions=extensions) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        try:
                            current = urljoin(current, location)
                        except ValueError:  # "http://[::1" and the like
                            raise FetchError(f"{shown_url(url)} redirected to a malformed URL",
                                             code="url_unreachable") from None
                        continue
                    _check_response(url, response, max_bytes)
                    _stream_body(response, dest, max_bytes, deadline, on_progress)
                    return dest
            except httpx.TimeoutException as exc:
                raise FetchError(f"timed out fetching {shown_url(url)}", code="url_timeout") from exc
            except httpx.HTTPError as exc:
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


def _stream_body(response: httpx.Response, dest: Path, max_bytes: int, deadline: float,
                 on_progress: Callable[[int, int | None], None] | None) -> None:
    total = int(response.headers["content-length"]) if response.headers.get("content-length", "").isdigit() else None
    got = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for chunk in response.iter_bytes(1 << 20):
            got += len(chunk)
            if got > max_bytes:
                raise PayloadTooLarge(f"the input is larger than the limit of {max_bytes} bytes",
                                      code="input_too_large")
            if time.monotonic() > deadline:
                raise FetchError("fetching the input took longer than allowed", code="url_timeout")
            out.write(chunk)
            if on_progress is not None:
                on_progress(got, total)
