"""The completion webhook: a POST to the job's ``notify_url`` when it ends.

The body is the job's status JSON; ``X-Vidinfer-Signature: sha256=<hex>`` is an
HMAC-SHA256 of ``"<timestamp>.<body>"`` with the server's secret and
``X-Vidinfer-Timestamp`` the timestamp, so a receiver can check it came from us
and is fresh. Delivery is retried with exponential backoff; the address must
pass the same checks as ``input_url`` (no private addresses unless allow-listed).
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
from vidinfer.fetch import UrlPolicy, shown_url
from vidinfer.jobs.store import Job
from vidinfer.jobs.view import status_body
from vidinfer.storage.base import BlobStore

log = logging.getLogger(__name__)

#: seconds to wait before each retry
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def deliver(url: str, body: bytes, secret: bytes, policy: UrlPolicy, backoff: tuple[float, ...] = BACKOFF) -> bool:
    """POST ``body`` until a 2xx answer or the retries run out. True when delivered."""
    for attempt, delay in enumerate((0.0, *backoff)):
        time.sleep(delay)
        try:
            target, pinned, extensions = policy.pin(url, "notify_url")  # checked at each try, connected to as checked
            timestamp = str(int(time.time()))
            with httpx.Client(timeout=10.0, follow_redirects=False) as client:
                response = client.post(target, content=body, extensions=extensions,
                                       headers={**pinned, "Content-Type": "application/json",
                                                "X-Vidinfer-Timestamp": timestamp,
                                                "X-Vidinfer-Signature": sign(secret, timestamp, body)})
            if response.status_code < 300:
                return True
            log.warning("webhook %s answered %s (attempt %d)", shown_url(url), response.status_code, attempt + 1)
        except VidinferError as exc:
            log.warning("webhook %s refused: %s", shown_url(url), exc.message)
            return False
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed: %s (attempt %d)", shown_url(url), exc, attempt + 1)
    return False


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
