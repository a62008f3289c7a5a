"""URL inputs: real loopback HTTP(S) servers, real sockets. The only thing simulated is DNS
(``fake_dns`` monkeypatches ``socket.getaddrinfo`` to answer for made-up names, nothing else),
plus, in one test, which single loopback address counts as "public" (said where it is done)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ben2_worker.api import safe_http
from ben2_worker.api.safe_http import FetchPolicy, check_url, fetch_url, refusal_reason
from ben2_worker.config import Settings
from ben2_worker.errors import ConfigError
from ben2_worker.errors import InputError

OPEN = FetchPolicy(allow_http=True, allow_private=True, timeout_s=5.0)
PAYLOAD = bytes(range(256)) * 40  # 10 KiB


# -- loopback server ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        self.server.hits.append({"path": self.path, "headers": dict(self.headers)})
        route = self.server.routes.get(self.path.split("?", 1)[0])
        try:
            if route is None:
                self.send_error(404)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


@contextmanager
def serve(routes: dict, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
    """Serve ``routes`` ({path: handler(request)}) on ``host``; yields the server (``.base``
    is its URL, ``.hits`` the requests it received)."""
    server = (_Server6 if ":" in host else _Server)((host, 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.routes = routes
    server.hits = []
    port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    server.base = f"{'https' if tls else 'http'}://{shown}:{port}"
    server.port = port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def body(data: bytes = PAYLOAD, *, length: bool = True, chunked: bool = False, ctype: str = "image/png"):
    def route(req):
        req.send_response(200)
        req.send_header("Content-Type", ctype)
        if chunked:
            req.send_header("Transfer-Encoding", "chunked")
        elif length:
            req.send_header("Content-Length", str(len(data)))
        else:
            req.send_header("Connection", "close")
            req.close_connection = True
        req.end_headers()
        if chunked:
            for i in range(0, len(data), 4096):
                part = data[i : i + 4096]
                req.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            req.wfile.write(b"0\r\n\r\n")
        else:
            for i in range(0, len(data), 65536):
                req.wfile.write(data[i : i + 65536])

    return route


def redirect(location: str, status: int = 302, delay: float = 0.0):
    def route(req):
        time.sleep(delay)
        req.send_response(status)
        if location:
            req.send_header("Location", location)
        req.send_header("Content-Length", "0")
        req.end_headers()

    return route


def status(code: int):
    def route(req):
        req.send_error(code)

    return route


@pytest.fixture
def fake_dns(monkeypatch):
    """Simulated DNS answers, and only that: ``answers[name] = [ip, ...]`` (or a callable
    returning the list per lookup); other names go to the real resolver. ``lookups`` records
    each simulated lookup."""
    answers: dict = {}
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host not in answers:
            return real(host, port, family, type, proto, flags)
        lookups.append(host)
        found = answers[host]
        found = found() if callable(found) else found
        if isinstance(found, BaseException):
            raise found
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in found
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, lookups


def refused(url: str, policy: FetchPolicy = FetchPolicy(), field: str = "image") -> str:
    with pytest.raises(InputError) as caught:
        fetch_url(url, policy, field=field)
    assert caught.value.field == field
    assert "?" not in str(caught.value), "messages must not repeat query strings"
    return str(caught.value)


# -- happy paths ----------------------------------------------------------------------------


def test_fetches_bytes_with_identity_encoding():
    with serve({"/a.png": body()}) as server:
        assert fetch_url(server.base + "/a.png?sig=secret", OPEN) == PAYLOAD
    (hit,) = server.hits
    assert hit["path"] == "/a.png?sig=secret"
    assert hit["headers"]["Host"] == f"127.0.0.1:{server.port}"
    assert hit["headers"]["Accept-Encoding"] == "identity"
    assert hit["headers"]["User-Agent"].startswith("ben2-worker/")


@pytest.mark.parametrize("mode", ["close-delimited", "chunked"])
def test_fetches_bodies_without_content_length(mode):
    route = body(length=False) if mode == "close-delimited" else body(chunked=True)
    with serve({"/x": route}) as server:
        assert fetch_url(server.base + "/x", OPEN) == PAYLOAD


def test_follows_redirects_relative_and_absolute():
    with serve({}) as server:
        server.routes.update(
            {
                "/start": redirect("/two", 301),
                "/two": redirect(server.base + "/three?x=1", 307),
                "/three": redirect("four", 308),
                "/four": body(),
            }
        )
        assert fetch_url(server.base + "/start", FetchPolicy(allow_http=True, allow_private=True, max_redirects=3)) == PAYLOAD
    assert [h["path"] for h in server.hits] == ["/start", "/two", "/three?x=1", "/four"]


def test_connects_to_the_checked_address_with_the_original_host_header(fake_dns):
    """DNS answers once; a second (rebinding) answer would go elsewhere and must never be used."""
    answers, lookups = fake_dns
    given = iter([["127.0.0.1"]])
    answers["pin.example"] = lambda: next(given, ["127.0.0.3"])
    with serve({"/p": body()}) as server:
        assert fetch_url(f"http://pin.example:{server.port}/p", OPEN) == PAYLOAD
    assert lookups == ["pin.example"]
    assert server.hits[0]["headers"]["Host"] == f"pin.example:{server.port}"


# -- limits ---------------------------------------------------------------------------------


def test_content_length_over_limit_is_refused_before_the_body():
    policy = FetchPolicy(allow_http=True, allow_private=True, max_bytes=1000)
    with serve({"/big": body(b"x" * 1001)}) as server:
        message = refused(server.base + "/big", policy)
    assert "Content-Length" in message and "1001 bytes" in message and "limit" in message


@pytest.mark.parametrize("mode", ["close-delimited", "chunked"])
def test_streamed_body_over_limit_stops_at_the_limit(mode, monkeypatch):
    policy = FetchPolicy(allow_http=True, allow_private=True, max_bytes=100_000)
    received: list[int] = []
    original = safe_http.http.client.HTTPResponse.read1

    def read1(self, n=-1):  # counts what the fetcher actually took off the connection
        chunk = original(self, n)
        received.append(len(chunk))
        return chunk

    monkeypatch.setattr(safe_http.http.client.HTTPResponse, "read1", read1)
    route = body(b"y" * 5_000_000, length=False) if mode == "close-delimited" else body(b"y" * 5_000_000, chunked=True)
    with serve({"/big": route}) as server:
        message = refused(server.base + "/big", policy)
    assert "more than the 97.66 KiB limit" in message and "stopped reading" in message
    assert sum(received) == 100_001  # read up to one byte past the limit, then stopped


def test_body_shorter_than_content_length():
    def liar(req):
        req.send_response(200)
        req.send_header("Content-Length", "5000")
        req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.write(b"z" * 100)
        req.close_connection = True

    with serve({"/short": liar}) as server:
        assert "closed the connection after 100 of 5000 bytes" in refused(server.base + "/short", OPEN)


@pytest.mark.parametrize("code", [404, 500, 403])
def test_http_error_status_is_named(code):
    with serve({"/err": status(code)}) as server:
        message = refused(server.base + "/err?token=abc", OPEN)
    assert f"HTTP {code}" in message and "/err" in message


def test_redirect_limits():
    with serve({}) as server:
        server.routes.update({f"/r{i}": redirect(f"/r{i + 1}") for i in range(3)})
        server.routes["/r3"] = body()
        assert fetch_url(server.base + "/r0", FetchPolicy(allow_http=True, allow_private=True, max_redirects=3)) == PAYLOAD
        message = refused(server.base + "/r0", FetchPolicy(allow_http=True, allow_private=True, max_redirects=2))
    assert "too many redirects (more than 2)" in message


def test_redirect_without_location_and_to_other_schemes():
    with serve({"/noloc": redirect("", 302), "/file": redirect("file:///etc/passwd"), "/ftp": redirect("ftp://x/y")}) as server:
        assert "without a Location header" in refused(server.base + "/noloc", OPEN)
        assert "only http and https URLs are accepted, got a 'file' URL" in refused(server.base + "/file", OPEN)
        assert "'ftp' URL" in refused(server.base + "/ftp", OPEN)


# -- timeouts (total wall-clock) ------------------------------------------------------------


def test_slow_headers_time_out():
    def sleepy(req):
        time.sleep(3)

    with serve({"/slow": sleepy}) as server:
        started = time.monotonic()
        message = refused(server.base + "/slow", FetchPolicy(allow_http=True, allow_private=True, timeout_s=0.3))
    assert "took longer than the 0.3 s limit" in message
    assert time.monotonic() - started < 1.5


def test_dripping_body_times_out_on_total_time_not_per_read():
    def drip(req):
        req.send_response(200)
        req.send_header("Content-Length", "1000")
        req.end_headers()
        for _ in range(1000):
            req.wfile.write(b"d")
            req.wfile.flush()
            time.sleep(0.02)

    with serve({"/drip": drip}) as server:
        started = time.monotonic()
        message = refused(server.base + "/drip", FetchPolicy(allow_http=True, allow_private=True, timeout_s=0.4))
    assert "took longer than the 0.4 s limit" in message
    assert time.monotonic() - started < 1.5


def test_timeout_covers_the_whole_redirect_chain():
    with serve({}) as server:
        server.routes.update({f"/h{i}": redirect(f"/h{i + 1}", delay=0.15) for i in range(5)})
        server.routes["/h5"] = body()
        message = refused(server.base + "/h0", FetchPolicy(allow_http=True, allow_private=True, timeout_s=0.5))
    assert "took longer" in message
    assert len(server.hits) < 5


def test_slow_dns_times_out(fake_dns):
    answers, _ = fake_dns

    def slow():
        time.sleep(1.0)
        return ["127.0.0.1"]

    answers["slow.example"] = slow
    started = time.monotonic()
    assert "took longer" in refused("http://slow.example/x", FetchPolicy(allow_http=True, allow_private=True, timeout_s=0.2))
    assert time.monotonic() - started < 0.8


# -- SSRF refusals under the default policy -------------------------------------------------


def test_default_policy_refuses_plain_http_before_connecting():
    with serve({"/a": body()}) as server:
        message = refused(server.base + "/a?X-Amz-Signature=s", field="images[0].image")
    assert message.startswith("only https URLs are accepted")
    assert "BEN2_WORKER_URL_ALLOW_HTTP" in message
    assert server.hits == []


def test_loopback_refused_even_with_http_allowed():
    with serve({"/a": body()}) as server:
        message = refused(server.base + "/a", FetchPolicy(allow_http=True))
    assert message == "the URL's host 127.0.0.1 is a loopback address; refused (only public addresses are fetched)"
    assert server.hits == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://127.0.0.1/x", "127.0.0.1 is a loopback address; refused"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address; refused"),
        ("https://[::1]/x", "::1 is a loopback address; refused"),
        ("https://[::ffff:127.0.0.1]/x", "is a loopback address; refused"),
        ("https://10.0.0.1/x", "10.0.0.1 is a private address; refused"),
        ("https://0.0.0.0/x", "an unspecified address"),
        ("https://224.0.0.251/x", "a multicast address"),
        ("https://100.64.0.1/x", "a non-public address"),
        ("https://[fe80::1]/x", "a link-local address"),
        ("https://[fd00::1]/x", "a private address"),
        ("https://[2002:7f00:1::]/x", "embedding 127.0.0.1, a loopback address"),
        ("https://[64:ff9b::a9fe:a9fe]/x", "embedding 169.254.169.254, a link-local address"),
    ],
)
def test_literal_non_public_addresses_refused(url, expected):
    assert expected in refused(url)


def test_localhost_refused():
    # The real resolver: localhost is 127.0.0.1 and/or ::1 (from /etc/hosts, no network).
    message = refused("https://localhost/x")
    assert message.startswith("the host localhost resolves to ")
    assert "a loopback address; refused" in message


def test_ipv6_loopback_server_refused_by_default():
    try:
        server_cm = serve({"/a": body()}, host="::1")
        server = server_cm.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert "::1 is a loopback address; refused" in refused(server.base + "/a", FetchPolicy(allow_http=True))
        assert fetch_url(server.base + "/a", OPEN) == PAYLOAD
    finally:
        server_cm.__exit__(None, None, None)


def test_hostnames_resolving_to_private_addresses_refused(fake_dns):
    answers, _ = fake_dns
    answers["internal.example"] = ["10.0.0.1"]
    answers["loop.example"] = ["127.0.0.1"]
    answers["metadata.example"] = ["169.254.169.254"]
    answers["mapped.example"] = ["::ffff:192.168.1.1"]
    # One public answer and one private: every address is checked, not just the first.
    answers["mixed.example"] = ["93.184.215.14", "192.168.0.7"]
    assert "the host internal.example resolves to 10.0.0.1, a private address; refused" in refused("https://internal.example/")
    assert "resolves to 127.0.0.1, a loopback address; refused" in refused("https://loop.example/a.png")
    assert "resolves to 169.254.169.254, a link-local address; refused" in refused("https://metadata.example/")
    assert "resolves to ::ffff:192.168.1.1, a private address; refused" in refused("https://mapped.example/")
    assert "resolves to 192.168.0.7, a private address; refused" in refused("https://mixed.example/")


def test_unresolvable_host(fake_dns):
    answers, _ = fake_dns
    answers["nx.example"] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert "cannot resolve the host nx.example (Name or service not known)" in refused("https://nx.example/a")


def test_redirect_from_a_public_host_to_private_ones_is_refused(fake_dns, monkeypatch):
    answers, _ = fake_dns
    # Simulation: "public.example" is served from 127.0.0.2, and that one loopback address is
    # treated as public. Everything else, including the redirect checks, runs unmodified.
    real_reason = safe_http.refusal_reason
    monkeypatch.setattr(safe_http, "refusal_reason", lambda ip: None if str(ip) == "127.0.0.2" else real_reason(ip))
    answers["public.example"] = ["127.0.0.2"]
    answers["internal.example"] = ["10.0.0.1"]
    policy = FetchPolicy(allow_http=True)  # private addresses refused
    with serve({"/secret": body(b"internal")}, host="127.0.0.1") as internal:
        routes = {
            "/ok": body(),
            "/to-loopback": redirect(internal.base + "/secret"),
            "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
            "/to-internal": redirect("http://internal.example/admin"),
            "/to-public": redirect("/ok"),
        }
        with serve(routes, host="127.0.0.2") as public:
            base = f"http://public.example:{public.port}"
            assert fetch_url(base + "/to-public", policy) == PAYLOAD
            assert "127.0.0.1 is a loopback address; refused" in refused(base + "/to-loopback", policy)
            assert "169.254.169.254 is a link-local address; refused" in refused(base + "/to-metadata", policy)
            assert "internal.example resolves to 10.0.0.1, a private address; refused" in refused(base + "/to-internal", policy)
    assert internal.hits == []


# -- TLS to a pinned address ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throwaway CA and a server certificate for public.example (EC keys: fast)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("ben2 test CA"))
        .issuer_name(name("ben2 test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("public.example"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("public.example")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder


def test_https_to_pinned_address_uses_hostname_for_sni_and_verification(tls_files, fake_dns, monkeypatch):
    answers, _ = fake_dns
    answers["public.example"] = ["127.0.0.1"]
    answers["other.example"] = ["127.0.0.1"]
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files / "ca.pem"))  # trust the test CA only
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tls_files / "server.pem")
    sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, server_name, ctx: sni.append(server_name)
    https_private = FetchPolicy(allow_private=True, timeout_s=5.0)  # https only
    with serve({"/tls.png": body()}, tls=server_tls) as server:
        assert fetch_url(f"https://public.example:{server.port}/tls.png", https_private) == PAYLOAD
        assert server.hits[0]["headers"]["Host"] == f"public.example:{server.port}"
        assert sni[0] == "public.example"
        message = refused(f"https://other.example:{server.port}/tls.png", https_private)
        assert "TLS certificate of other.example could not be verified" in message
        # The IP itself is not in the certificate either.
        assert "could not be verified" in refused(f"https://127.0.0.1:{server.port}/tls.png", https_private)


# -- URL syntax, policy from env, address table ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "the URL is empty"),
        ("https://user:pw@example.com/a", "credentials"),
        ("https:///nohost", "has no host"),
        ("https://example.com:99999/", "invalid port"),
        ("https://exa mple.com/", "spaces or control characters"),
        ("example.com/a.png", "got a URL without a scheme"),
        ("data:image/png;base64,AAAA", "got a 'data' URL"),
        ("https://example.com/" + "a" * 20000, "characters long"),
    ],
)
def test_malformed_urls(url, expected):
    assert expected in refused(url)


def test_check_url_validates_without_connecting(fake_dns):
    answers, lookups = fake_dns
    answers["good.example"] = ["93.184.215.14"]
    answers["bad.example"] = ["192.168.1.1"]
    check_url("https://good.example/put?sig=1", field="output")
    with pytest.raises(InputError) as caught:
        check_url("https://bad.example/put", field="output")
    assert caught.value.field == "output" and "private address" in str(caught.value)
    assert lookups == ["good.example", "bad.example"]


def policy_from_env(env: dict) -> FetchPolicy:
    """The policy as the worker builds it from the settings config.py reads."""
    return FetchPolicy.from_settings(Settings.from_env(env).urls)


def test_policy_from_env():
    assert policy_from_env({}) == FetchPolicy()
    policy = policy_from_env(
        {
            "BEN2_WORKER_URL_MAX_BYTES": "1_000_000",
            "BEN2_WORKER_URL_TIMEOUT": "2.5",
            "BEN2_WORKER_URL_ALLOW_HTTP": "1",
            "BEN2_WORKER_URL_ALLOW_PRIVATE": "true",
        }
    )
    assert policy == FetchPolicy(max_bytes=1_000_000, timeout_s=2.5, allow_http=True, allow_private=True)
    for name, value in [
        ("BEN2_WORKER_URL_MAX_BYTES", "lots"),
        ("BEN2_WORKER_URL_MAX_BYTES", "0"),
        ("BEN2_WORKER_URL_TIMEOUT", "-1"),
        ("BEN2_WORKER_URL_TIMEOUT", "nan"),
        ("BEN2_WORKER_URL_ALLOW_PRIVATE", "maybe"),
    ]:
        with pytest.raises(ConfigError, match=f"{name}={value!r} is not allowed"):
            policy_from_env({name: value})


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("2002:808:808::", True),
        ("127.0.0.1", False),
        ("127.255.0.9", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.100.0.1", False),
        ("198.18.0.1", False),
        ("192.0.2.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::", False),
        ("::1", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::a00:1", False),
        ("2001:db8::1", False),
    ],
)
def test_refusal_reason_table(address, public):
    assert (refusal_reason(ipaddress.ip_address(address)) is None) is public
