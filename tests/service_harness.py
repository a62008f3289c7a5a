"""The self-hosted service for tests: the real app, served by real uvicorn in a thread on a
free loopback port, over engines loaded through the worker's real loading path from a models
folder of stand-in models (tests/standin_models.py). Clients talk to it over real HTTP."""

from __future__ import annotations

import base64
import dataclasses
import io
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from ben2_worker.config import ApiKey, ServiceSettings, Settings, UrlSettings
from ben2_worker.engines import build_engines
from ben2_worker.service.app import create_app

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: URL inputs (and callbacks) may reach the tests' loopback servers; http is still refused.
LOOPBACK_URLS = UrlSettings(allow_private=True, timeout_s=10.0)
#: ... and plain-http ones too (the callback receivers).
LOOPBACK_HTTP_URLS = UrlSettings(allow_http=True, allow_private=True, timeout_s=10.0)


def engines_loader(models_dir: Path, pipelines: str = "simple") -> Callable[[Settings], object]:
    """The worker's engine factory over ``models_dir`` (stand-ins), under the app's settings."""
    def load(settings: Settings):
        return build_engines(dataclasses.replace(settings, models_dir=models_dir, allow_custom_models=True, threads=1),
                             pipelines=tuple(pipelines.split(",")))

    return load


def app_settings(service: ServiceSettings, urls: UrlSettings | None = None) -> Settings:
    """No environment: base64 delivery, and URL inputs under ``urls`` (default: strict, public https)."""
    return Settings(urls=urls or UrlSettings(timeout_s=10.0), service=service)


class LiveService:
    def __init__(self, settings: ServiceSettings | None = None, load_engines: Callable | None = None, *,
                 models_dir: Path | None = None, urls: UrlSettings | None = None, warm: bool = True,
                 wait_ready: bool = True, **settings_kw):
        import uvicorn

        settings = settings or ServiceSettings(port=free_port(), **settings_kw)
        port = settings.port
        load_engines = load_engines or engines_loader(models_dir)
        self.app = create_app(app_settings(settings, urls), load_engines, warm=warm)
        self.service = self.app.state.service
        self.base = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(self.app, host=settings.host, port=port, log_level="warning", lifespan="on",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 180) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = httpx.get(self.base + "/health", timeout=10)
            if r.status_code == 200:
                return r.json()
            if r.json().get("status") == "failed":
                raise RuntimeError(f"the service failed to load: {r.json()}")
            time.sleep(0.1)
        raise RuntimeError("the service was not ready in time")

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        headers = {"X-Api-Key": key} if key else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=kw.pop("timeout", 120), **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def photo_bytes(w: int = 320, h: int = 240, fmt: str = "PNG") -> tuple[np.ndarray, bytes]:
    """A real photo whose stand-in matte is exactly the centre box (conftest.subject_photo)."""
    from conftest import subject_photo

    img = subject_photo(w, h)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return img, buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def keyed(**kw) -> ServiceSettings:
    """Settings on a free loopback port with two keys (the second rate-limited hard)."""
    return ServiceSettings(port=free_port(), keys=(ApiKey("alice", KEY), ApiKey("bob", OTHER_KEY, 2, 2)), **kw)
