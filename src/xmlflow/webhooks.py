"""Webhooks: a signed JSON POST to the operator's URL when a job ends, delivered at least once.

Configured by the operator only (``XMLFLOW_WEBHOOK_URL`` and ``XMLFLOW_WEBHOOK_SECRET``);
nothing in an upload can choose where, what or whether to send.

*At least once* rests on an **outbox**: the store writes a delivery (its id and its
frozen JSON body, :func:`outbox_entry`) in the same transaction that appends the job's
``end`` event (SQLite: ``webhook_outbox`` rows, see :mod:`.backends.sqlite.outbox`;
Redis: ``xmlflow:webhook:*`` keys, see :mod:`.backends.redis.outbox`). So a job that
ended has its delivery recorded, whatever dies next. A :class:`WebhookSender` thread in
each serving process (and each ``xmlflow worker``) then claims one due delivery at a
time under a **lease**, POSTs it, and deletes it on a 2xx answer, or schedules the next
try with exponential backoff. A process killed mid-POST leaves the lease to expire, and
the delivery is claimed again: the receiver may see a delivery twice, never zero times,
and tells the two apart by the ``X-Xmlflow-Delivery`` id, which every try of one
delivery shares. Attempts and age are bounded; a delivery past them is dropped with an
error in the log.

The signature follows GitHub's and Stripe's habit: ``X-Xmlflow-Signature: t=<unix
time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>``, so a receiver can refuse
a replayed old request as well as a forged one (``docs/api.md`` has the check in Python).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .models import Event, Job
from .settings import Settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

EVENT_TYPE = "job.ended"
MAX_RESPONSE_BYTES = 4096  # of a receiver's answer, read (for the log) and no more
MAX_DELAY = 3600.0  # seconds: the longest pause between two tries
USER_AGENT = "xmlflow-webhooks/1"


@dataclass(frozen=True)
class Delivery:
    """One claimed delivery: what to send, and the claim that lets this process finish it."""

    id: str
    job_id: str
    body: bytes
    created_at: float
    attempts: int  # tries so far, this one included
    token: str  # the claim's; a later claim (after the lease ran out) has another


class Outbox(Protocol):
    """Where each store keeps the deliveries that are not yet done."""

    def claim(self, now: float, lease: float) -> Delivery | None:
        """Take the oldest due delivery for ``lease`` seconds, counting one more attempt."""

    def done(self, delivery: Delivery) -> None:
        """Forget a delivery: delivered, or given up."""

    def retry_at(self, delivery: Delivery, when: float, error: str) -> None:
        """Make the delivery due again at ``when``, if this claim still holds it."""

    def pending(self) -> int:
        """Deliveries not yet done (for the metrics)."""


def delivery_id(job_id: str, event_id: int) -> str:
    """Stable across tries and restarts: a job has one ``end`` event, and it has one id."""
    return f"{job_id}-{event_id}"


def outbox_entry(job: Job, event: Event) -> tuple[str, bytes]:
    """The delivery of a job's ``end`` event: its id, and its body frozen now.

    Frozen at the end so that a delivery retried for hours says what the job was when it
    ended, even if the job was removed since. Output URLs are relative to the server.
    """
    from .jobfiles import output_url  # the one home of download paths

    ident = delivery_id(job.id, event.id)
    payload: dict[str, Any] = {
        "id": ident,
        "type": EVENT_TYPE,
        "job": {
            "id": job.id,
            "status": str(job.status),
            "pipeline": job.pipeline_name,
            "filename": job.filename,
            "size": job.size,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "ended_at": job.ended_at,
            "error": job.error,
            "attempt": job.attempt,
            "outputs": [
                {
                    "name": o.name,
                    "size": o.size,
                    "media_type": o.media_type,
                    "url": output_url(job.id, o.name),
                }
                for o in job.outputs
            ],
        },
    }
    return ident, orjson.dumps(payload)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Xmlflow-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def backoff(attempts: int, base: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base·2^(n-1), capped,
    plus up to a quarter more at random so that deliveries failed together spread out
    (each pause is still longer than the one before, up to the cap)."""
    delay = min(base * 2.0 ** max(attempts - 1, 0), MAX_DELAY)
    return float(delay * (1 + random.random() / 4))


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # "HTTP 204", "HTTP 500: <start of the body>", "ConnectError: ..."


def http_client(timeout: float) -> httpx.Client:
    """The sender's client, made once (a TLS context costs milliseconds to build): connect
    and read timeouts, no redirect followed, a new connection per try (none kept alive
    to go stale between job ends). httpx is imported here, not with the module: every
    ``Service`` imports this one, ``xmlflow run``'s too, which sends no webhook."""
    import httpx

    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=timeout),
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def post(client: httpx.Client, url: str, secret: str, delivery: Delivery) -> Outcome:
    """One try: a signed POST, and at most ``MAX_RESPONSE_BYTES`` of the answer read.
    Never raises for the network's faults."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Xmlflow-Event": EVENT_TYPE,
        "X-Xmlflow-Delivery": delivery.id,
        "X-Xmlflow-Attempt": str(delivery.attempts),
        "X-Xmlflow-Signature": signature(secret, int(time.time()), delivery.body),
    }
    import httpx

    read_timeout = client.timeout.read or 10.0
    try:
        with client.stream("POST", url, content=delivery.body, headers=headers) as response:
            answer = _read_some(response, time.monotonic() + read_timeout)
    except httpx.HTTPError as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True, f"HTTP {status}")
    if response.is_redirect:
        return Outcome(False, f"HTTP {status} (redirects are not followed)")
    text = answer.decode("utf-8", "replace").strip()[:200]
    return Outcome(False, f"HTTP {status}: {text}" if text else f"HTTP {status}")


def _read_some(response: httpx.Response, deadline: float) -> bytes:
    """The start of the answer, for the log: a receiver trickling bytes is cut off too."""
    received = bytearray()
    for chunk in response.iter_raw():
        received += chunk
        if len(received) >= MAX_RESPONSE_BYTES or time.monotonic() > deadline:
            break
    return bytes(received[:MAX_RESPONSE_BYTES])


class WebhookSender:
    """The delivery loop of one process: claim a due delivery, POST it, record the outcome.

    One delivery at a time per process; several processes share the work through the
    outbox's leases. ``on_outcome`` is told ``delivered``, ``failed`` (will retry) or
    ``dropped`` (gave up), for the metrics; it must not raise.
    """

    def __init__(self, outbox: Outbox, *, url: str, secret: str, attempts: int,
                 max_age: float, backoff_base: float, timeout: float) -> None:  # fmt: skip
        self.outbox = outbox
        self.url = url
        self.secret = secret
        self.attempts = attempts
        self.max_age = max_age
        self.backoff_base = backoff_base
        self.timeout = timeout
        # The claim outlives the longest try (connect, send, wait for the answer, read a
        # bounded part of it: see :func:`post`), so one live sender holds it at a time.
        self.lease = 6 * timeout + 5
        self.idle_pause = min(1.0, max(0.05, backoff_base / 2))
        self.on_outcome: Callable[[str], None] = lambda outcome: None
        self._stop = threading.Event()
        self._client: httpx.Client | None = None

    def start(self) -> None:
        log.info("webhooks: delivering job ends to %s", self.url)
        threading.Thread(target=self._loop, name="xmlflow-webhooks", daemon=True).start()

    def stop(self) -> None:
        """Claim nothing more; a try under way is left to its lease (redelivered if cut)."""
        self._stop.set()

    def _loop(self) -> None:
        pause = 0.0
        while not self._stop.wait(pause):
            try:
                pause = 0.0 if self.deliver_one() else self.idle_pause
            except Exception as exc:  # the store away (Redis restarting): try again later
                log.warning("webhooks: could not reach the outbox (will retry): %s", exc)
                pause = max(self.idle_pause, 1.0)

    def deliver_one(self, now: float | None = None) -> bool:
        """Claim and try one due delivery; False when none is due."""
        delivery = self.outbox.claim(now or time.time(), self.lease)
        if delivery is None:
            return False
        if delivery.attempts > self.attempts:  # claimed before by processes that died
            self._drop(delivery, "no attempts left (earlier tries were cut off)")
            return True
        if self._client is None:
            self._client = http_client(self.timeout)
        outcome = post(self._client, self.url, self.secret, delivery)
        if outcome.ok:
            self.outbox.done(delivery)
            log.info(
                "webhook %s (job %s) delivered on try %d: %s",
                delivery.id, delivery.job_id, delivery.attempts, outcome.detail,
            )  # fmt: skip
            self.on_outcome("delivered")
            return True
        self._failed(delivery, outcome.detail)
        return True

    def _failed(self, delivery: Delivery, detail: str) -> None:
        delay = backoff(delivery.attempts, self.backoff_base)
        next_at = time.time() + delay
        if delivery.attempts >= self.attempts:
            self._drop(delivery, f"{self.attempts} tries failed, the last: {detail}")
        elif next_at - delivery.created_at > self.max_age:
            self._drop(delivery, f"older than {self.max_age:g} s; the last try: {detail}")
        else:
            self.outbox.retry_at(delivery, next_at, detail)
            log.warning(
                "webhook %s (job %s) try %d failed: %s; next try in %.1f s",
                delivery.id, delivery.job_id, delivery.attempts, detail, delay,
            )  # fmt: skip
            self.on_outcome("failed")

    def _drop(self, delivery: Delivery, why: str) -> None:
        self.outbox.done(delivery)
        log.error("webhook %s (job %s) given up: %s", delivery.id, delivery.job_id, why)
        self.on_outcome("dropped")


def sender_for(settings: Settings, outbox: Outbox | None) -> WebhookSender | None:
    """The process's sender, when the operator configured a URL (``settings`` checked it)."""
    if not settings.webhook_url or not settings.webhook_secret or outbox is None:
        return None
    return WebhookSender(
        outbox,
        url=settings.webhook_url,
        secret=settings.webhook_secret,
        attempts=settings.webhook_attempts,
        max_age=settings.webhook_max_age_hours * 3600,
        backoff_base=settings.webhook_backoff,
        timeout=settings.webhook_timeout,
    )
