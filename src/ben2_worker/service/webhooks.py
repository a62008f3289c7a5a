"""Signed completion callbacks for async jobs.

The body is the job's status JSON (as ``/status/{id}`` answers). Headers:

* ``X-Webhook-Id``: the job id (the same on every retry: receivers deduplicate on it);
* ``X-Signature-Timestamp``: Unix seconds when this attempt was signed;
* ``X-Signature``: ``sha256=`` + hex HMAC-SHA256, keyed with the service's webhook secret,
  over ``<timestamp>.`` followed by the raw body bytes.

A receiver recomputes the HMAC over the bytes it received, compares in constant time, and
refuses a timestamp outside its replay window (:func:`verify` does all three). Deliveries go
through the same SSRF guard as image URLs (public https only unless the policy says
otherwise), never follow redirects, and are retried with exponential backoff on connection
errors, timeouts, 408, 429 and 5xx."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

from ..api.safe_http import BadURL, Deadline, Exchange, FetchPolicy, TransferFailed, parse_url, resolve_checked
from .metrics import Metrics

log = logging.getLogger("ben2_worker.service")

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
ID_HEADER = "X-Webhook-Id"
#: Seconds a receiver should accept a signed timestamp for (either side of its clock).
DEFAULT_TOLERANCE_S = 300
_RETRY_STATUSES = frozenset({408, 425, 429})


class SignatureError(ValueError):
    """A callback whose signature or timestamp does not verify."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, body: bytes, timestamp: str | int | None, signature: str | None, *,
           tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ours over ``body`` at ``timestamp``
    and that timestamp is within ``tolerance_s`` of ``now``."""
    if not signature or timestamp is None:
        raise SignatureError("missing signature or timestamp header")
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        raise SignatureError("the timestamp is not a whole number of seconds") from None
    expected = sign(secret, body, ts)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise SignatureError("the signature does not match the body")
    age = (time.time() if now is None else now) - ts
    if abs(age) > tolerance_s:
        raise SignatureError(f"the timestamp is {age:.0f} s away from now, outside the {tolerance_s:g} s replay window")


def check_webhook_url(url: str, policy: FetchPolicy) -> None:
    """Refuse a callback URL the guard would refuse, at submission time. Raises ``BadURL``."""
    resolve_checked(parse_url(url, policy), policy, Deadline(policy.timeout_s, "resolving the webhook host"))


def _post_once(url: str, body: bytes, headers: dict, policy: FetchPolicy) -> int:
    """One POST through the guard; the HTTP status. Raises BadURL / TransferFailed."""
    deadline = Deadline(policy.timeout_s, "delivering the webhook")
    target = parse_url(url, policy)
    with Exchange(target, resolve_checked(target, policy, deadline), deadline) as exchange:
        return exchange.request("POST", headers, body).status


class WebhookSender:
    def __init__(self, secret: str, policy: FetchPolicy, *, attempts: int, backoff_s: float, metrics: Metrics):
        self._secret = secret
        self.policy = policy
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.metrics = metrics

    async def deliver(self, url: str, payload: dict) -> bool:
        """POST ``payload`` to ``url`` until a 2xx answer or the attempts run out."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        shown = url.split("?", 1)[0]
        for attempt in range(1, self.attempts + 1):
            ts = int(time.time())
            headers = {"Content-Type": "application/json", ID_HEADER: str(payload.get("id", "")),
                       TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(self._secret, body, ts)}
            self.metrics.webhook_attempts.inc()
            try:
                status = await asyncio.to_thread(_post_once, url, body, headers, self.policy)
            except BadURL as exc:  # refused by the guard: retrying cannot help
                log.warning("webhook for job %s refused: %s", payload.get("id"), exc)
                self.metrics.webhooks.labels("refused").inc()
                return False
            except TransferFailed as exc:
                problem, retry = str(exc), True
            else:
                if 200 <= status < 300:
                    self.metrics.webhooks.labels("delivered").inc()
                    return True
                problem, retry = f"HTTP {status}", status >= 500 or status in _RETRY_STATUSES
            log.warning("webhook for job %s to %s: attempt %d/%d failed (%s)", payload.get("id"), shown,
                        attempt, self.attempts, problem)
            if not retry:
                break
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        self.metrics.webhooks.labels("failed").inc()
        return False
