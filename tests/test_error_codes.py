"""The README documents exactly the error codes the code can emit, and each where it really lands.

Guards against a code that clients receive but cannot look up (``url_timeout`` and ``s3_unreachable``
were sent as job failures, status 5, and missing from the README), and against a documented code that
nothing sends any more. The codes are read from the source itself (``ast``), not from a hand-kept list:

- every call of a ``VidinferError`` class: its ``code=`` literal, or the class's default code when none is
  given; the class says the HTTP status, the CLI exit code and (through ``jobs.states.failure_kind``) the
  job ``status`` the code lands in;
- the API's own answers in ``api/app.py`` (``invalid_request``, ``not_found``, ...);
- the failures a job gets without an exception (``store.fail(job, "worker_lost", "worker_lost", ...)``).

The README's "Error codes" table is generated from that (``python tests/test_error_codes.py`` prints it)
and must equal it; the "Job status codes" table may name only codes that land in that row's status, and
must name every code of the classes a job's input fails with (``DecodeError``, ``FetchError``).
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vidinfer"
README = ROOT / "README.md"
START, END = "<!-- error-codes:start", "<!-- error-codes:end -->"

#: codes built with an f-string, by the f-string's source: what it can produce (add one here when asked to)
DYNAMIC = {"f'invalid_{what}s'": ("invalid_lines", "invalid_zones")}  # core/tracking.py: lines and zones
#: classes never raised while a job runs (a request's key, signature or rate): no job status
REQUEST_ONLY = {"Unauthorized", "Forbidden", "RateLimited"}
#: classes whose every code must be named in the job status table (what a job's input or model fails with)
JOB_CLASSES = {"DecodeError", "FetchError"}
NONE = "—"
API = "the API (validation, routing, faults)"


@dataclass(frozen=True, order=True)
class Row:
    """Where a code comes from and where it lands: an HTTP answer, a job status, a CLI exit code."""

    http: str
    job: str
    exit: str
    source: str


def _error_classes() -> dict[str, type]:
    sys.path.insert(0, str(SRC.parent))
    from vidinfer import errors
    from vidinfer.sdk import client

    found: dict[str, type] = {}
    pending = [errors.VidinferError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    assert {"JobFailed", "ConnectionFailed"} <= set(found), client  # the SDK's classes too
    return found


def _class_row(cls: type, in_sdk: bool) -> Row:
    from vidinfer.jobs.states import FAILURE_STATUS, failure_kind

    if in_sdk or cls.__module__.endswith(".sdk.client"):  # raised by the client itself
        return Row(NONE, NONE, NONE, "the Python client itself (before or after a call)")
    job = NONE if cls.__name__ in REQUEST_ONLY else str(FAILURE_STATUS[failure_kind(cls.__new__(cls))])
    return Row(str(cls.status_code), job, str(cls.exit_code), f"`{cls.__name__}`")


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literal_codes(node: ast.expr, where: str) -> tuple[str, ...]:
    """The codes a ``code=`` argument can be: a literal, a known f-string, or none (passed through)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.JoinedStr):
        source = ast.unparse(node)
        assert source in DYNAMIC, f"{where}: the code {source} is built at run time: list its values in DYNAMIC"
        return DYNAMIC[source]
    return ()  # code=code, code=exc.code: an existing code passed on


def emitted_codes() -> dict[str, set[Row]]:
    """code -> the rows it appears in, read from every module of the package."""
    from vidinfer.jobs.states import FAILURE_STATUS

    classes = _error_classes()
    codes: dict[str, set[Row]] = defaultdict(set)
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(), filename=rel)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name, where = _name(node.func), f"{rel}:{getattr(node, 'lineno', 0)}"
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if name in classes:
                row = _class_row(classes[name], rel.startswith("sdk/"))
                found = _literal_codes(keywords["code"], where) if "code" in keywords else (classes[name].code,)
                for code in found:
                    codes[code].add(row)
            elif name == "_error" and rel == "api/app.py":  # the API's own answers: _error(status, code, ...)
                status, code = node.args[0], node.args[1]
                if isinstance(code, ast.Constant):
                    http = str(status.value) if isinstance(status, ast.Constant) else "4xx"
                    codes[code.value].add(Row(http, NONE, NONE, API))
            elif name == "fail" and len(node.args) >= 3 and isinstance(node.args[1], ast.Constant) \
                    and isinstance(node.args[2], ast.Constant):  # store.fail(job, kind, code, message)
                kind = node.args[1].value
                codes[node.args[2].value].add(Row(NONE, str(FAILURE_STATUS[kind]), NONE, "a job's end"))
            elif "error_code" in keywords and isinstance(keywords["error_code"], ast.Constant) \
                    and isinstance(keywords["error_code"].value, str):  # state=FAILED, failure=..., error_code=...
                kind = keywords["failure"].value
                codes[keywords["error_code"].value].add(Row(NONE, str(FAILURE_STATUS[kind]), NONE, "a job's end"))
        if rel == "api/app.py":  # Starlette's HTTP errors: codes = {404: "not_found", ...}.get(status, "http_error")
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and [_name(t) for t in node.targets] == ["codes"]:
                    assert isinstance(node.value, ast.Dict), where
                    for key, value in zip(node.value.keys, node.value.values):
                        codes[value.value].add(Row(str(key.value), NONE, NONE, API))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and _name(node.func.value) == "codes" and node.func.attr == "get":
                    codes[node.args[1].value].add(Row("4xx", NONE, NONE, API))
    return dict(codes)


def render_table() -> str:
    """The README's error-code table: one row per (source, HTTP status, job status, CLI exit)."""
    rows: dict[Row, list[str]] = defaultdict(list)
    for code, where in emitted_codes().items():
        for row in where:
            rows[row].append(code)

    def order(row: Row) -> tuple:
        return (row.http == NONE, row.http, row.job, row.source)

    lines = ["| raised as | HTTP | job `status` | CLI exit | codes |", "|---|---|---|---|---|"]
    for row in sorted(rows, key=order):
        listed = ", ".join(f"`{c}`" for c in sorted(rows[row]))
        lines.append(f"| {row.source} | {row.http} | {row.job} | {row.exit} | {listed} |")
    return "\n".join(lines)


def _readme_section(start: str, end: str) -> str:
    text = README.read_text()
    assert start in text and end in text, f"README.md has no {start!r} ... {end!r} section"
    section = text.split(start, 1)[1].split(end, 1)[0]
    return section.split("-->", 1)[1].strip() if start.startswith("<!--") else section


def test_the_readme_lists_exactly_the_codes_the_code_emits() -> None:
    documented = _readme_section(START, END)
    expected = render_table()
    rows = documented.splitlines()[2:]  # under the header
    doc_codes = {code for row in rows for code in re.findall(r"`([a-z0-9_]+)`", row.rsplit("|", 2)[-2])}
    emitted = set(emitted_codes())
    assert not emitted - doc_codes, f"emitted but not in README.md: {sorted(emitted - doc_codes)}"
    assert not doc_codes - emitted, f"in README.md but emitted nowhere: {sorted(doc_codes - emitted)}"
    assert documented == expected, "README.md's error-code table is stale: paste `python tests/test_error_codes.py`"


def test_the_job_status_table_names_codes_where_they_land() -> None:
    """Each row of "Job status codes" names only codes that land in its status, and the codes a job's
    input can fail with are all named; every failure status has its row."""
    from vidinfer.jobs.states import FAILURE_STATUS

    section = _readme_section("### Job status codes", "\nEvery failure carries")
    codes = emitted_codes()
    rows: dict[int, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"^\| (\d+) \|", line)
        if match:
            rows[int(match.group(1))] = set(re.findall(r"`([a-z0-9_]+)`", line)) & set(codes)
    assert set(rows) == {0, 1, *FAILURE_STATUS.values()}, sorted(rows)
    for status, named in rows.items():
        for code in named:
            assert str(status) in {r.job for r in codes[code]}, f"`{code}` is in row {status} but never lands there"
    for code, where in codes.items():
        for row in where:
            if row.source.strip("`") in JOB_CLASSES:
                assert code in rows[int(row.job)], f"`{code}` fails jobs with status {row.job}: name it in that row"


def test_the_collector_sees_codes_of_every_kind() -> None:
    """The reading above is itself checked: a literal code, a class default, a run-time code, an API answer,
    a job's own end and a client-side code are all found, each where it lands."""
    codes = emitted_codes()
    assert Row("422", "5", "4", "`FetchError`") in codes["url_timeout"]
    assert Row("422", "5", "4", "`FetchError`") in codes["s3_unreachable"]
    assert Row("409", "7", "130", "`Cancelled`") in codes["cancelled"]  # a class default
    assert {"invalid_lines", "invalid_zones"} <= set(codes)
    assert Row("400", NONE, NONE, API) in codes["invalid_request"]
    assert Row(NONE, "8", NONE, "a job's end") in codes["worker_lost"]
    assert Row("401", NONE, "2", "`Unauthorized`") in codes["missing_api_key"]
    assert Row("404", NONE, NONE, API) in codes["not_found"] and Row("4xx", NONE, NONE, API) in codes["http_error"]
    assert any(r.http == NONE and "client" in r.source for r in codes["bad_response"])


if __name__ == "__main__":
    print(render_table())
