"""Keys, rate limits and body limits at the service's front door, over real sockets: refused
before the body is read, counted in /metrics, logged without the image or the key."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest
from service_harness import KEY, OTHER_KEY, LiveService, b64, free_port, keyed, photo_bytes

from ben2_worker.service.auth import KeyRing, presented_key
from ben2_worker.service.limits import RateLimiter
from ben2_worker.config import ApiKey, ServiceSettings
from ben2_worker.errors import ConfigError
from ben2_worker.service.keys import load_keys_file

SMALL = 50_000  # body limit of the service under test, bytes


@pytest.fixture(scope="module")
def svc(models_dir):
    live = LiveService(keyed(runsync_body_limit=SMALL, removebg_body_limit=SMALL, run_body_limit=SMALL),
                       models_dir=models_dir, warm=False)
    yield live
    live.stop()


def raw_request(live: LiveService, head: str, body: bytes = b"", *, wait_s: float = 10) -> tuple[int, bytes]:
    """Send bytes on a plain socket; return (status, whole answer). Lets a test send headers
    that promise a body it never sends."""
    with socket.create_connection(("127.0.0.1", live.server.config.port), timeout=wait_s) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_keys_are_required_and_checked_per_route_family(svc):
    _, png = photo_bytes(64, 48)
    job = {"input": {"image": b64(png)}}
    none = httpx.post(svc.base + "/runsync", json=job)
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert none.json()["code"] == "auth_failed" and "missing API key" in none.json()["error"]
    wrong = httpx.post(svc.base + "/v2/x/runsync", json=job, headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]
    for headers in ({"X-Api-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": KEY}):
        ok = httpx.post(svc.base + "/runsync", json=job, headers=headers, timeout=60)
        assert ok.status_code == 200 and ok.json()["status"] == "COMPLETED", headers
    assert httpx.get(svc.base + "/metrics").status_code == 401
    assert httpx.get(svc.base + "/metrics", headers={"X-Api-Key": KEY}).status_code == 200
    assert httpx.get(svc.base + "/status/whatever").status_code == 401
    # Open: the readiness probe, the page and what it builds its controls from.
    for path in ("/health", "/", "/static/playground.js", "/v1/options"):
        assert httpx.get(svc.base + path).status_code == 200, path


def test_rate_limit_applies_per_key_to_work_not_to_polling(svc):
    _, png = photo_bytes(32, 24)
    job = {"input": {"image": b64(png)}}
    with httpx.Client(base_url=svc.base, headers={"X-Api-Key": OTHER_KEY}, timeout=60) as bob:
        answers = [bob.post("/run", json=job) for _ in range(3)]  # bob: burst 2, 2/min
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["code"] == "rate_limit_exceeded" and int(answers[2].headers["retry-after"]) >= 1
        for _ in range(5):  # polling is never limited
            assert bob.get(f"/status/{answers[0].json()['id']}").status_code == 200
    with httpx.Client(base_url=svc.base, headers={"X-Api-Key": KEY}, timeout=60) as alice:
        assert alice.post("/run", json=job).status_code == 200


def test_declared_body_over_the_limit_is_refused_before_it_is_sent(svc, caplog):
    caplog.set_level(logging.WARNING, logger="ben2_worker.service")
    status, answer = raw_request(svc, (
        f"POST /v1.0/removebg HTTP/1.1\nHost: x\nX-Api-Key: {KEY}\nContent-Type: multipart/form-data; boundary=b\n"
        f"Content-Length: {SMALL * 100}\n"))  # the promised body never comes: the answer must anyway
    assert status == 413 and b'"file_too_large"' in answer and b'"errors"' in answer
    status, answer = raw_request(svc, (
        f"POST /runsync HTTP/1.1\nHost: x\nAuthorization: Bearer {KEY}\nContent-Type: application/json\n"
        f"Content-Length: {SMALL + 1}\n"))
    assert status == 413 and b'"error"' in answer
    assert any("body_too_large" in r.getMessage() for r in caplog.records)


def test_streamed_body_over_the_limit_is_cut_off(svc, caplog):
    """A chunked body (no Content-Length) is counted as it arrives and refused once over."""
    import select

    caplog.set_level(logging.WARNING, logger="ben2_worker.service")
    _, png = photo_bytes(800, 600)
    secret_image = b64(png)
    data = ('{"input": {"image": "' + secret_image + '"}}').encode()
    assert len(data) > 2 * SMALL
    head = (f"POST /runsync HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", svc.server.config.port), timeout=10) as s:
        s.sendall(head.encode())
        while sent < len(data) and not answer:
            part = data[sent:sent + 4096]
            s.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            sent += len(part)
            if select.select([s], [], [], 0.02)[0]:
                answer = s.recv(65536)
        while not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b'"file_too_large"' in answer
    assert sent < len(data), "the server read the whole body before refusing it"
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert secret_image[:64] not in logged and KEY not in logged


def test_refusals_are_counted(svc):
    httpx.post(svc.base + "/v1.0/removebg", data={"image_file_b64": "aGk="})
    metrics = httpx.get(svc.base + "/metrics", headers={"X-Api-Key": KEY}).text
    assert 'ben2_refused_requests_total{reason="missing_key",route="removebg"}' in metrics
    assert 'ben2_refused_requests_total{reason="missing_key",route="runpod"}' in metrics


def test_anything_but_loopback_needs_keys(tmp_path):
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(ConfigError, match="without API keys"):
            ServiceSettings(host=host)
    assert ServiceSettings(host="0.0.0.0", keys=(ApiKey("a", KEY),)).keys_required
    for host in ("127.0.0.1", "::1", "localhost"):
        assert not ServiceSettings(host=host).keys_required
    assert ServiceSettings(keys=(ApiKey("a", KEY),)).keys_required  # configured keys always apply
    with pytest.raises(ConfigError, match="shorter than 16"):
        ServiceSettings(keys=(ApiKey("a", "short"),))


def test_keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(f'[[keys]]\nname = "shop"\nkey = "{KEY}"\nrate_per_minute = 30\nburst = 3\n'
                    f'[[keys]]\nname = "batch"\nkey = "{OTHER_KEY}"\n')
    keys = load_keys_file(path)
    assert [(k.name, k.rate_per_minute, k.burst) for k in keys] == [("shop", 30.0, 3), ("batch", None, None)]
    assert KEY not in repr(keys)
    ring = KeyRing(keys)
    assert ring.identify(OTHER_KEY).name == "batch" and ring.identify(KEY + "x") is None and ring.identify(None) is None
    path.write_text('[[keys]]\nname = "x"\nkey = "k"\nrole = "admin"\n')
    with pytest.raises(ConfigError, match="unknown field"):
        load_keys_file(path)
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_keys_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_keys_file(tmp_path / "missing.toml")


def test_presented_key_forms():
    assert presented_key({"x-api-key": " k1 "}) == "k1"
    assert presented_key({"authorization": "Bearer k2"}) == "k2"
    assert presented_key({"authorization": "k3"}) == "k3"
    assert presented_key({"authorization": "Basic dXNlcjpwdw=="}) is None
    assert presented_key({}) is None


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("a", 60, 2) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a", 60, 2) == pytest.approx(1.0)
    assert limiter.take("b", 60, 2) == 0.0  # callers are separate
    now[0] += 1.0
    assert limiter.take("a", 60, 2) == 0.0
    assert limiter.take("a", 60, 2) > 0


def test_network_bind_with_keys_serves_on_all_interfaces(models_dir):
    """Bound to 0.0.0.0 (keys required): reached through loopback, a key is needed."""
    port = free_port()
    live = LiveService(ServiceSettings(host="0.0.0.0", port=port, keys=(ApiKey("a", KEY),)), models_dir=models_dir,
                       warm=False)
    try:
        assert httpx.post(live.base + "/run", json={"input": {}}).status_code == 401
        r = httpx.post(live.base + "/run", json={"input": {}}, headers={"X-Api-Key": KEY})
        assert r.status_code == 200
        deadline = time.time() + 30
        while (s := httpx.get(live.base + f"/status/{r.json()['id']}", headers={"X-Api-Key": KEY}).json())["status"] != "FAILED":
            assert time.time() < deadline
            time.sleep(0.05)
        assert s["error"] == "Please provide input"
    finally:
        live.stop()


def test_service_settings_come_from_the_environment_through_config(tmp_path):
    from ben2_worker.config import Settings
    from ben2_worker.service.keys import with_keys_file

    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nname = "shop"\nkey = "{KEY}"\n')
    s = Settings.from_env({
        "BEN2_SERVICE_HOST": "0.0.0.0", "BEN2_SERVICE_PORT": "9000", "BEN2_SERVICE_KEYS_FILE": str(keys),
        "BEN2_SERVICE_RATE_PER_MINUTE": "30", "BEN2_SERVICE_BURST": "4", "BEN2_SERVICE_RUN_MAX_BYTES": "1_000",
        "BEN2_SERVICE_RUNSYNC_MAX_BYTES": "2000", "BEN2_SERVICE_REMOVEBG_MAX_BYTES": "3000",
        "BEN2_SERVICE_CONCURRENCY": "2", "BEN2_SERVICE_QUEUE_LIMIT": "8", "BEN2_SERVICE_RESULT_TTL": "60",
        "BEN2_SERVICE_WEBHOOK_SECRET": "whsec-0123456789abcdef", "BEN2_SERVICE_ENDPOINT_ID": "box-1",
    }).service
    assert (s.host, s.port, s.keys_file, s.rate_per_minute, s.burst) == ("0.0.0.0", 9000, keys, 30.0, 4)
    assert (s.run_body_limit, s.runsync_body_limit, s.removebg_body_limit) == (1000, 2000, 3000)
    assert (s.concurrency, s.queue_limit, s.result_ttl_s, s.endpoint_id) == (2, 8, 60.0, "box-1")
    assert s.keys_required and "whsec" not in repr(s)
    assert [k.name for k in with_keys_file(s).keys] == ["shop"]
    assert Settings.from_env({}).service == ServiceSettings()


@pytest.mark.parametrize("name, value, allowed", [
    ("BEN2_SERVICE_PORT", "70000", "1 to 65535"), ("BEN2_SERVICE_BURST", "0", "at least 1"),
    ("BEN2_SERVICE_RESULT_TTL", "never", "seconds"), ("BEN2_SERVICE_HOST", "0.0.0.0", "without API keys"),
    ("BEN2_SERVICE_WEBHOOK_SECRET", "short", "at least 16"),
])
def test_a_bad_service_setting_is_a_config_error_naming_it(name, value, allowed):
    from ben2_worker.config import Settings

    with pytest.raises(ConfigError, match=allowed) as caught:
        Settings.from_env({name: value})
    assert caught.value.variable == name
