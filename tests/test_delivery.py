"""Output delivery against real local servers: S3 through moto's server mode (a real HTTP
S3-compatible endpoint on 127.0.0.1, driven by boto3 over the network, not a mock), PUT URLs
through a loopback HTTP server that records what it receives."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ben2_worker.api.delivery import (
    Artifact,
    Delivery,
    DeliveryError,
    S3Config,
    response_size_check,
    split_bucket_endpoint,
)
from ben2_worker.api.safe_http import FetchPolicy, fetch_url
from ben2_worker.config import Settings
from ben2_worker.errors import Ben2WorkerError, ConfigError, InputError


def delivery_from_env(env: dict) -> Delivery:
    """Delivery as the worker builds it: the settings config.py reads from ``env``."""
    return Delivery.from_settings(Settings.from_env(env))

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
ARTIFACT = Artifact("cutout.png", PNG, "image/png")
KEYS = {"BUCKET_ACCESS_KEY_ID": "test-key", "BUCKET_SECRET_ACCESS_KEY": "test-secret"}
LOOPBACK_OK = {"BEN2_WORKER_URL_ALLOW_HTTP": "1", "BEN2_WORKER_URL_ALLOW_PRIVATE": "1"}


# -- servers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    """A real S3-compatible HTTP endpoint (moto server mode) on a free loopback port."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    client.create_bucket(Bucket="outputs")
    yield endpoint, client
    server.stop()


def _key_of(url: str, bucket: str = "outputs") -> str:
    path = urlsplit(url).path
    assert path.startswith(f"/{bucket}/"), path
    return path[len(bucket) + 2 :]


class _PutHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        self.server.received.append({"path": self.path, "headers": dict(self.headers), "body": data})
        code, delay, extra = self.server.answer
        time.sleep(delay)
        payload = extra.encode()
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(payload)))
            if code in (301, 302, 307, 308):
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@contextmanager
def put_server(code: int = 200, delay: float = 0.0, body: str = ""):
    server = _Server(("127.0.0.1", 0), _PutHandler)
    server.received = []
    server.answer = (code, delay, body)
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# -- S3 -------------------------------------------------------------------------------------


def test_s3_upload_then_presigned_get_returns_the_bytes(s3_server):
    endpoint, client = s3_server
    delivery = delivery_from_env({"BUCKET_ENDPOINT_URL": f"{endpoint}/outputs", **KEYS})
    assert delivery.uses_upload
    assert delivery.s3 == S3Config(endpoint, "outputs", "test-key", "test-secret", "us-east-1")

    entry = delivery.deliver("sync-1234-abcd", ARTIFACT)

    assert set(entry) == {"filename", "type", "data"}
    assert entry["filename"] == "cutout.png" and entry["type"] == "s3_url"
    url = entry["data"]
    assert re.fullmatch(r"sync-1234-abcd/[0-9a-f]{8}\.png", _key_of(url))
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["604800"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "/us-east-1/s3/aws4_request" in query["X-Amz-Credential"][0]
    with urllib.request.urlopen(url, timeout=10) as response:  # plain HTTP GET of the presigned URL
        assert response.status == 200
        assert response.read() == PNG
        assert response.headers["Content-Type"] == "image/png"
    head = client.head_object(Bucket="outputs", Key=_key_of(url))
    assert head["ContentLength"] == len(PNG)
    # And through our own fetcher, as a follow-up job would read it.
    assert fetch_url(url, FetchPolicy(allow_http=True, allow_private=True)) == PNG


def test_s3_bucket_name_and_region_from_env_and_fresh_keys(s3_server):
    endpoint, client = s3_server
    delivery = delivery_from_env(
        {"BUCKET_ENDPOINT_URL": endpoint, "BUCKET_NAME": "outputs", "BUCKET_REGION": "eu-west-1", **KEYS}
    )
    first = delivery.deliver("job-2", Artifact("a.webp", b"RIFFwebp", "image/webp"))
    second = delivery.deliver("job-2", Artifact("noext", b"RIFFwebp2", "image/webp"))
    assert "/eu-west-1/s3/aws4_request" in parse_qs(urlsplit(first["data"]).query)["X-Amz-Credential"][0]
    key1, key2 = _key_of(first["data"]), _key_of(second["data"])
    assert re.fullmatch(r"job-2/[0-9a-f]{8}\.webp", key1) and re.fullmatch(r"job-2/[0-9a-f]{8}\.webp", key2)
    assert key1 != key2
    assert client.get_object(Bucket="outputs", Key=key2)["Body"].read() == b"RIFFwebp2"


def test_s3_job_id_cannot_escape_its_prefix(s3_server):
    endpoint, _ = s3_server
    delivery = delivery_from_env({"BUCKET_ENDPOINT_URL": f"{endpoint}/outputs/", **KEYS})
    key = _key_of(delivery.deliver("../x/y z", ARTIFACT)["data"])
    assert re.fullmatch(r"\.\._x_y_z/[0-9a-f]{8}\.png", key)


def test_s3_missing_bucket_names_endpoint_bucket_and_code(s3_server):
    endpoint, _ = s3_server
    delivery = delivery_from_env({"BUCKET_ENDPOINT_URL": f"{endpoint}/no-such-bucket", **KEYS})
    with pytest.raises(DeliveryError) as caught:
        delivery.deliver("job-3", ARTIFACT)
    message = str(caught.value)
    assert urlsplit(endpoint).netloc in message
    assert "bucket no-such-bucket" in message and "NoSuchBucket" in message
    assert isinstance(caught.value, Ben2WorkerError)


def test_s3_unreachable_endpoint():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delivery = delivery_from_env({"BUCKET_ENDPOINT_URL": f"http://127.0.0.1:{port}/outputs", **KEYS})
    with pytest.raises(DeliveryError) as caught:
        delivery.deliver("job-4", ARTIFACT)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "bucket outputs" in message and "EndpointConnectionError" in message


# -- S3 configuration -------------------------------------------------------------------------


def test_no_bucket_endpoint_means_base64():
    delivery = delivery_from_env({})
    assert not delivery.uses_upload
    entry = delivery.deliver("job", ARTIFACT)
    assert entry == {"filename": "cutout.png", "type": "base64", "data": base64.b64encode(PNG).decode()}
    assert not entry["data"].startswith("data:")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BUCKET_ENDPOINT_URL": "https://s3.example.com/b"}, "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY are not"),
        ({"BUCKET_ENDPOINT_URL": "https://s3.example.com/b", "BUCKET_ACCESS_KEY_ID": "k"}, "BUCKET_SECRET_ACCESS_KEY is not"),
        ({"BUCKET_ENDPOINT_URL": "https://acct.r2.cloudflarestorage.com", **KEYS}, "set BUCKET_NAME"),
        ({"BUCKET_ENDPOINT_URL": "https://s3.example.com/a", "BUCKET_NAME": "b", **KEYS}, "names the bucket 'a' but BUCKET_NAME is 'b'"),
        ({"BUCKET_ENDPOINT_URL": "https://s3.example.com/a/b", **KEYS}, "at most one segment"),
        ({"BUCKET_ENDPOINT_URL": "ftp://s3.example.com/a", **KEYS}, "must be an http(s) URL"),
    ],
)
def test_bad_s3_settings_fail_at_startup(env, expected):
    with pytest.raises(ConfigError) as caught:
        delivery_from_env(env)
    assert expected in str(caught.value) and caught.value.variable.startswith("BUCKET_")


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://host.example/bucket", ("https://host.example", "bucket", None)),
        ("http://127.0.0.1:9000/bucket/", ("http://127.0.0.1:9000", "bucket", None)),
        ("https://mybucket.s3.us-west-2.amazonaws.com", ("https://s3.us-west-2.amazonaws.com", "mybucket", "us-west-2")),
        ("https://my.dotted.bucket.s3.amazonaws.com", ("https://s3.amazonaws.com", "my.dotted.bucket", None)),
        ("https://s3.eu-central-1.amazonaws.com/b", ("https://s3.eu-central-1.amazonaws.com", "b", "eu-central-1")),
        ("https://b.nyc3.digitaloceanspaces.com", ("https://nyc3.digitaloceanspaces.com", "b", "nyc3")),
        ("https://acct.r2.cloudflarestorage.com", ("https://acct.r2.cloudflarestorage.com", None, None)),
    ],
)
def test_split_bucket_endpoint(endpoint, expected):
    assert split_bucket_endpoint(endpoint) == expected


def test_aws_virtual_host_endpoint_and_secret_not_in_repr():
    delivery = delivery_from_env({"BUCKET_ENDPOINT_URL": "https://photos.s3.eu-west-1.amazonaws.com", **KEYS})
    assert delivery.s3 == S3Config("https://s3.eu-west-1.amazonaws.com", "photos", "test-key", "test-secret", "eu-west-1")
    assert "test-secret" not in repr(delivery)


# -- PUT URLs -----------------------------------------------------------------------------------


def test_put_url_uploads_bytes_and_returns_url_without_query():
    delivery = delivery_from_env(LOOPBACK_OK)
    with put_server() as server:
        entry = delivery.deliver("job", ARTIFACT, put_url=server.base + "/up/cutout.png?X-Amz-Signature=secret&x=1")
    assert entry == {"filename": "cutout.png", "type": "put_url", "data": server.base + "/up/cutout.png"}
    (got,) = server.received
    assert got["path"] == "/up/cutout.png?X-Amz-Signature=secret&x=1"
    assert got["body"] == PNG
    assert got["headers"]["Content-Type"] == "image/png"
    assert got["headers"]["Content-Length"] == str(len(PNG))


def test_put_url_wins_over_s3_and_works_with_a_presigned_s3_put(s3_server):
    endpoint, client = s3_server
    env = {"BUCKET_ENDPOINT_URL": f"{endpoint}/outputs", **KEYS, **LOOPBACK_OK}
    delivery = delivery_from_env(env)
    presigned = client.generate_presigned_url(
        "put_object", Params={"Bucket": "outputs", "Key": "client/chosen.png"}, ExpiresIn=600
    )
    entry = delivery.deliver("job", ARTIFACT, put_url=presigned)
    assert entry == {"filename": "cutout.png", "type": "put_url", "data": f"{endpoint}/outputs/client/chosen.png"}
    assert client.get_object(Bucket="outputs", Key="client/chosen.png")["Body"].read() == PNG


@pytest.mark.parametrize("code", [403, 500, 307])
def test_put_error_status_names_host_and_status(code):
    delivery = delivery_from_env(LOOPBACK_OK)
    body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>" if code == 403 else ""
    with put_server(code, body=body) as server:
        with pytest.raises(DeliveryError) as caught:
            delivery.deliver("job", ARTIFACT, put_url=server.base + "/up?sig=secret")
    message = str(caught.value)
    assert f"the output upload to 127.0.0.1 answered HTTP {code}" in message
    assert "secret" not in message
    if code == 403:
        assert message.endswith("(AccessDenied)")
    assert len(server.received) == 1  # no retry, no redirect followed


def test_put_timeout():
    delivery = delivery_from_env({**LOOPBACK_OK, "BEN2_WORKER_PUT_TIMEOUT": "0.3"})
    with put_server(delay=2.0) as server:
        started = time.monotonic()
        with pytest.raises(DeliveryError, match=r"took longer than the 0\.3 s limit"):
            delivery.deliver("job", ARTIFACT, put_url=server.base + "/slow")
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9/up", "only https URLs are accepted"),
        ("https://127.0.0.1:9/up", "127.0.0.1 is a loopback address; refused"),
        ("https://10.0.0.1/up", "10.0.0.1 is a private address; refused"),
        ("https://169.254.169.254/latest", "a link-local address; refused"),
        ("https://[::1]/up", "a loopback address; refused"),
    ],
)
def test_put_url_goes_through_the_ssrf_policy(url, expected):
    with pytest.raises(InputError) as caught:
        delivery_from_env({}).deliver("job", ARTIFACT, put_url=url, field="output.put_url")
    assert caught.value.field == "output.put_url"
    assert str(caught.value).startswith("output URL refused: ") and expected in str(caught.value)


def test_put_timeout_setting_is_validated():
    with pytest.raises(ConfigError, match="BEN2_WORKER_PUT_TIMEOUT='soon' is not allowed: a positive number of seconds"):
        delivery_from_env({"BEN2_WORKER_PUT_TIMEOUT": "soon"})


# -- the 20 MB /runsync rule ----------------------------------------------------------------------


def _payload_of_size(size: int) -> dict:
    empty = len(json.dumps({"images": [{"data": ""}]}))
    payload = {"images": [{"data": "A" * (size - empty)}]}
    assert len(json.dumps(payload)) == size
    return payload


def test_response_size_check_boundaries():
    response_size_check(_payload_of_size(20_000_000))  # exactly the limit: fine
    with pytest.raises(DeliveryError) as caught:
        response_size_check(_payload_of_size(20_000_001))
    assert str(caught.value) == (
        "the response would be 20.000001 MB, over RunPod's 20 MB limit for /runsync results; "
        "set BUCKET_ENDPOINT_URL (S3 upload) or give an output put_url, or request webp/jpeg output"
    )
    with pytest.raises(DeliveryError, match=r"^the response would be 26\.7 MB, over RunPod's 20 MB limit"):
        response_size_check({"images": [{"data": base64.b64encode(b"\0" * 20_000_000).decode()}]})
    response_size_check(_payload_of_size(1000), limit_bytes=1000)
    with pytest.raises(DeliveryError, match=r"over RunPod's 0\.001 MB limit"):
        response_size_check(_payload_of_size(1001), limit_bytes=1000)


@pytest.mark.parametrize("value", [
    {"images": [{"filename": "a.png", "type": "base64", "data": "QUJD" * 1000, "width": 3000}], "timings": {"x": 1.5}},
    {"text": ['quote " and backslash \\', "é ü 中文 🎉", "tab\tnew\nline", "\x7f"], 3: None, 2.5: True, None: [], "e": {}},
    [], {}, "", 0, -1.25, None, False,
])
def test_json_size_is_the_length_of_the_json_text(value):
    from ben2_worker.api.delivery import json_size

    assert json_size(value) == len(json.dumps(value)) == len(json.dumps(value).encode("utf-8"))
