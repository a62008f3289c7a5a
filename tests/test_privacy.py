"""What the worker logs about a job, by default: no image data (uploads or outputs), no
captions or classifier descriptions of the image, no URL query strings (presigned credentials),
no secrets (S3 keys). ``BEN2_WORKER_LOG_PRIVATE=1`` logs more, for debugging.

Real jobs through the job processor (BEN2 stand-in), a loopback server for URL inputs and PUT
outputs, moto's S3 server; every log record of every logger at INFO (the default level) and of
the project's loggers at DEBUG is captured and searched."""

from __future__ import annotations

import base64
import dataclasses
import logging
import re

import pytest
from conftest import subject_photo
from fuzz_targets import valid_workflow
from test_fetch import body, serve

from ben2_worker.api.delivery import Delivery, S3Config
from ben2_worker.api.jobs import JobProcessor
from ben2_worker.api.safe_http import FetchPolicy
from ben2_worker.config import Settings
from ben2_worker.engines import Engines, load_cutout_engine
from ben2_worker.imaging import encode_image

PNG = encode_image(subject_photo(120, 90), "png")
B64 = base64.b64encode(PNG).decode()
SIGNATURE = "X-Amz-Signature=0123456789abcdefsecret"
S3_SECRET = "wJalrXUtnFEMI-test-secret-key"
LOOPBACK = FetchPolicy(allow_http=True, allow_private=True, timeout_s=5.0)


@pytest.fixture(scope="module")
def engines(models_dir) -> Engines:
    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1)
    return Engines(cutout=load_cutout_engine(settings), settings=settings)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="ben2_worker")
    return caplog


def chunks(b64: str, n: int = 4) -> list[str]:
    """A few 24-character pieces from the middle of some base64: any of them in a log is a leak."""
    step = max(1, (len(b64) - 48) // n)
    return [b64[24 + i * step: 48 + i * step] for i in range(n)]


def assert_private(text: str, *, data: list[str], secrets: list[str]) -> None:
    for piece in data:
        assert piece not in text, f"image data in the logs: {piece!r}"
    for secret in secrets:
        assert secret not in text, f"a secret in the logs: {secret!r}"
    assert not re.search(r"X-Amz-(Signature|Credential)=", text), "a presigned query string in the logs"


def test_jobs_log_no_image_data_urls_or_secrets(engines, logs):
    outputs: list[str] = []
    with serve({"/in.png": body(PNG)}) as server:
        url = f"{server.base}/in.png?{SIGNATURE}"
        worker = JobProcessor(engines, delivery=Delivery(policy=LOOPBACK), fetch_policy=LOOPBACK)
        jobs = [
            {"id": "p1", "input": {"image": B64, "output": {"mask": True}}},
            {"id": "p2", "input": {"image": url}},
            {"id": "p3", "input": {"workflow": valid_workflow("a.png"), "images": [{"name": "a.png", "image": B64}]}},
            {"id": "p4", "input": {"image": f"https://169.254.169.254/latest/?{SIGNATURE}"}},
            {"id": "p5", "input": {"image": f"{server.base}/missing.png?{SIGNATURE}"}},
            {"id": "p6", "input": {"image": B64[:-8] + "!!!!"}},
            {"id": "p7", "input": {"image": B64, "output": {"put_url": f"http://127.0.0.1:1/o.png?{SIGNATURE}"}}},
        ]
        for job in jobs:
            out = worker(job)
            for entry in out.get("images", []):
                for e in (entry, entry.get("mask") or {}):
                    if e.get("type") == "base64":
                        outputs.append(e["data"])
    assert len(outputs) >= 3
    assert logs.records, "the jobs logged nothing at all: the test would prove nothing"
    assert_private(logs.text, data=chunks(B64) + [c for o in outputs for c in chunks(o)],
                   secrets=["0123456789abcdefsecret"])


def test_s3_delivery_logs_no_keys(engines, logs):
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                                       aws_secret_access_key="y").create_bucket(Bucket="outputs")
        worker = JobProcessor(engines, delivery=Delivery(S3Config(endpoint, "outputs", "AKIDTESTKEY", S3_SECRET)))
        out = worker({"id": "s3", "input": {"image": B64}})
        assert out["images"][0]["type"] == "s3_url", out
        bad = JobProcessor(engines, delivery=Delivery(S3Config(endpoint, "nope", "AKIDTESTKEY", S3_SECRET)))
        assert "error" in bad({"id": "s3b", "input": {"image": B64}})
        assert S3_SECRET not in repr(worker.delivery)
    finally:
        server.stop()
    assert_private(logs.text, data=chunks(B64), secrets=[S3_SECRET])


def test_error_logs_are_bounded(engines, logs):
    """A refused job's log line names the problem, not the megabytes it came with."""
    huge = "Q" * 2_000_000
    worker = JobProcessor(engines, delivery=Delivery())
    worker({"id": "big", "input": {"workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": huge}},
                                                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}},
                                   "images": []}})
    assert max(len(r.getMessage()) for r in logs.records) < 5000


def test_private_logging_is_a_setting(engines, logs):
    """BEN2_WORKER_LOG_PRIVATE=1 (debugging) logs the sources; the default does not."""
    assert Settings.from_env({"BEN2_WORKER_LOG_PRIVATE": "1"}).log_private is True
    assert Settings.from_env({}).log_private is False
    verbose = dataclasses.replace(engines, settings=dataclasses.replace(engines.settings, log_private=True))
    with serve({"/in.png": body(PNG)}) as server:
        url = f"{server.base}/in.png?{SIGNATURE}"
        JobProcessor(engines, delivery=Delivery(), fetch_policy=LOOPBACK)({"id": "q", "input": {"image": url}})
        assert SIGNATURE not in logs.text
        JobProcessor(verbose, delivery=Delivery(), fetch_policy=LOOPBACK)({"id": "v", "input": {"image": url}})
    assert SIGNATURE in logs.text


@pytest.mark.slow
def test_full_pipeline_logs_no_caption_or_classifier_text(tmp_path_factory, logs):
    """The full pipeline's caption (and the classifier's reasons, which describe the image) stay
    out of the logs, for allowed and for blocked images; with the debug setting they appear."""
    full = pytest.importorskip("test_full_pipeline")
    from ben2_worker.handler import build_engines

    engines = build_engines(full.settings_for(full.build_full_models(tmp_path_factory.mktemp("m-safe"), "UNSAFE")),
                            pipelines="simple,full")
    job = {"id": "f", "input": {"image": B64, "pipeline": "full"}}
    out = JobProcessor(engines, delivery=Delivery())(job)
    assert out["images"][0]["status"] == "blocked" and out["images"][0]["caption"] == full.CAPTION, out
    workflow = full.load(full.FULL_API)
    out = JobProcessor(engines, delivery=Delivery())(
        {"id": "w", "input": {"workflow": workflow, "images": [{"name": full.loadimage_name(workflow), "image": B64}]}})
    assert out.get("status") == "blocked", out
    assert full.CAPTION not in logs.text
    verbose = dataclasses.replace(engines, settings=dataclasses.replace(engines.settings, log_private=True))
    JobProcessor(verbose, delivery=Delivery())(job)
    assert full.CAPTION in logs.text
