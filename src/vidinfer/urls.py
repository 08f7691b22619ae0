"""Client-supplied URLs, read strictly: every malformed one is refused with ``invalid_url`` (400).

A URL from a client (``input_url``, ``notify_url``, the CLI's ``VIDEO``, the SDK's ``api_url``) is
hostile until proven otherwise. Python's ``urlsplit`` raises ``ValueError`` on some inputs (an
unbalanced ``[``, a port of ``99999`` or ``abc``) and silently accepts others that httpx, which
does the fetching, reads differently (a backslash, a bracket too many, a control character). So
a URL is accepted only when it is plain text, both parsers read it, and they agree on its host;
everything else is one clear error instead of a 500 or a request to a host nobody checked::

    url = parse_http_url("https://example.com:8443/v.mp4", "input_url")
    url.host, url.port   # ('example.com', 8443)
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

from vidinfer.errors import InvalidInput

#: longest URL accepted (the API's request fields say the same)
MAX_URL_LENGTH = 4096

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
#: the host part of a netloc: a bracketed IPv6 address or a name without brackets, then an optional port
_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\[\]:@]+)(:[0-9]{0,5})?$")
#: a host name once IDNA-encoded (underscores occur in real DNS names)
_ASCII_HOST = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")


@dataclass(frozen=True)
class HttpUrl:
    """An http(s) URL both parsers agree on: ``host`` lower-case ASCII (IDNA), no brackets."""

    parts: SplitResult
    host: str
    port: int


def _bad(field: str, url: str, why: str) -> InvalidInput:
    return InvalidInput(f"{field} is not a valid URL ({why}): {url[:200]!r}", code="invalid_url")


def url_scheme(url: str, field: str = "input_url", *, spaces: bool = False) -> str:
    """The lower-case scheme of ``url`` once it is known to be plain text of a sane length.

    Control, format (zero-width, bidi) and separator characters are refused everywhere; ``spaces``
    lets plain spaces through (an ``s3://`` key may hold them: it is not percent-decoded)."""
    if not isinstance(url, str) or not url:
        raise InvalidInput(f"{field} is empty", code="invalid_url")
    if len(url) > MAX_URL_LENGTH:
        raise _bad(field, url, f"longer than {MAX_URL_LENGTH} characters")
    for ch in url:
        if ch == " " and spaces:
            continue
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"):
            raise _bad(field, url, f"it contains the character U+{ord(ch):04X}; percent-encode it")
    match = _SCHEME.match(url)
    if not match:
        raise _bad(field, url, "no scheme such as https://")
    return match.group(1).lower()


def parse_http_url(url: str, field: str = "input_url") -> HttpUrl:
    """``url`` as an http(s) URL with a host, or ``InvalidInput`` (``invalid_url``) saying why."""
    scheme = url_scheme(url, field)
    if scheme not in ("http", "https") or url[len(scheme):len(scheme) + 3] != "://":
        raise InvalidInput(f"{field} must be an http(s) URL, got {url[:200]!r}", code="invalid_url")
    if "\\" in url:
        raise _bad(field, url, "a backslash; percent-encode it as %5C")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # an unbalanced "[", a port out of range or not a number
        raise _bad(field, url, str(exc)) from None
    hostport = parts.netloc.rpartition("@")[2]
    if not parts.hostname or not _HOSTPORT.match(hostport):
        raise _bad(field, url, "no host, or a malformed host or port")
    host = _ascii_host(parts.hostname, bracketed_host(hostport), field, url)
    if port == 0 or hostport.endswith(":"):
        raise _bad(field, url, "the port must be a number from 1 to 65535")
    if _httpx_host(url, bracketed_host(hostport)) not in (host, None):
        raise _bad(field, url, "its host is ambiguous")  # urlsplit and httpx would reach different hosts
    return HttpUrl(parts, host, port or (443 if scheme == "https" else 80))


def _httpx_host(url: str, bracketed: bool) -> str | None:
    """The host httpx reads in ``url``; None where httpx cannot read it (``0177.0.0.1``): such a URL is only
    ever fetched by the address it resolves to (``UrlPolicy.pin``), or fails as unreachable."""
    try:
        raw = httpx.URL(url).raw_host.decode("ascii").lower()
        return str(ipaddress.IPv6Address(raw.strip("[]"))) if bracketed else raw
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return None


def bracketed_host(hostport: str) -> bool:
    return hostport.startswith("[")


def _ascii_host(hostname: str, bracketed: bool, field: str, url: str) -> str:
    if bracketed:
        try:
            return str(ipaddress.IPv6Address(hostname))
        except ValueError:
            raise _bad(field, url, "the brackets hold no IPv6 address") from None
    try:
        host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:  # an empty or over-long label, a character IDNA refuses
        raise _bad(field, url, "the host is not a valid domain name") from None
    if len(host) > 253 or not _ASCII_HOST.match(host):
        raise _bad(field, url, "the host is not a valid domain name")
    return host
