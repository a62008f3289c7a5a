"""Image inputs given as URLs, downloaded without becoming a server-side request forgery tool.

Rules (docs/delivery.md):

* https only (``allow_http`` for tests and private deployments); no credentials in the URL.
* The host is resolved **once**; every address it resolves to must be public (not private,
  loopback, link-local, multicast, reserved, unspecified, shared/CGNAT, nor an IPv6 form that
  embeds such an IPv4 address); the connection then goes to one of exactly those checked
  addresses, while the request carries the original ``Host`` header and TLS uses the hostname
  for SNI and certificate verification. A DNS answer that changes between check and connect
  (DNS rebinding) therefore cannot move the connection.
* Redirects are followed by hand, at most ``max_redirects``; each target goes through the same
  scheme and address checks.
* ``timeout_s`` bounds the whole download (DNS, connects, TLS, redirects, body), enforced by a
  watchdog that shuts the socket down at the deadline, so a server dripping one byte at a time
  cannot hold a worker.
* At most ``max_bytes`` are read: a larger ``Content-Length`` is refused before the body, and a
  body without one is cut off at the limit. ``Accept-Encoding: identity`` keeps the limit about
  real bytes.
* Proxy environment variables (``HTTPS_PROXY``...) are ignored: the checks are about the
  address the worker connects to.

The same machinery uploads outputs to a caller's PUT URL (``ben2_worker.api.delivery``).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from ben2_worker import __version__
from ben2_worker.errors import InputError

if TYPE_CHECKING:
    from ben2_worker.config import UrlSettings

__all__ = [
    # for callers: the policy and the two checked operations
    "DEFAULT_MAX_BYTES",
    "FetchPolicy",
    "check_url",
    "fetch_url",
    "refusal_reason",
    # for other transfers over the same checks (api/delivery.py's PUT uploads)
    "USER_AGENT",
    "BadURL",
    "Deadline",
    "Exchange",
    "Target",
    "TimedOut",
    "TransferFailed",
    "parse_url",
    "resolve_checked",
    "shown_url",
]

USER_AGENT = f"ben2-worker/{__version__}"
DEFAULT_MAX_BYTES = 50 * 2**20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 256 * 1024
_MAX_URL_CHARS = 16 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: IANA special-purpose blocks (RFC 6890 and successors) that are never a public server, listed
#: here because ``ipaddress``'s own tables differ between Python releases: before 3.11.10 /
#: 3.12.4, 192.0.0.192 (Oracle Cloud's metadata service) counted as global.
_SPECIAL_PURPOSE = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
    "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",
))


@dataclass(frozen=True)
class FetchPolicy:
    """What a URL input (or an output PUT URL) may point at, and how much may be read."""

    max_bytes: int = DEFAULT_MAX_BYTES
    #: Total wall-clock seconds for the whole download, redirects included.
    timeout_s: float = 20.0
    max_redirects: int = 5
    #: Accept plain http URLs (tests, private deployments only).
    allow_http: bool = False
    #: Accept private/loopback/link-local/... addresses (tests, private deployments only).
    allow_private: bool = False

    @classmethod
    def from_settings(cls, urls: UrlSettings) -> "FetchPolicy":
        """The policy the operator configured (``BEN2_WORKER_URL_*``, read by config.py)."""
        return cls(**asdict(urls))


def fetch_url(url: str, policy: FetchPolicy = FetchPolicy(), *, field: str = "image") -> bytes:
    """Download ``url`` under ``policy`` and return the body.

    Every refusal or failure raises ``InputError(message, field=field)``; messages never
    repeat the URL's query string (presigned URLs carry credentials there)."""
    deadline = Deadline(policy.timeout_s, "downloading")
    first = current = url
    try:
        for _hop in range(policy.max_redirects + 1):
            target = parse_url(current, policy)
            addresses = resolve_checked(target, policy, deadline)
            with Exchange(target, addresses, deadline) as exchange:
                response = exchange.request(
                    "GET", {"Accept": "image/*, */*;q=0.5", "Connection": "close"}
                )
                status = response.status
                if status in REDIRECT_STATUSES:
                    location = response.getheader("Location")
                    if not location:
                        raise TransferFailed(f"{target.shown} answered HTTP {status} (a redirect) without a Location header")
                    current = urljoin(current, location.strip())
                    continue
                if not 200 <= status < 300:
                    raise TransferFailed(f"{target.shown} answered HTTP {status} {response.reason}".rstrip())
                return exchange.read_body(policy.max_bytes)
        raise BadURL(
            f"too many redirects (more than {policy.max_redirects}) starting at {shown_url(first)}"
        )
    except (BadURL, TransferFailed) as exc:
        raise InputError(str(exc), field=field) from None


def check_url(url: str, policy: FetchPolicy = FetchPolicy(), *, field: str = "image") -> None:
    """Apply the scheme and address checks to ``url`` without connecting (resolves DNS), so a
    handler can refuse a bad input or output URL before doing any work. Raises ``InputError``."""
    try:
        resolve_checked(parse_url(url, policy), policy, Deadline(policy.timeout_s, "resolving"))
    except (BadURL, TransferFailed) as exc:
        raise InputError(str(exc), field=field) from None


# ------------------------------------------------------------------------------------------
# The transfer machinery, public (see __all__) so other transfers (delivery.py's PUT uploads)
# go through the same scheme, address, deadline and size checks.


class BadURL(Exception):
    """The URL itself is refused: scheme, syntax, unresolvable host, non-public address,
    too many redirects. Always the caller's input problem."""


class TransferFailed(Exception):
    """The transfer failed: connection, TLS, HTTP status, size limit, timeout."""


class TimedOut(TransferFailed):
    pass


class Deadline:
    """A wall-clock budget; ``remaining()`` raises ``TimedOut`` once it is spent."""

    def __init__(self, seconds: float, what: str):
        self.seconds = seconds
        self.what = what
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def remaining(self) -> float:
        left = self.left()
        if left <= 0:
            raise self.error()
        return left

    def error(self) -> TimedOut:
        return TimedOut(f"{self.what} took longer than the {self.seconds:g} s limit")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA) hostname or IP literal, no brackets
    port: int
    request_target: str  # path + query exactly as given
    shown: str  # scheme://host[:port]/path: no credentials, no query, no fragment


def parse_url(url: str, policy: FetchPolicy) -> Target:
    if not isinstance(url, str) or not url.strip():
        raise BadURL("the URL is empty")
    url = url.strip()
    if len(url) > _MAX_URL_CHARS:
        raise BadURL(f"the URL is {len(url)} characters long; at most {_MAX_URL_CHARS} are accepted")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise BadURL("the URL contains spaces or control characters; percent-encode them")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    allowed = ("http", "https") if policy.allow_http else ("https",)
    if scheme not in allowed:
        if scheme == "http":
            raise BadURL(
                f"only https URLs are accepted, got {shown_url(url)} "
                "(plain http is refused unless BEN2_WORKER_URL_ALLOW_HTTP=1)"
            )
        got = f"a {scheme!r} URL" if scheme else "a URL without a scheme"
        raise BadURL(f"only {' and '.join(allowed)} URLs are accepted, got {got}")
    if "@" in parts.netloc:
        raise BadURL("URLs with credentials (user@host) are not accepted")
    host = parts.hostname
    if not host:
        raise BadURL(f"the URL {shown_url(url)} has no host")
    try:
        port = parts.port
    except ValueError:
        raise BadURL(f"the URL {shown_url(url)} has an invalid port") from None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise BadURL(f"the host name in {shown_url(url)} is not a valid internationalised domain name") from None
    port = port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    request_target = path + (f"?{parts.query}" if parts.query else "")
    shown_host = f"[{host}]" if ":" in host else host
    default_port = 443 if scheme == "https" else 80
    netloc = shown_host if port == default_port else f"{shown_host}:{port}"
    return Target(scheme, host, port, request_target, f"{scheme}://{netloc}{path}")


def refusal_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` may not be contacted under the default policy (``"a private address"``),
    or ``None`` for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # drop any %scope
        if ip.ipv4_mapped is not None:
            return refusal_reason(ip.ipv4_mapped)
        embedded = ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and refusal_reason(embedded):
            return f"an IPv6 address embedding {embedded}, {refusal_reason(embedded)}"
        if ip.is_site_local:
            return "a site-local address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a non-public address"
    if any(ip.version == net.version and ip in net for net in _SPECIAL_PURPOSE):
        return "a special-purpose address"
    return None


def resolve_checked(target: Target, policy: FetchPolicy, deadline: Deadline) -> list[tuple[int, tuple]]:
    """Resolve once and check every address; return ``(family, sockaddr)`` pairs to connect to."""
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        sockaddr = (str(literal), target.port) if family == socket.AF_INET else (str(literal), target.port, 0, 0)
        infos = [(family, sockaddr)]
    else:
        infos = [(info[0], info[4]) for info in _getaddrinfo(target.host, target.port, deadline)]
    checked: list[tuple[int, tuple]] = []
    for family, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        shown = str(sockaddr[0]).split("%", 1)[0]
        ip = ipaddress.ip_address(shown)
        reason = None if policy.allow_private else refusal_reason(ip)
        if reason:
            if literal is not None:
                raise BadURL(f"the URL's host {target.host} is {reason}; refused (only public addresses are fetched)")
            raise BadURL(f"the host {target.host} resolves to {shown}, {reason}; refused (only public addresses are fetched)")
        if (family, sockaddr) not in checked:
            checked.append((family, sockaddr))
    if not checked:
        raise BadURL(f"the host {target.host} resolves to no IPv4 or IPv6 address")
    return checked


def _getaddrinfo(host: str, port: int, deadline: Deadline) -> list:
    """``socket.getaddrinfo`` bounded by the deadline (the resolver has no timeout of its own
    we control; a stuck lookup is left to finish in a daemon thread)."""
    outcome: dict = {}

    def lookup() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=lookup, name="ben2-dns", daemon=True)
    worker.start()
    worker.join(deadline.remaining())
    if worker.is_alive():
        raise deadline.error()
    error = outcome.get("error")
    if isinstance(error, socket.gaierror):
        raise BadURL(f"cannot resolve the host {host} ({error.strerror or error})")
    if error is not None:
        raise BadURL(f"cannot resolve the host {host} ({error})")
    return outcome["infos"]


class _Watchdog:
    """Shuts the connection down when the deadline passes, whatever call is blocked on it."""

    def __init__(self, deadline: Deadline):
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(deadline.left(), 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            # shutdown() acts on the socket, not the descriptor: a dup survives the TLS
            # wrapper detaching the original object and still ends the connection.
            self._sock = sock.dup()
            if self.fired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


_ssl_lock = threading.Lock()
_ssl_contexts: dict[tuple, ssl.SSLContext] = {}


def _ssl_context() -> ssl.SSLContext:
    """The default verifying context (system CAs; OpenSSL itself honours SSL_CERT_FILE and
    SSL_CERT_DIR), with certifi's bundle as a fallback when the image ships no CA store. One
    context per set of CA locations, as ``ssl`` reports them."""
    where = ssl.get_default_verify_paths()
    key = (where.cafile, where.capath)
    with _ssl_lock:
        context = _ssl_contexts.get(key)
        if context is None:
            context = ssl.create_default_context()
            if context.cert_store_stats().get("x509_ca", 0) == 0:
                capath = where.capath
                if not (capath and os.path.isdir(capath) and os.listdir(capath)):
                    try:
                        import certifi

                        context.load_verify_locations(certifi.where())
                    except ImportError:
                        pass
            _ssl_contexts[key] = context
        return context


class Exchange:
    """One HTTP request/response on a connection pinned to pre-checked addresses."""

    def __init__(self, target: Target, addresses: list[tuple[int, tuple]], deadline: Deadline):
        self.target = target
        self.deadline = deadline
        self._addresses = addresses
        self._watchdog = _Watchdog(deadline)
        if target.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                target.host, target.port, context=_ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(target.host, target.port)
        # http.client connects through this hook; ours ignores the name and dials the checked
        # addresses. self.host stays the hostname: Host header, SNI, certificate check.
        conn._create_connection = self._connect  # type: ignore[attr-defined]
        self._conn = conn
        self.response: http.client.HTTPResponse | None = None

    def __enter__(self) -> "Exchange":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._watchdog.close()
        if self.response is not None:
            self.response.close()
        self._conn.close()

    def _connect(self, _address, _timeout=None, _source_address=None) -> socket.socket:
        last: OSError | None = None
        for family, sockaddr in self._addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.deadline.remaining())
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            self._watchdog.attach(sock)
            return sock
        assert last is not None
        raise last

    def _translate(self, exc: BaseException, doing: str) -> TransferFailed:
        host = self.target.host
        if self._watchdog.fired or isinstance(exc, TimeoutError) or self.deadline.left() <= 0:
            return self.deadline.error()
        if isinstance(exc, TimedOut):
            return exc
        if isinstance(exc, ssl.SSLCertVerificationError):
            return TransferFailed(f"the TLS certificate of {host} could not be verified ({exc.verify_message})")
        if isinstance(exc, ssl.SSLError):
            return TransferFailed(f"TLS with {host} failed ({exc.reason or exc})")
        if isinstance(exc, ConnectionRefusedError):
            return TransferFailed(f"{host} port {self.target.port} refused the connection")
        if isinstance(exc, http.client.HTTPException):
            return TransferFailed(f"{host} sent a malformed or truncated answer while {doing} ({type(exc).__name__})")
        return TransferFailed(f"{doing} {self.target.shown} failed ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})")

    def request(self, method: str, headers: Mapping[str, str], body: bytes | None = None) -> http.client.HTTPResponse:
        conn = self._conn
        send_error: BaseException | None = None
        try:
            conn.putrequest(method, self.target.request_target, skip_accept_encoding=True)
            conn.putheader("User-Agent", USER_AGENT)
            conn.putheader("Accept-Encoding", "identity")
            for name, value in headers.items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
        except http.client.InvalidURL as exc:
            raise BadURL(f"the URL {self.target.shown} cannot be requested ({exc})") from None
        except (OSError, http.client.HTTPException, TimedOut) as exc:
            raise self._translate(exc, "connecting to") from None
        if body:
            view = memoryview(body)
            try:
                for start in range(0, len(view), _CHUNK):
                    self.deadline.remaining()
                    conn.send(view[start : start + _CHUNK])
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The server may have answered early (an error status) and closed; try to read it.
                send_error = exc
            except (OSError, TimedOut) as exc:
                raise self._translate(exc, "sending to") from None
        try:
            self.response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise self._translate(send_error or exc, "sending to" if send_error else "waiting for") from None
        return self.response

    def read_body(self, limit: int) -> bytes:
        """The body, refusing more than ``limit`` bytes (declared or streamed)."""
        response = self.response
        assert response is not None
        declared = response.getheader("Content-Length")
        length = None
        if declared is not None and response.getheader("Transfer-Encoding") is None:
            try:
                length = int(declared)
            except ValueError:
                raise TransferFailed(f"{self.target.shown} sent an invalid Content-Length {declared!r}") from None
            if length > limit:
                raise TransferFailed(
                    f"{self.target.shown} is {_size(length)} (Content-Length), over the {_size(limit)} "
                    "limit for URL inputs (BEN2_WORKER_URL_MAX_BYTES)"
                )
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                chunk = response.read1(min(_CHUNK, limit + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
                chunks.append(chunk)
                if total > limit:
                    raise TransferFailed(
                        f"{self.target.shown} sent more than the {_size(limit)} limit for URL inputs "
                        "(BEN2_WORKER_URL_MAX_BYTES); stopped reading"
                    )
                if self._watchdog.fired:
                    break
        except (OSError, http.client.HTTPException) as exc:
            raise self._translate(exc, "reading from") from None
        if self._watchdog.fired:
            raise self.deadline.error()
        if length is not None and total < length:
            raise TransferFailed(f"{self.target.shown} closed the connection after {total} of {length} bytes")
        return b"".join(chunks)

    def read_text(self, limit: int = 8192) -> str:
        """Up to ``limit`` bytes of the body as text, for error messages; never raises."""
        try:
            return self.response.read1(limit).decode("utf-8", "replace") if self.response else ""
        except Exception:  # noqa: BLE001 - best effort
            return ""


def shown_url(url: str) -> str:
    """``url`` without credentials, query or fragment, for messages."""
    try:
        parts = urlsplit(url.strip())
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else "the URL"
    except ValueError:
        return "the URL"


def _size(n: int) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.4g} MiB"
    if n >= 1024:
        return f"{n / 1024:.4g} KiB"
    return f"{n} bytes"
