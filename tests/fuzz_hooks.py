"""schemathesis hooks for ``tests/test_fuzz.py``: URL-shaped strings for every ``format: uri`` field.

The spec marks ``input_url`` and ``notify_url`` as ``format: uri``; random text rarely looks enough like a
URL to reach the URL parsers, so these strings are assembled from parts that have broken parsers before
(unbalanced IPv6 brackets, ports out of range or not numbers, empty hosts, control characters, unicode
and percent-encoded hosts, odd schemes, userinfo and backslash tricks, ``s3://`` oddities, this server's
own upload URLs with climbing keys), mixed with plain well-formed ones. Whatever comes out, the server
must answer as documented: 200, or a 4xx with an error code, never a 5xx.
"""

from __future__ import annotations

import os

import schemathesis
from hypothesis import strategies as st

#: the server under test (its own upload URLs are a separate path through the API)
BASE = os.environ.get("VIDINFER_FUZZ_BASE_URL", "http://127.0.0.1:9")

SCHEMES = st.sampled_from(["http", "https", "HTTP", "s3", "S3", "ftp", "file", "javascript", "gs", "data", "",
                           "h\x00ttp", "http ", "jar:http"])
SEPARATORS = st.sampled_from(["://", "://", "://", ":/", ":", "//", ":\\\\", ":///"])
HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "127.0.0.3", "[::1]", "[::1", "::1]", "[::1]]", "[::ffff:127.0.0.1]",
                     "[fe80::1%25lo]",
                     "localhost", "example.invalid", "bücher.invalid", "ｅｘａｍｐｌｅ．invalid", "", "a..b", "-a.invalid",
                     "%31%32%37.0.0.1", "[v1.x]", "0177.0.0.1", "2130706433", "evil.invalid\\@127.0.0.1",
                     "127.0.0.1\\@evil.invalid", "user:pw@127.0.0.1", "@", "a@b@127.0.0.1", "bucket", "Bucket",
                     "my-bucket", "a" * 64 + ".invalid", "exa mple.invalid", "exa\x00mple.invalid", "\u202eevil"]),
    st.text(min_size=0, max_size=12),
    st.from_regex(r"\A[a-z0-9-]{1,10}(\.[a-z0-9-]{1,10}){0,3}\Z"),
)
PORTS = st.one_of(st.just(""), st.sampled_from([":0", ":80", ":99999", ":abc", ":", ":-1", ":65536", ":8080", "::80",
                                                ":8O", ":１２３", ": 80", ":+80", ":0x50"]),
                  st.integers(min_value=-10, max_value=200_000).map(lambda p: f":{p}"))
PATHS = st.one_of(st.sampled_from(["/v.mp4", "/", "", "/../../etc/passwd", "//v.mp4", "/a b.mp4", "/v.mp4?x=1#y",
                                   "/v\n.mp4", "/v\x00.mp4", "/a\\b", "/./v.mp4", "?versionId=1"]),
                  st.text(max_size=20).map(lambda t: "/" + t))
OWN = st.sampled_from(["/blobs/uploads/acme/x/v.mp4", "/blobs/uploads/acme/../../server.log", "/blobs/../x",
                       "/blobs/uploads/other/x/v.mp4?X-Goog-Date=1&X-Goog-Expires=1&X-Goog-Signature=0",
                       "/blobs/%2e%2e/%2e%2e/etc/passwd", "/blobs/"]).map(lambda p: BASE + p)

#: mostly http(s)://, so that an odd host, port or path gets past the scheme check to the parsers behind it
NEARLY_HTTP = st.builds(lambda scheme, user, host, port, path: f"{scheme}://{user}{host}{port}{path}",
                        st.sampled_from(["http", "https", "HTTP", "s3"]),
                        st.sampled_from(["", "", "", "user:pw@", "@", "a@b@", "x\\@", "%40@"]), HOSTS, PORTS, PATHS)
URLS = st.one_of(
    NEARLY_HTTP,
    st.builds(lambda scheme, sep, host, port, path: f"{scheme}{sep}{host}{port}{path}",
              SCHEMES, SEPARATORS, HOSTS, PORTS, PATHS),
    OWN,
    st.text(min_size=1, max_size=30),
)

schemathesis.openapi.format("uri", URLS)
