"""Where outputs go: a caller's PUT URL, the operator's S3 bucket, or base64 in the response.

Response entries have worker-comfyui's shape (``{"filename", "type", "data"}``, docs/contracts.md#worker-comfyui):

* ``put_url`` given: the bytes are PUT there (same SSRF policy as URL inputs) and ``data`` is
  that URL without its query string (presigned URLs carry credentials there).
* ``BUCKET_ENDPOINT_URL`` set: uploaded to ``{job_id}/{8 random hex}{ext}`` with one
  ``PutObject`` (an object either appears whole or not at all) and ``data`` is a presigned GET
  URL valid 7 days, ``type`` ``s3_url``.
* otherwise ``type`` ``base64``, ``data`` the plain base64 (no ``data:`` prefix).

``response_size_check`` refuses a response RunPod's ``/runsync`` would not carry (20 MB).
See docs/delivery.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ben2_worker.api.safe_http import BadURL, Deadline, Exchange, FetchPolicy, TransferFailed, parse_url, resolve_checked
from ben2_worker.config import DEFAULT_PUT_TIMEOUT_S, S3Settings, Settings
from ben2_worker.errors import Ben2WorkerError, ConfigError, InputError

#: RunPod's limit for a /runsync result (docs/contracts.md#runpod), in bytes of JSON.
RUNSYNC_LIMIT_BYTES = 20 * 10**6
#: Presigned GET lifetime: 7 days, the SigV4 maximum (as runpod's rp_upload).
PRESIGN_SECONDS = 7 * 24 * 3600

_EXTENSIONS = {"image/png": ".png", "image/webp": ".webp", "image/jpeg": ".jpg", "image/jpg": ".jpg"}
_AWS_VIRTUAL_HOST = re.compile(
    r"^(?P<bucket>[a-z0-9][a-z0-9.-]*?)\.(?P<service>s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?)$"
)
_AWS_REGION = re.compile(r"(?:^|[.-])([a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+)(?:\.|$)")
_SPACES_VIRTUAL_HOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]*?)\.(?P<region>[a-z0-9-]+)\.digitaloceanspaces\.com$")


class DeliveryError(Ben2WorkerError):
    """An output could not be delivered (upload failed, storage misconfigured, response too
    large). The message names the storage host, bucket and the error code or HTTP status."""


@dataclass(frozen=True)
class Artifact:
    filename: str
    data: bytes
    content_type: str  # e.g. "image/png"


@dataclass(frozen=True)
class S3Config:
    """Where S3 uploads go. ``endpoint_url`` is the service endpoint without the bucket."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint_url).netloc

    @classmethod
    def from_settings(cls, s3: S3Settings) -> "S3Config | None":
        """``None`` when ``BUCKET_ENDPOINT_URL`` is unset; ConfigError when it is set but the
        rest is missing or contradictory (a worker must not silently fall back to base64)."""
        if not s3.endpoint_url:
            return None
        given = {"BUCKET_ACCESS_KEY_ID": s3.access_key_id, "BUCKET_SECRET_ACCESS_KEY": s3.secret_access_key}
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ConfigError(f"BUCKET_ENDPOINT_URL is set but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not",
                              variable=missing[0])
        base, url_bucket, url_region = split_bucket_endpoint(s3.endpoint_url)
        if s3.bucket and url_bucket and s3.bucket != url_bucket:
            raise ConfigError(f"BUCKET_ENDPOINT_URL names the bucket {url_bucket!r} but BUCKET_NAME is {s3.bucket!r}",
                              variable="BUCKET_NAME")
        bucket = s3.bucket or url_bucket
        if not bucket:
            raise ConfigError(
                f"BUCKET_ENDPOINT_URL {s3.endpoint_url} names no bucket: set BUCKET_NAME, or give the bucket "
                "in the URL (https://host/<bucket> or https://<bucket>.s3.<region>.amazonaws.com)",
                variable="BUCKET_NAME",
            )
        return cls(base, bucket, s3.access_key_id, s3.secret_access_key, s3.region or url_region or "us-east-1")


def split_bucket_endpoint(endpoint_url: str) -> tuple[str, str | None, str | None]:
    """``(service endpoint, bucket or None, region or None)`` from a ``BUCKET_ENDPOINT_URL``.

    * ``https://host[:port]/<bucket>`` → ``https://host[:port]``, bucket from the path;
    * ``https://<bucket>.s3[.<region>].amazonaws.com`` (worker-comfyui's documented form) →
      ``https://s3[.<region>].amazonaws.com``, bucket and region from the host name;
    * ``https://<bucket>.<region>.digitaloceanspaces.com`` → ``https://<region>.digitaloceanspaces.com``;
    * anything else (``https://<account>.r2.cloudflarestorage.com``): no bucket; BUCKET_NAME needed.

    runpod's ``rp_upload`` passes the URL to boto3 unchanged with a bucket of ``MM-YY``; the
    store then reads the bucket from the URL (path or host) and ``MM-YY`` becomes a key prefix.
    We upload to the same bucket, with keys ``{job_id}/...`` as worker-comfyui documents."""
    parts = urlsplit(endpoint_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"BUCKET_ENDPOINT_URL must be an http(s) URL, got {endpoint_url!r}", variable="BUCKET_ENDPOINT_URL")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError("BUCKET_ENDPOINT_URL must not carry credentials, a query or a fragment", variable="BUCKET_ENDPOINT_URL")
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) > 1:
        raise ConfigError(
            f"BUCKET_ENDPOINT_URL's path must be at most one segment (the bucket), got {parts.path!r}",
            variable="BUCKET_ENDPOINT_URL",
        )
    host = parts.hostname
    port = f":{parts.port}" if parts.port else ""
    if segments:
        return f"{parts.scheme}://{parts.netloc}", segments[0], _region_of(host)
    aws = _AWS_VIRTUAL_HOST.match(host)
    if aws:
        service = aws.group("service")
        return f"{parts.scheme}://{service}{port}", aws.group("bucket"), _region_of(service)
    spaces = _SPACES_VIRTUAL_HOST.match(host)
    if spaces:
        region = spaces.group("region")
        return f"{parts.scheme}://{region}.digitaloceanspaces.com{port}", spaces.group("bucket"), region
    return f"{parts.scheme}://{parts.netloc}", None, _region_of(host)


def _region_of(service_host: str) -> str | None:
    """The region in an AWS or DigitalOcean service host name (as rp_upload reads it)."""
    if service_host.endswith(".digitaloceanspaces.com"):
        return service_host.split(".")[-3]
    if service_host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        found = _AWS_REGION.search(service_host)
        return found.group(1) if found else None
    return None


class Delivery:
    """Chooses and performs the delivery of each output. Thread-safe."""

    def __init__(
        self,
        s3: S3Config | None = None,
        *,
        policy: FetchPolicy = FetchPolicy(),
        put_timeout_s: float = DEFAULT_PUT_TIMEOUT_S,
    ):
        self.s3 = s3
        #: The SSRF policy PUT URLs must pass (the one URL inputs use).
        self.policy = policy
        self.put_timeout_s = put_timeout_s
        self._client = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Delivery(s3={self.s3!r}, policy={self.policy!r}, put_timeout_s={self.put_timeout_s!r})"

    @property
    def uses_upload(self) -> bool:
        """True when outputs go to S3 unless a request gives a PUT URL."""
        return self.s3 is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Delivery":
        """S3 when ``BUCKET_ENDPOINT_URL`` is set, the PUT URL policy of URL inputs, and
        ``BEN2_WORKER_PUT_TIMEOUT`` seconds per PUT, as config.py read them. Raises ConfigError
        for S3 settings that do not fit together."""
        return cls(S3Config.from_settings(settings.s3), policy=FetchPolicy.from_settings(settings.urls),
                   put_timeout_s=settings.put_timeout_s)

    def deliver(self, job_id: str, artifact: Artifact, *, put_url: str | None = None, field: str = "put_url") -> dict:
        """Deliver one output; returns its response entry ``{"filename", "type", "data"}``.

        A ``put_url`` refused by the policy (scheme, address) raises ``InputError`` with
        ``field``; a failed upload raises ``DeliveryError``."""
        if put_url is not None:
            return self._put(put_url, artifact, field)
        if self.s3 is not None:
            return self._upload_s3(job_id, artifact)
        return {
            "filename": artifact.filename,
            "type": "base64",
            "data": base64.b64encode(artifact.data).decode("ascii"),
        }

    # -- PUT URL -------------------------------------------------------------------------

    def _put(self, url: str, artifact: Artifact, field: str) -> dict:
        deadline = Deadline(self.put_timeout_s, "uploading the output")
        try:
            target = parse_url(url, self.policy)
            addresses = resolve_checked(target, self.policy, deadline)
        except BadURL as exc:
            raise InputError(f"output URL refused: {exc}", field=field) from None
        except TransferFailed as exc:
            raise DeliveryError(f"uploading {artifact.filename} to {urlsplit(url).hostname}: {exc}") from None
        try:
            with Exchange(target, addresses, deadline) as exchange:
                response = exchange.request("PUT", {"Content-Type": artifact.content_type}, artifact.data)
                status = response.status
                detail = exchange.read_text() if status >= 300 else ""
        except BadURL as exc:
            raise InputError(f"output URL refused: {exc}", field=field) from None
        except TransferFailed as exc:
            raise DeliveryError(f"uploading {artifact.filename} to {target.host} failed: {exc}") from None
        if status >= 300:
            code = re.search(r"<Code>([^<]{1,100})</Code>", detail)
            answer = " ".join(filter(None, [f"HTTP {status}", response.reason, f"({code.group(1)})" if code else ""]))
            raise DeliveryError(f"the output upload to {target.host} answered {answer}")
        return {"filename": artifact.filename, "type": "put_url", "data": target.shown}

    # -- S3 --------------------------------------------------------------------------------

    def _s3_client(self):
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                s3 = self.s3
                config = Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    # Bounded by the same upload time limit as a PUT URL (BEN2_WORKER_PUT_TIMEOUT).
                    connect_timeout=min(10.0, self.put_timeout_s),
                    read_timeout=min(60.0, self.put_timeout_s),
                    # botocore >= 1.36 adds CRC checksums by default, which several
                    # S3-compatible stores reject; we send Content-MD5 ourselves.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=s3.endpoint_url,
                    aws_access_key_id=s3.access_key_id,
                    aws_secret_access_key=s3.secret_access_key,
                    region_name=s3.region,
                    config=config,
                )
            return self._client

    def _upload_s3(self, job_id: str, artifact: Artifact) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = self.s3
        assert s3 is not None
        key = f"{_safe_job_id(job_id)}/{secrets.token_hex(4)}{_extension(artifact)}"
        md5 = base64.b64encode(hashlib.md5(artifact.data, usedforsecurity=False).digest()).decode("ascii")
        try:
            client = self._s3_client()
            client.put_object(
                Bucket=s3.bucket, Key=key, Body=artifact.data, ContentType=artifact.content_type, ContentMD5=md5
            )
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=PRESIGN_SECONDS
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            message = error.get("Message") or ""
            raise DeliveryError(
                f"uploading {artifact.filename} to S3 failed: endpoint {s3.host}, bucket {s3.bucket}, "
                f"error {code}{': ' + message if message else ''}"
            ) from exc
        except (BotoCoreError, ValueError) as exc:
            raise DeliveryError(
                f"uploading {artifact.filename} to S3 failed: endpoint {s3.host}, bucket {s3.bucket}, "
                f"error {type(exc).__name__}: {exc}"
            ) from exc
        return {"filename": artifact.filename, "type": "s3_url", "data": url}


def json_size(value: Any) -> int:
    """``len(json.dumps(value))`` (ASCII, so also its size in bytes) without building the text:
    a response's base64 images are counted by length instead of being copied into one string."""
    if isinstance(value, str):
        if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            return len(value) + 2
        return len(json.dumps(value))
    if isinstance(value, dict):
        items = [(k if isinstance(k, str) else None, k, v) for k, v in value.items()]
        keys = sum(json_size(s) if s is not None else len(json.dumps({k: 0})) - 5 for s, k, _ in items)
        return 2 + keys + sum(2 + json_size(v) for _, _, v in items) + 2 * max(0, len(items) - 1)
    if isinstance(value, (list, tuple)):
        return 2 + sum(json_size(v) for v in value) + 2 * max(0, len(value) - 1)
    return len(json.dumps(value))


def response_size_check(payload: dict, limit_bytes: int = RUNSYNC_LIMIT_BYTES) -> None:
    """Raise ``DeliveryError`` when ``payload`` as JSON is larger than ``limit_bytes``."""
    size = json_size(payload)
    if size > limit_bytes:
        decimals = 1
        while round(size / 1e6, decimals) <= limit_bytes / 1e6 and decimals < 6:
            decimals += 1
        raise DeliveryError(
            f"the response would be {size / 1e6:.{decimals}f} MB, over RunPod's {limit_bytes / 1e6:g} MB limit "
            "for /runsync results; set BUCKET_ENDPOINT_URL (S3 upload) or give an output put_url, or request "
            "webp/jpeg output"
        )


def _safe_job_id(job_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(job_id))[:128]
    return "job" if safe in ("", ".", "..") else safe


def _extension(artifact: Artifact) -> str:
    ext = os.path.splitext(artifact.filename)[1].lower()
    if re.fullmatch(r"\.[a-z0-9]{1,8}", ext):
        return ext
    return _EXTENSIONS.get(artifact.content_type.split(";")[0].strip().lower(), "")
