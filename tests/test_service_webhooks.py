"""Signed completion callbacks, delivered to a real loopback HTTP receiver. The receiver is on
loopback, so these services' callback policy allows private addresses and plain http — set
explicitly per test; the default policy refuses both (tested too)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from service_harness import KEY, LOOPBACK_HTTP_URLS, LiveService, b64, keyed, photo_bytes

from ben2_worker.service import webhooks
from ben2_worker.service.webhooks import SignatureError, sign, verify

SECRET = "whsec-0123456789abcdef-test"


class Receiver:
    """Records each POST (headers, raw body); answers the statuses in ``script`` in turn, then 200."""

    def __init__(self, script=()):
        self.hits: list[dict] = []
        self.script = list(script)
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                outer.hits.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": raw,
                                   "at": time.time()})
                status = outer.script.pop(0) if outer.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    outer.arrived.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def svc(models_dir):
    live = LiveService(keyed(webhook_secret=SECRET, webhook_timeout_s=5.0, webhook_backoff_s=0.05,
                             webhook_attempts=4), models_dir=models_dir, urls=LOOPBACK_HTTP_URLS, warm=False)
    yield live
    live.stop()


def submit(svc, url: str, path: str = "/run") -> dict:
    _, png = photo_bytes(64, 48)
    r = httpx.post(svc.base + path, json={"input": {"image": b64(png)}, "webhook": url},
                   headers={"X-Api-Key": KEY}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_result_is_posted_signed_and_verifies(svc):
    receiver = Receiver()
    try:
        job = submit(svc, receiver.url)
        assert receiver.arrived.wait(60)
    finally:
        receiver.close()
    (hit,) = receiver.hits
    h, raw = hit["headers"], hit["body"]
    verify(SECRET, raw, h["x-signature-timestamp"], h["x-signature"])  # raises if wrong
    payload = json.loads(raw)
    assert payload["id"] == job["id"] == h["x-webhook-id"] and payload["status"] == "COMPLETED"
    assert payload["output"]["images"][0]["width"] == 64
    status = httpx.get(svc.base + f"/status/{job['id']}", headers={"X-Api-Key": KEY}).json()
    assert payload == status


def test_wrong_tampered_and_replayed_callbacks_are_refused(svc):
    receiver = Receiver()
    try:
        submit(svc, receiver.url, "/runsync")
        assert receiver.arrived.wait(60)
    finally:
        receiver.close()
    h, raw = receiver.hits[0]["headers"], receiver.hits[0]["body"]
    ts, sig = h["x-signature-timestamp"], h["x-signature"]
    with pytest.raises(SignatureError, match="does not match"):
        verify("some-other-secret-000000", raw, ts, sig)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, raw.replace(b"COMPLETED", b"FAILED"), ts, sig)
    with pytest.raises(SignatureError, match="does not match"):  # the timestamp is signed too
        verify(SECRET, raw, str(int(ts) + 1), sig)
    with pytest.raises(SignatureError, match="replay window"):  # the same delivery, replayed later
        verify(SECRET, raw, ts, sig, now=int(ts) + webhooks.DEFAULT_TOLERANCE_S + 1)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, raw, None, sig)
    verify(SECRET, raw, ts, sig, now=int(ts) + 10)


def test_failed_deliveries_are_retried_with_backoff(svc):
    receiver = Receiver(script=[500, 503])
    try:
        job = submit(svc, receiver.url)
        assert receiver.arrived.wait(60)
    finally:
        receiver.close()
    assert len(receiver.hits) == 3
    assert {h["headers"]["x-webhook-id"] for h in receiver.hits} == {job["id"]}
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.hits, receiver.hits[1:])]
    assert gaps[1] > gaps[0] * 1.3  # 0.05 s, then 0.1 s
    for hit in receiver.hits:  # each attempt is signed afresh
        verify(SECRET, hit["body"], hit["headers"]["x-signature-timestamp"], hit["headers"]["x-signature"])


def test_a_client_error_is_not_retried(svc):
    receiver = Receiver(script=[404])
    try:
        submit(svc, receiver.url)
        deadline = time.time() + 30
        while not receiver.hits and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        receiver.close()
    assert len(receiver.hits) == 1
    metrics = httpx.get(svc.base + "/metrics", headers={"X-Api-Key": KEY}).text
    assert 'ben2_webhook_deliveries_total{outcome="failed"}' in metrics


def test_default_policy_refuses_loopback_and_private_callbacks(models_dir):
    live = LiveService(keyed(webhook_secret=SECRET), models_dir=models_dir, warm=False)
    try:
        for url in ("https://127.0.0.1/hook", "https://10.0.0.5/hook", "http://example.com/hook",
                    "https://[::1]/hook", "https://169.254.169.254/latest"):
            r = httpx.post(live.base + "/run", json={"input": {"image": "x"}, "webhook": url}, headers={"X-Api-Key": KEY})
            assert r.status_code == 400 and r.json()["error"].startswith("webhook refused"), (url, r.text)
    finally:
        live.stop()


def test_webhooks_need_a_secret(models_dir):
    live = LiveService(keyed(), models_dir=models_dir, warm=False)
    try:
        r = httpx.post(live.base + "/run", json={"input": {"image": "x"}, "webhook": "https://example.com/h"},
                       headers={"X-Api-Key": KEY})
        assert r.status_code == 400 and "no webhook signing secret" in r.json()["error"]
    finally:
        live.stop()


def test_signature_format():
    assert sign(SECRET, b"{}", 1700000000) == "sha256=" + __import__("hmac").new(
        SECRET.encode(), b"1700000000.{}", "sha256").hexdigest()
