"""Every ```bash block of docs/service.md is run with bash against the service on loopback (with
keys, a webhook secret, and a loopback callback receiver and https image server that this
service's policies allow), in a folder holding photo.jpg; and every route the app serves has
a curl example there. The Python verification snippet verifies a real delivered callback."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLES
from service_harness import KEY, LOOPBACK_HTTP_URLS, LiveService, keyed
from test_fetch import body, fake_dns, serve, tls_files  # noqa: F401 - fixtures reused
from test_service_webhooks import SECRET, Receiver


DOC = ROOT / "docs" / "service.md"
BLOCKS = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)


def route_examples() -> str:
    return "\n".join(BLOCKS)


@pytest.fixture(scope="module")
def svc(models_dir):
    live = LiveService(keyed(webhook_secret=SECRET), models_dir=models_dir, urls=LOOPBACK_HTTP_URLS, warm=False)
    yield live
    live.stop()


def test_every_route_has_a_curl_example(svc):
    examples = route_examples()
    paths = {r.path for r in svc.app.routes if getattr(r, "path", None) not in (None, "/openapi.json", "/docs",
                                                                                 "/docs/oauth2-redirect")}
    assert paths, "no routes?"
    for path in sorted(paths):
        if path == "/static":
            continue  # the page's own files, fetched by the page
        shown = path.replace("{endpoint_id}", "self-hosted").replace("{job_id}", "$JOB_ID")
        assert f'"$BASE{shown}"' in examples or f'"$BASE{shown}' in examples, f"no curl example for {path}"


def test_the_curl_examples_run(svc, tmp_path, tls_files, fake_dns, monkeypatch):  # noqa: F811
    answers, _ = fake_dns
    answers["public.example"] = ["127.0.0.1"]  # the test certificate's name
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files / "ca.pem"))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tls_files / "server.pem")
    shutil.copyfile(SAMPLES / "astronaut.jpg", tmp_path / "photo.jpg")
    receiver = Receiver()
    # python3 in the examples is this interpreter (its folder first on PATH).
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "BASE": svc.base,
           "KEY": KEY, "WEBHOOK": receiver.url}
    try:
        with serve({"/photo.jpg": body((tmp_path / "photo.jpg").read_bytes(), ctype="image/jpeg")}, tls=tls) as images:
            env["IMAGE_URL"] = f"https://public.example:{images.port}/photo.jpg"
            for i, block in enumerate(BLOCKS):
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, f"block {i}:\n{block}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
        assert receiver.arrived.wait(60), "the webhook example's callback never arrived"
    finally:
        receiver.close()
    from PIL import Image

    assert Image.open(tmp_path / "cutout.png").mode == "RGBA"
    assert Image.open(tmp_path / "no-bg.png").size == Image.open(tmp_path / "photo.jpg").size
    assert Image.open(tmp_path / "matte.png").mode == "L"
    # The documented verification snippet, on the callback that really arrived.
    snippet = re.search(r"```python\n(import hashlib.*?)```", DOC.read_text(), flags=re.S).group(1)
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - our own documentation
    hit = receiver.hits[0]
    headers = {"X-Signature-Timestamp": hit["headers"]["x-signature-timestamp"], "X-Signature": hit["headers"]["x-signature"]}
    scope["verify_ben2_webhook"](SECRET, hit["body"], headers)
    with pytest.raises(ValueError, match="bad signature"):
        scope["verify_ben2_webhook"](SECRET, hit["body"] + b" ", headers)
