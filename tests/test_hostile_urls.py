"""Hostile URLs through whole jobs: image inputs and presigned PUT outputs aimed at loopback,
private, link-local, CGNAT, IPv4-mapped IPv6 and cloud-metadata addresses, DNS names resolving
to them (and re-resolving differently), redirects to them, other schemes, endless bodies,
slow-drip servers and wrong content types. Each is refused within its limit, the message names
the problem without repeating a query string, and the worker serves the next job.

Servers are the loopback ones of tests/test_fetch.py (127.0.0.1 only). Nothing here ever
reaches a non-loopback address: DNS is simulated by test_fetch's ``fake_dns`` (made-up names
only), and a tripwire on ``socket.connect`` fails any test that even tries."""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import subject_photo
from test_fetch import body, fake_dns, redirect, serve  # noqa: F401 - fake_dns is a fixture

from ben2_worker.api import safe_http
from ben2_worker.api.delivery import Delivery
from ben2_worker.api.jobs import JobProcessor
from ben2_worker.api.safe_http import FetchPolicy
from ben2_worker.config import Settings
from ben2_worker.engines import Engines, load_cutout_engine
from ben2_worker.imaging import encode_image

PNG = encode_image(subject_photo(64, 48), "png")
SECRET = "X-Amz-Signature=deadbeefsecret"
#: What a test against loopback servers may reach: http, loopback. Refusal tests use the default.
LOOPBACK = FetchPolicy(allow_http=True, allow_private=True, timeout_s=3.0, max_bytes=2**20)

METADATA = [
    ("169.254.169.254", "a link-local address"),  # AWS, GCP, Azure, OpenStack
    ("fd00:ec2::254", "a private address"),  # AWS IPv6 metadata
    ("100.100.100.200", "a non-public address"),  # Alibaba Cloud (CGNAT range)
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "address; refused"),  # Teredo: embeds an IPv4 address
    ("192.0.0.192", "address; refused"),  # Oracle Cloud ("special-purpose" or "private", by Python release)
    ("::ffff:169.254.169.254", "a link-local address"),  # IPv4-mapped IPv6
    ("64:ff9b::a9fe:a9fe", "embedding 169.254.169.254"),  # NAT64
    ("100.64.0.1", "a non-public address"),  # CGNAT
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.0.1", "a private address"),
    ("fe80::1", "a link-local address"),
    ("0.0.0.0", "an unspecified address"),
]


@pytest.fixture(autouse=True)
def tripwire(monkeypatch):
    """Fail (and block) any connection to a non-loopback address: refusals must come first."""
    attempts: list = []
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(str(host).split("%")[0]).is_loopback:
            attempts.append(address)
            raise OSError(f"tripwire: test tried to connect to {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"connections to non-loopback addresses were attempted: {attempts}"


@pytest.fixture(scope="module")
def engines(models_dir) -> Engines:
    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1)
    return Engines(cutout=load_cutout_engine(settings), settings=settings)


def make_worker(engines, policy: FetchPolicy = FetchPolicy(), put_timeout_s: float = 3.0) -> JobProcessor:
    return JobProcessor(engines, delivery=Delivery(policy=policy, put_timeout_s=put_timeout_s), fetch_policy=policy,
                        job_timeout_s=60)


def run(worker, request: dict, limit_s: float = 10.0) -> dict:
    started = time.monotonic()
    out = worker({"id": "hostile", "input": request})
    assert time.monotonic() - started < limit_s, "refused, but not within its limit"
    text = str(out)
    assert "deadbeefsecret" not in text, "a presigned URL's query string leaked into the answer"
    if "error" in out:
        assert not out["error"].startswith("internal error"), out
    return out


def still_serves(worker) -> None:
    out = worker({"id": "next", "input": {"image": base64.b64encode(PNG).decode()}})
    assert "error" not in out and out["images"][0]["type"] == "base64", out


# ---------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(("address", "reason"), METADATA)
def test_input_url_to_non_public_literal(engines, address, reason):
    worker = make_worker(engines)
    host = f"[{address}]" if ":" in address else address
    out = run(worker, {"image": f"https://{host}/latest/meta-data/iam?{SECRET}"})
    assert reason in out["error"] and "input.image" in out["error"] or reason in out["error"], out
    still_serves(worker)


@pytest.mark.parametrize(("address", "reason"), METADATA)
def test_input_name_resolving_to_non_public(engines, fake_dns, address, reason):
    answers, lookups = fake_dns
    answers["metadata.google.internal"] = [address]
    out = run(make_worker(engines), {"image": f"https://metadata.google.internal/computeMetadata/v1/?{SECRET}"})
    assert f"resolves to {address}" in out["error"] and reason in out["error"], out
    assert lookups == ["metadata.google.internal"]


def test_input_name_with_one_private_answer_among_public_ones(engines, fake_dns):
    answers, _ = fake_dns
    answers["mixed.example"] = ["93.184.215.14", "2606:2800:220:1::1", "10.0.0.7"]
    out = run(make_worker(engines), {"image": "https://mixed.example/a.png"})
    assert "resolves to 10.0.0.7, a private address" in out["error"], out


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/", "http://example.com/a.png",
                                 "data:image/png;base64,AAAA", "//example.com/a.png", "https://user:pw@example.com/a.png"])
def test_input_url_schemes_and_forms(engines, url):
    out = run(make_worker(engines), {"images": [url]})
    assert "error" in out, out


def test_input_redirect_chain_to_metadata_is_refused_before_connecting(engines, fake_dns, monkeypatch):
    """A 'public' server (127.0.0.2, declared public for this test only) redirects to
    metadata, loopback and a private name; each hop is checked before any connection."""
    answers, _ = fake_dns
    real_reason = safe_http.refusal_reason
    monkeypatch.setattr(safe_http, "refusal_reason", lambda ip: None if str(ip) == "127.0.0.2" else real_reason(ip))
    answers["cdn.example"] = ["127.0.0.2"]
    answers["internal.example"] = ["192.168.10.10"]
    policy = FetchPolicy(allow_http=True, timeout_s=3.0)
    with serve({"/ok": body(PNG), "/meta": redirect(f"http://169.254.169.254/latest/?{SECRET}"),
                "/loop": redirect("http://127.0.0.1:9/x"), "/int": redirect("http://internal.example/admin"),
                "/v6": redirect("http://[::ffff:10.0.0.1]/"), "/ftp": redirect("ftp://cdn.example/a")},
               host="127.0.0.2") as server:
        base = f"http://cdn.example:{server.port}"
        worker = make_worker(engines, policy)
        assert "error" not in run(worker, {"image": base + "/ok"})
        for path, reason in [("/meta", "169.254.169.254 is a link-local address"), ("/loop", "127.0.0.1 is a loopback address"),
                             ("/int", "internal.example resolves to 192.168.10.10, a private address"),
                             ("/v6", "is a private address"), ("/ftp", "got a 'ftp' URL")]:
            out = run(worker, {"image": base + path})
            assert reason in out["error"], (path, out)


def test_input_rebinding_name_is_resolved_once_and_pinned(engines, fake_dns, monkeypatch):
    """First answer a 'public' loopback address, every later one private: the download uses the
    first, checked answer; a second lookup (the rebinding attack) never happens."""
    answers, lookups = fake_dns
    real_reason = safe_http.refusal_reason
    monkeypatch.setattr(safe_http, "refusal_reason", lambda ip: None if str(ip) == "127.0.0.2" else real_reason(ip))
    given = iter([["127.0.0.2"]])
    answers["rebind.example"] = lambda: next(given, ["10.0.0.1"])
    with serve({"/a.png": body(PNG)}, host="127.0.0.2") as server:
        out = run(make_worker(engines, FetchPolicy(allow_http=True, timeout_s=3.0)), {"image": f"http://rebind.example:{server.port}/a.png"})
    assert "error" not in out, out
    assert lookups == ["rebind.example"]


def _endless(req):
    req.send_response(200)
    req.send_header("Content-Type", "image/png")
    req.send_header("Transfer-Encoding", "chunked")
    req.end_headers()
    chunk = b"\x00" * 65536
    while True:
        req.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")


def _drip(req):
    req.send_response(200)
    req.send_header("Content-Length", str(len(PNG)))
    req.end_headers()
    for byte in PNG:
        req.wfile.write(bytes([byte]))
        req.wfile.flush()
        time.sleep(0.05)


def _html(req):
    page = b"<html><body>Login required</body></html>"
    req.send_response(200)
    req.send_header("Content-Type", "text/html")
    req.send_header("Content-Length", str(len(page)))
    req.end_headers()
    req.wfile.write(page)


def _huge_declared(req):
    req.send_response(200)
    req.send_header("Content-Length", str(10**12))
    req.end_headers()


@pytest.mark.parametrize(("route", "needle", "limit_s"), [
    (_endless, "more than the 1 MiB limit for URL inputs (BEN2_WORKER_URL_MAX_BYTES); stopped reading", 5),
    (_drip, "took longer than the 1 s limit", 3),
    (_html, "not a recognised image format", 3),
    (_huge_declared, "(Content-Length), over the 1 MiB limit", 3),
])
def test_input_servers_that_misbehave(engines, route, needle, limit_s):
    policy = FetchPolicy(allow_http=True, allow_private=True, timeout_s=1.0, max_bytes=2**20)
    worker = make_worker(engines, policy)
    with serve({"/x": route}) as server:
        out = run(worker, {"image": f"{server.base}/x?{SECRET}"}, limit_s=limit_s)
    assert needle in out["error"], out
    still_serves(worker)


# ---------------------------------------------------------------------------- presigned PUT outputs


@pytest.mark.parametrize(("address", "reason"), METADATA[:7])
def test_put_url_to_non_public_is_refused_before_any_work(engines, fake_dns, address, reason):
    answers, _ = fake_dns
    answers["bucket.example"] = [address]
    worker = make_worker(engines)
    for put in (f"https://bucket.example/out.png?{SECRET}", f"https://{f'[{address}]' if ':' in address else address}/o?{SECRET}"):
        out = run(worker, {"image": base64.b64encode(PNG).decode(), "output": {"put_url": put}})
        assert reason in out["error"] and "input.output.put_url" in out["error"], out
        assert "timings" not in str(out), "refused before the cut-out was made"


def test_put_url_rebinding_between_check_and_upload(engines, fake_dns, monkeypatch):
    """The PUT URL is checked when the job starts and again when the upload connects: a name
    that answers a 'public' address first and a private one later is refused at upload, and
    nothing reaches either server."""
    answers, lookups = fake_dns
    real_reason = safe_http.refusal_reason
    monkeypatch.setattr(safe_http, "refusal_reason", lambda ip: None if str(ip) == "127.0.0.2" else real_reason(ip))
    given = iter([["127.0.0.2"]])
    answers["rebind-put.example"] = lambda: next(given, ["169.254.169.254"])
    with serve({}, host="127.0.0.2") as server:
        worker = make_worker(engines, FetchPolicy(allow_http=True, timeout_s=3.0))
        out = run(worker, {"image": base64.b64encode(PNG).decode(),
                           "output": {"put_url": f"http://rebind-put.example:{server.port}/o.png?{SECRET}"}})
    assert "169.254.169.254, a link-local address" in str(out), out
    assert lookups == ["rebind-put.example", "rebind-put.example"]
    assert server.hits == []


@pytest.mark.parametrize("scheme_url", ["http://bucket.example/o.png", "ftp://bucket.example/o.png", "file:///tmp/o.png",
                                        "https://user:pw@bucket.example/o.png"])
def test_put_url_schemes(engines, scheme_url):
    out = run(make_worker(engines), {"image": base64.b64encode(PNG).decode(), "output": {"put_url": scheme_url}})
    assert "input.output.put_url" in out["error"], out


def _put_server(answer):
    """A loopback server whose PUT handler is ``answer`` (test_fetch's serve() answers GET only)."""
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self):  # noqa: N802
            answer(self)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server


def _put_slow(req):
    time.sleep(5)


def _put_redirect(req):
    req.rfile.read(int(req.headers.get("Content-Length", 0)))
    req.send_response(307)
    req.send_header("Location", f"http://169.254.169.254/?{SECRET}")
    req.send_header("Content-Length", "0")
    req.end_headers()


def _put_endless_error(req):
    req.rfile.read(int(req.headers.get("Content-Length", 0)))
    req.send_response(403)
    req.send_header("Transfer-Encoding", "chunked")
    req.end_headers()
    try:
        req.wfile.write(b"10\r\n<Code>Denied</Code>\r\n")
        while True:
            req.wfile.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
    except OSError:
        pass


def _put_drip_status(req):
    req.rfile.read(int(req.headers.get("Content-Length", 0)))
    for ch in b"HTTP/1.1 200 OK\r\n":
        req.wfile.write(bytes([ch]))
        req.wfile.flush()
        time.sleep(0.2)


@pytest.mark.parametrize(("answer", "needle"), [
    (_put_slow, "took longer than the 1 s limit"),
    (_put_redirect, "answered HTTP 307"),
    (_put_endless_error, "answered HTTP 403"),
    (_put_drip_status, "took longer than the 1 s limit"),
])
def test_put_servers_that_misbehave(engines, answer, needle):
    server = _put_server(answer)
    try:
        worker = make_worker(engines, FetchPolicy(allow_http=True, allow_private=True, timeout_s=3.0), put_timeout_s=1.0)
        out = run(worker, {"image": base64.b64encode(PNG).decode(),
                           "output": {"put_url": f"http://127.0.0.1:{server.server_address[1]}/o.png?{SECRET}"}}, limit_s=6)
        assert needle in str(out), out
        still_serves(worker)
    finally:
        server.shutdown()
        server.server_close()
