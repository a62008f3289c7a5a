"""scripts/check-image-deps.py against real pip and a package index served on loopback: a real
conflict fails (naming the pins), a registry that drops connections or never answers is
skipped with a message, never a red CI; and .ci/run asks it before running the README's tests."""

from __future__ import annotations

import importlib.util
import io
import socket
import sys
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("check_image_deps", ROOT / "scripts" / "check-image-deps.py")
deps = importlib.util.module_from_spec(spec)
sys.modules["check_image_deps"] = deps  # dataclasses look their module up
spec.loader.exec_module(deps)


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
            name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    wheel = f"{name}-{version}-py3-none-any.whl"
    (folder / "files").mkdir(exist_ok=True)
    (folder / "files" / wheel).write_bytes(buf.getvalue())
    page = folder / "simple" / name / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    links = page.read_text() if page.exists() else ""
    page.write_text(links + f'<a href="../../files/{wheel}">{wheel}</a>\n')


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A PEP 503 index on loopback: alpha 1.0 needs beta==2.0; beta 1.0 and 2.0 exist."""
    root = tmp_path_factory.mktemp("index")
    _wheel(root, "alpha", "1.0", ("beta==2.0",))
    _wheel(root, "beta", "1.0")
    _wheel(root, "beta", "2.0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()


def _image(constraints: list[str]) -> "deps.ImageSet":
    return deps.ImageSet(name="test", requirements=["alpha"], constraints=constraints)


def test_pins_that_resolve_pass(index):
    result = deps.check(_image([]), python=sys.executable, timeout=120, index=index)
    assert result["status"] == "ok" and result["resolved"] == 2, result


def test_a_real_conflict_fails_naming_the_pins(index):
    result = deps.check(_image(["beta==1.0"]), python=sys.executable, timeout=120, index=index)
    assert result["status"] == "conflict", result
    assert any("beta" in line for line in result["problems"]), result


def _silent_server(reply: bool):
    """Accepts connections and then closes them at once (``reply`` False: keeps them, says nothing)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            if reply:
                conn.close()
            else:
                held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}/simple/"


def test_a_registry_that_drops_connections_is_skipped_not_failed():
    sock, url = _silent_server(reply=True)
    try:
        result = deps.check(_image([]), python=sys.executable, timeout=120, index=url)
    finally:
        sock.close()
    assert result["status"] == "skipped", result
    assert "registry" in result["problems"][0]


def test_a_registry_that_never_answers_is_skipped_within_the_time_limit():
    sock, url = _silent_server(reply=False)
    try:
        result = deps.check(_image([]), python=sys.executable, timeout=5, index=url)
    finally:
        sock.close()
    assert result["status"] == "skipped" and "within 5 s" in result["problems"][0], result


def test_ci_asks_the_registry_first_then_runs_the_readme_tests():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    check = next(i for i, line in enumerate(lines) if "scripts/check-image-deps.py" in line)
    assert lines[-1] == "exec ./scripts/test.sh" and check < len(lines) - 1
