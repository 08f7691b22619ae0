"""The completion webhook: a POST to the job's ``notify_url`` when it ends.

The body is the job's status JSON; ``X-Vidinfer-Signature: sha256=<hex>`` is an
HMAC-SHA256 of ``"<timestamp>.<body>"`` with the server's secret and
``X-Vidinfer-Timestamp`` the timestamp, so a receiver can check it came from us
and is fresh. Delivery is retried with exponential backoff; the address must
pass the same checks as ``input_url`` (no private addresses unless allow-listed).
Each try is bounded as a whole (``ATTEMPT_SECONDS``, connect to answer) and the
answer's body is never read, so a receiver that drips or streams an endless
reply costs one try, not a thread or memory forever.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time

import httpx

from vidinfer.config import Settings
from vidinfer.errors import VidinferError
from vidinfer.fetch import UrlPolicy, Watchdog, shown_url
from vidinfer.jobs.store import Job
from vidinfer.jobs.view import status_body
from vidinfer.storage.base import BlobStore

log = logging.getLogger(__name__)

#: seconds to wait before each retry
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: the most one try may take, from connecting to the answer's status line and headers
ATTEMPT_SECONDS = 10.0


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def deliver(url: str, body: bytes, secret: bytes, policy: UrlPolicy, backoff: tuple[float, ...] = BACKOFF,
            attempt_seconds: float = ATTEMPT_SECONDS) -> bool:
    """POST ``body`` until a 2xx answer or the retries run out. True when delivered."""
    for attempt, delay in enumerate((0.0, *backoff)):
        time.sleep(delay)
        try:
            status = _post(url, body, secret, policy, attempt_seconds)
            if status < 300:
                return True
            log.warning("webhook %s answered %s (attempt %d)", shown_url(url), status, attempt + 1)
        except (VidinferError, httpx.HTTPError) as exc:
            if isinstance(exc, VidinferError) and exc.code != "url_timeout":  # refused by the policy: final
                log.warning("webhook %s refused: %s", shown_url(url), exc.message)
                return False
            log.warning("webhook %s failed: %s (attempt %d)", shown_url(url), exc, attempt + 1)
    return False


def _post(url: str, body: bytes, secret: bytes, policy: UrlPolicy, seconds: float) -> int:
    """One try: the answer's status, its body left unread; the watchdog ends a try that overruns ``seconds``."""
    with httpx.Client(follow_redirects=False) as client, \
            Watchdog(url, seconds, 0.0, seconds, None) as watchdog:
        target, pinned, extensions = policy.pin(url, "notify_url")  # checked at each try, connected to as checked
        timestamp = str(int(time.time()))
        left = max(watchdog.remaining(), 0.001)
        try:
            with client.stream("POST", target, content=body, timeout=httpx.Timeout(left),
                               extensions={**extensions, "trace": watchdog.trace},
                               headers={**pinned, "Content-Type": "application/json",
                                        "X-Vidinfer-Timestamp": timestamp,
                                        "X-Vidinfer-Signature": sign(secret, timestamp, body)}) as response:
                return response.status_code
        except httpx.HTTPError:
            watchdog.check()  # the watchdog's shutdown surfaces as a read or protocol error: say it timed out
            raise


def job_ended(job: Job, settings: Settings, blobs: BlobStore) -> threading.Thread | None:
    """Deliver the webhook in the background, so the worker goes on with the next job."""
    if not job.notify_url:
        return None
    body = json.dumps(status_body(job, blobs, settings.results_url_ttl)).encode()
    thread = threading.Thread(
        target=deliver, args=(job.notify_url, body, settings.secret(), UrlPolicy.from_allowlist(settings.url_allowlist)),
        name=f"notify-{job.id}", daemon=True,
    )
    thread.start()
    return thread
