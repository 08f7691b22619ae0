"""Fetching an input video from an http(s) URL to a local file, safely.

Streams to disk (never whole in memory) with a size and a time limit, refuses
HTML and other non-media answers, and, when a ``UrlPolicy`` says so, refuses
loopback, private, link-local and metadata addresses on every redirect hop
unless an allow-list permits them (server-side request forgery protection).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from vidinfer.errors import FetchError, InvalidInput, PayloadTooLarge

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

    def check(self, url: str) -> None:
        """Raise ``FetchError`` if ``url`` may not be fetched."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"input_url must be an http(s) URL, got {url[:200]!r}", code="invalid_url")
        if self.allow_private:
            return
        host = parts.hostname.lower()
        if host in self.allow_hosts:
            return
        try:
            infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                       type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve host {host!r}: {exc.strerror}", code="url_unreachable") from exc
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if any(ip in net for net in self.allow_networks):
                continue
            if not ip.is_global or ip.is_multicast:
                raise FetchError(
                    f"input_url host {host!r} resolves to a non-public address ({ip}); "
                    "add it to VIDINFER_URL_ALLOWLIST to allow it",
                    code="url_forbidden",
                )


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
            policy.check(current)
            try:
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = urljoin(current, location)
                        continue
                    _check_response(url, response, max_bytes)
                    _stream_body(response, dest, max_bytes, deadline, on_progress)
                    return dest
            except httpx.TimeoutException as exc:
                raise FetchError(f"timed out fetching {url}", code="url_timeout") from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"cannot fetch {url}: {exc}", code="url_unreachable") from exc
    raise FetchError(f"too many redirects fetching {url}", code="url_unreachable")


def _check_response(url: str, response: httpx.Response, max_bytes: int) -> None:
    if response.status_code >= 400:
        raise FetchError(f"fetching {url} answered HTTP {response.status_code}", code="url_unreachable")
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith(_NOT_MEDIA):
        raise FetchError(f"{url} returned {ctype}, not a video", code="url_not_video")
    length = response.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"{url} is {int(length)} bytes; the limit is {max_bytes}", code="input_too_large")


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
