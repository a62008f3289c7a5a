"""The service is an extra: the worker image never installs it, its static files ship as
package data, and the page references nothing outside the process."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT

from ben2_worker.service.app import STATIC


def test_service_is_an_extra_the_worker_image_does_not_install():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    names = lambda reqs: {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}  # noqa: E731
    assert {"fastapi", "uvicorn", "python-multipart", "prometheus-client"} <= names(extras["service"])
    assert not {"python-multipart", "prometheus-client"} & names(extras["worker"] + project["project"]["dependencies"])
    installer = (ROOT / "docker" / "install-python-deps.sh").read_text()
    chosen = re.findall(r'extras="?([^"\n]*)"?', installer)
    assert chosen and all("service" not in e for e in chosen), chosen
    assert "service" not in (ROOT / "Dockerfile").read_text().lower().replace("serverless", "")
    data = project["tool"]["setuptools"]["package-data"]["ben2_worker"]
    assert "service/static/*" in data


def test_the_page_uses_only_its_own_files():
    files = {p.name for p in STATIC.iterdir()}
    assert files == {"index.html", "playground.js", "playground.css"}
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith("/static/") or r.startswith("data:") for r in refs), refs
    for name in ("playground.js", "playground.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://|@import|url\(", text), f"{name} loads something from elsewhere"
    assert sum(p.stat().st_size for p in STATIC.iterdir()) < 40_000
