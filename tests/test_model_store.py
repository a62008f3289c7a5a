"""Model store: manifest completeness, verification, lock file, downloads, CLI.

Offline and fast: small stand-in files and a custom manifest; downloads go through the real
``huggingface_hub`` against a tiny HTTP server on 127.0.0.1 that answers the Hub's
``/{repo}/resolve/{revision}/{path}`` endpoint (HEAD metadata + GET bytes)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ben2_worker.config import Settings
from ben2_worker.models.cli import models_app
from ben2_worker.errors import DownloadError, ModelCorruptError, ModelError, ModelMissingError
from ben2_worker.models import store as store_mod
from ben2_worker.models.download import STAGING_DIRNAME
from ben2_worker.models.store import (
    LOCK_FILENAME,
    VERIFIED_FILENAME,
    ModelFile,
    ModelSpec,
    ModelStore,
    load_manifest,
    models_for_pipeline,
    parse_manifest,
    read_lock,
)

BEN2_SHA = "22cea62108ff53b7ccc20f7a008bf30494228d84b1687f29ecbe76936a998101"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WEIGHTS = bytes(range(256)) * 1200  # 307,200 bytes: the "big" LFS file
CONFIG = b'{"model_type": "tiny"}\n'  # small file whose checksum nobody published


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- fixtures


class FakeHub:
    """Answers HEAD/GET /{repo}/resolve/{revision}/{path} the way huggingface_hub expects."""

    def __init__(self, files: dict[tuple[str, str], bytes], commit: str = COMMIT, lfs: bool = True):
        self.files = files
        self.commit = commit
        self.lfs = lfs
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _lookup(self):
                m = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
                if not m:
                    return None, "EntryNotFound"
                repo, revision, path = m.groups()
                if revision not in ("main", hub.commit):
                    return None, "RevisionNotFound"
                body = hub.files.get((repo, path))
                return body, None if body is not None else "EntryNotFound"

            def _answer(self, method: str):
                hub.requests.append((method, self.path))
                body, error = self._lookup()
                if body is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", error)
                    self.send_header("X-Error-Message", f"{error} (fake hub)")
                    self.send_header("X-Repo-Commit", hub.commit)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commit)
                if hub.lfs:  # LFS files: the etag is the sha256 of the content
                    self.send_header("X-Linked-Etag", f'"{sha(body)}"')
                    self.send_header("X-Linked-Size", str(len(body)))
                self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method == "GET":
                    self.wfile.write(body)

            def do_HEAD(self):
                self._answer("HEAD")

            def do_GET(self):
                self._answer("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def gets(self) -> list[str]:
        return [p for m, p in self.requests if m == "GET" and "/resolve/" in p]

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def tiny_spec(
    *, weights_sha: str | None = None, config_sha: str | None = None, revision: str | None = COMMIT
) -> ModelSpec:
    return ModelSpec(
        name="tiny",
        title="Tiny stand-in",
        source="huggingface",
        repo="org/tiny",
        revision=revision,
        files=(
            ModelFile("weights/model.onnx", "tiny_dir/model.onnx", weights_sha or sha(WEIGHTS), len(WEIGHTS)),
            ModelFile("config.json", "tiny_dir/config.json", config_sha, None),
        ),
        licence="MIT",
        licence_url="https://example.invalid/licence",
        pipelines=("simple", "full"),
    )


def single_spec(name: str = "one", data: bytes = WEIGHTS) -> ModelSpec:
    return ModelSpec(
        name=name,
        title="One file",
        source="huggingface",
        repo="org/one",
        revision=COMMIT,
        files=(ModelFile("one.onnx", f"{name}_onnx/one.onnx", sha(data), len(data)),),
        licence="MIT",
        licence_url="https://example.invalid/licence",
        pipelines=("simple",),
    )



def store_from_env(*args, **kw) -> ModelStore:
    """The store as ``ben2-worker models`` builds it: the Hub settings (HF_ENDPOINT, HF_HUB_OFFLINE,
    HF_HUB_ETAG_TIMEOUT) read from the (monkeypatched) environment by config.py."""
    return ModelStore(*args, hub=Settings.from_env().hub, **kw)


@pytest.fixture(autouse=True)
def _clean_hub_env(monkeypatch):
    for var in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "BEN2_WORKER_MODELS", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def hub(monkeypatch):
    with FakeHub({("org/tiny", "weights/model.onnx"): WEIGHTS, ("org/tiny", "config.json"): CONFIG,
                  ("org/one", "one.onnx"): WEIGHTS}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- manifest


def test_packaged_manifest_is_complete_and_pins_the_contract_values():
    manifest = load_manifest()
    assert set(manifest) == {"ben2", "florence2", "nudenet", "llama"}
    for name, spec in manifest.items():
        assert spec.repo and spec.licence and spec.licence_url, name
        assert spec.revision or spec.revision_source.lower().startswith("unknown"), name
        assert spec.revision_source and spec.licence_source, f"{name}: where did the facts come from?"
        if spec.source == "huggingface" and spec.revision:
            assert re.fullmatch(r"[0-9a-f]{40}", spec.revision), name
        for f in spec.files:
            assert f.sha256 or f.sha256_source.lower().startswith("unknown"), (name, f)
            assert f.size or f.size_source.lower().startswith("unknown"), (name, f)
            assert f.sha256_source, (name, f)
            assert not f.dest.startswith("/") and ".." not in f.dest
    ben2 = manifest["ben2"]
    assert ben2.source == "huggingface" and ben2.repo == "PramaLLC/BEN2"
    assert ben2.revision.startswith("e48a2076")
    assert ben2.files[0].sha256 == BEN2_SHA
    assert ben2.files[0].size == 222_932_053
    assert ben2.files[0].dest == "ben2_onnx/BEN2_Base.onnx"
    assert ben2.pipelines == ("simple", "full")
    assert all(manifest[n].pipelines == ("full",) for n in ("florence2", "nudenet", "llama"))
    assert manifest["nudenet"].source == "pypi" and manifest["nudenet"].revision == "3.4.2"
    assert models_for_pipeline(manifest, "simple") == ["ben2"]
    assert set(models_for_pipeline(manifest, "full")) == set(manifest)
    florence_files = {f.path_in_repo for f in manifest["florence2"].files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= florence_files


def test_paths_follow_the_comfyui_layout(tmp_path):
    store = store_from_env(tmp_path)
    assert store.path("ben2") == tmp_path / "ben2_onnx" / "BEN2_Base.onnx"
    assert store.path("florence2") == tmp_path / "LLM" / "Florence-2-base"
    assert store.path("llama") == tmp_path / "llm" / "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"
    assert store.path("nudenet") == tmp_path / "nudenet" / "320n.onnx"
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        store.path("nope")


def _toml_model(**overrides):
    model = {
        "title": "T", "source": "huggingface", "repo": "o/r", "revision": COMMIT, "revision_source": "x",
        "licence": "MIT", "licence_url": "u", "licence_source": "s", "pipelines": ["full"],
        "files": [{"path_in_repo": "a", "dest": "d/a", "sha256": "", "sha256_source": "unknown: lock",
                   "size_source": "unknown: lock"}],
    }
    model.update(overrides)
    return {"schema": 1, "models": {"m": model}}


def test_manifest_accepts_explicit_unknowns_and_rejects_silent_gaps():
    spec = parse_manifest(_toml_model())["m"]
    assert spec.files[0].sha256 is None and spec.files[0].size is None
    silent_sha = _toml_model(files=[{"path_in_repo": "a", "dest": "d/a", "sha256": "", "size": 3}])
    with pytest.raises(ValueError, match="sha256 is empty"):
        parse_manifest(silent_sha)
    silent_size = _toml_model(files=[{"path_in_repo": "a", "dest": "d/a", "sha256": "0" * 64, "sha256_source": "x"}])
    with pytest.raises(ValueError, match="size is missing"):
        parse_manifest(silent_size)
    with pytest.raises(ValueError, match="revision is empty"):
        parse_manifest(_toml_model(revision="", revision_source=""))
    with pytest.raises(ValueError, match="40-hex"):
        parse_manifest(_toml_model(revision="main"))
    escape = _toml_model(files=[{"path_in_repo": "a", "dest": "../a", "sha256": "", "sha256_source": "unknown",
                                 "size_source": "unknown"}])
    with pytest.raises(ValueError, match="inside the models directory"):
        parse_manifest(escape)


# --------------------------------------------------------------------------- require / verify


def test_require_and_verify_accept_the_right_file(tmp_path):
    store = store_from_env(tmp_path, {"one": single_spec()})
    write(tmp_path / "one_onnx" / "one.onnx", WEIGHTS)
    assert store.require("one") == tmp_path / "one_onnx" / "one.onnx"
    assert store.require("one", full_check=True) == tmp_path / "one_onnx" / "one.onnx"
    assert store.status("one").state == "verified"  # the stamp from the full check


def test_missing_file_message_names_path_checksum_and_fix_command(tmp_path):
    store = store_from_env(tmp_path, {"one": single_spec()})
    with pytest.raises(ModelMissingError) as err:
        store.require("one")
    message = str(err.value)
    assert str(tmp_path / "one_onnx" / "one.onnx") in message
    assert sha(WEIGHTS) in message and f"{len(WEIGHTS):,} bytes" in message
    assert "ben2-worker models download one" in message
    assert "BEN2_WORKER_MODELS" in message
    assert store.status("one").state == "missing"


def test_truncated_file_fails_require_with_size_and_checksum(tmp_path):
    store = store_from_env(tmp_path, {"one": single_spec()})
    path = write(tmp_path / "one_onnx" / "one.onnx", WEIGHTS[:1000])
    with pytest.raises(ModelCorruptError) as err:
        store.require("one")
    message = str(err.value)
    assert str(path) in message and sha(WEIGHTS) in message and f"{len(WEIGHTS):,}" in message
    assert "ben2-worker models download one" in message
    assert store.status("one").state == "size_mismatch"


def test_corrupted_file_passes_cheap_check_but_fails_verify(tmp_path):
    store = store_from_env(tmp_path, {"one": single_spec()})
    bad = bytearray(WEIGHTS)
    bad[12345] ^= 0xFF
    path = write(tmp_path / "one_onnx" / "one.onnx", bytes(bad))
    assert store.require("one") == path  # presence + size only
    assert store.status("one").state == "present"
    with pytest.raises(ModelCorruptError) as err:
        store.require("one", full_check=True)
    message = str(err.value)
    assert str(path) in message and sha(WEIGHTS) in message and sha(bytes(bad)) in message
    assert store.status("one", full=True).state == "corrupt"


def test_verified_stamp_makes_repeat_verification_cheap_and_is_invalidated_by_changes(tmp_path, monkeypatch):
    store = store_from_env(tmp_path, {"one": single_spec()})
    path = write(tmp_path / "one_onnx" / "one.onnx", WEIGHTS)
    store.verify("one")
    stamps = json.loads((tmp_path / VERIFIED_FILENAME).read_text())
    st = path.stat()
    assert stamps["one_onnx/one.onnx"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha(WEIGHTS)}

    calls = []
    real = store_mod.sha256_file
    monkeypatch.setattr(store_mod, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    store_from_env(tmp_path, {"one": single_spec()}).verify("one")  # a fresh worker start
    assert calls == []  # served from the stamp

    bad = bytearray(WEIGHTS)
    bad[0] ^= 0xFF
    path.write_bytes(bytes(bad))  # same size, new content
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(ModelCorruptError, match=sha(bytes(bad))):
        store.verify("one")
    assert calls == [path]
    assert "one_onnx/one.onnx" not in json.loads((tmp_path / VERIFIED_FILENAME).read_text())


def test_check_reports_one_error_per_bad_file(tmp_path):
    spec = tiny_spec(config_sha=sha(CONFIG))
    store = store_from_env(tmp_path, {"tiny": spec})
    write(tmp_path / "tiny_dir" / "model.onnx", WEIGHTS[:10])
    problems = store.check("tiny")
    assert [type(p) for p in problems] == [ModelCorruptError, ModelMissingError]
    assert "model.onnx" in str(problems[0]) and "config.json" in str(problems[1])


# --------------------------------------------------------------------------- lock file


def test_unknown_checksum_is_never_skipped_silently(tmp_path):
    store = store_from_env(tmp_path, {"tiny": tiny_spec()})
    write(tmp_path / "tiny_dir" / "model.onnx", WEIGHTS)
    write(tmp_path / "tiny_dir" / "config.json", CONFIG)
    assert store.status("tiny").state == "unpinned"
    with pytest.raises(ModelError, match="no sha256 is known") as err:
        store.verify("tiny")
    assert "ben2-worker models download tiny" in str(err.value)


def test_first_download_records_unknown_checksum_and_later_verification_uses_it(tmp_path, hub):
    store = store_from_env(tmp_path, {"tiny": tiny_spec()})
    assert store.download("tiny", progress=False) == tmp_path / "tiny_dir"
    lock = read_lock(tmp_path / LOCK_FILENAME)
    entry = lock["models"]["tiny"]
    assert entry["revision"] == COMMIT and entry["repo"] == "org/tiny"
    assert entry["files"]["tiny_dir/config.json"]["sha256"] == sha(CONFIG)
    assert entry["files"]["tiny_dir/config.json"]["size"] == len(CONFIG)
    assert entry["files"]["tiny_dir/model.onnx"]["sha256"] == sha(WEIGHTS)

    fresh = store_from_env(tmp_path, {"tiny": tiny_spec()})  # a later process
    fresh.verify("tiny")
    config = tmp_path / "tiny_dir" / "config.json"
    config.write_bytes(b'{"model_type": "evil"}\n')
    with pytest.raises(ModelCorruptError) as err:
        fresh.verify("tiny")
    assert sha(CONFIG) in str(err.value) and str(tmp_path / LOCK_FILENAME) in str(err.value)


def test_export_lock_writes_recorded_facts_for_the_repo(tmp_path, hub):
    store = store_from_env(tmp_path / "models", {"tiny": tiny_spec()})
    store.download("tiny", progress=False)
    out = store.export_lock(tmp_path / "repo.lock.json")
    assert read_lock(out)["models"]["tiny"]["files"]["tiny_dir/config.json"]["sha256"] == sha(CONFIG)
    # a store reading that repo lock knows the checksum without the models-dir lock
    (tmp_path / "models" / LOCK_FILENAME).unlink()
    again = store_from_env(tmp_path / "models", {"tiny": tiny_spec()}, repo_lock_path=out)
    again.verify("tiny")


# --------------------------------------------------------------------------- downloads


def test_download_places_verified_files_and_leaves_no_partials(tmp_path, hub):
    store = store_from_env(tmp_path, {"tiny": tiny_spec(config_sha=sha(CONFIG))})
    path = store.download("tiny", progress=False)
    assert (path / "model.onnx").read_bytes() == WEIGHTS
    assert (path / "config.json").read_bytes() == CONFIG
    assert not (tmp_path / STAGING_DIRNAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOCK_FILENAME, VERIFIED_FILENAME, "tiny_dir"])
    assert all(f"/resolve/{COMMIT}/" in p for p in hub.gets())  # the pinned revision, not main
    assert store.status("tiny").state == "verified"

    before = len(hub.gets())
    store.download("tiny", progress=False)  # already verified: nothing fetched
    assert len(hub.gets()) == before
    store.download("tiny", progress=False, force=True)
    assert len(hub.gets()) == before + 2


def test_download_replaces_a_corrupt_file(tmp_path, hub):
    store = store_from_env(tmp_path, {"one": single_spec()})
    path = write(tmp_path / "one_onnx" / "one.onnx", b"x" * len(WEIGHTS))
    store.download("one", progress=False)
    assert path.read_bytes() == WEIGHTS


def test_download_refuses_hub_bytes_that_do_not_match_the_pin(tmp_path, hub):
    wrong = sha(b"something else")
    store = store_from_env(tmp_path, {"tiny": tiny_spec(weights_sha=wrong)})
    with pytest.raises(DownloadError) as err:
        store.download("tiny", progress=False)
    assert wrong in str(err.value) and sha(WEIGHTS) in str(err.value)
    assert hub.gets() == []  # refused on the HEAD answer, before any transfer
    assert not (tmp_path / "tiny_dir").exists()


def test_download_checks_bytes_when_the_hub_gives_no_sha256_etag(tmp_path, monkeypatch):
    files = {("org/one", "one.onnx"): WEIGHTS[:-1] + b"\x00"}  # same size, different bytes
    with FakeHub(files, lfs=False) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        store = store_from_env(tmp_path, {"one": single_spec()})
        with pytest.raises(DownloadError) as err:
            store.download("one", progress=False)
    assert "it was not installed" in str(err.value) and sha(WEIGHTS) in str(err.value)
    assert not (tmp_path / "one_onnx" / "one.onnx").exists()
    assert not (tmp_path / STAGING_DIRNAME).exists()
    assert not (tmp_path / LOCK_FILENAME).exists()


def test_download_fails_fast_and_clearly_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    store = store_from_env(tmp_path, {"one": single_spec()})
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        store.download("one")
    assert time.monotonic() - start < 3
    message = str(err.value)
    assert "could not reach the Hugging Face Hub" in message and endpoint in message
    assert "org/one/one.onnx" in message and "HF_ENDPOINT" in message
    assert str(tmp_path / "one_onnx" / "one.onnx") in message and sha(WEIGHTS) in message
    assert not (tmp_path / "one_onnx").exists()


def test_download_gives_up_quickly_on_a_hub_that_never_answers(tmp_path, monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        store = store_from_env(tmp_path, {"one": single_spec()}, hub_timeout=0.5)
        start = time.monotonic()
        with pytest.raises(DownloadError, match="could not reach"):
            store.download("one")
        assert time.monotonic() - start < 5


def test_download_reports_a_missing_remote_file(tmp_path, hub):
    gone = ModelFile("gone.onnx", "one_onnx/one.onnx", sha(WEIGHTS), len(WEIGHTS))
    spec = dataclasses.replace(single_spec(), files=(gone,))
    with pytest.raises(DownloadError, match="does not exist"):
        store_from_env(tmp_path, {"one": spec}).download("one")


def test_download_respects_hf_hub_offline(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        store_from_env(tmp_path, {"one": single_spec()}).download("one")
    assert hub.requests == []


def test_unpinned_revision_is_resolved_and_recorded(tmp_path, hub):
    store = store_from_env(tmp_path, {"tiny": tiny_spec(revision=None)})
    store.download("tiny", progress=False)
    assert read_lock(tmp_path / LOCK_FILENAME)["models"]["tiny"]["revision"] == COMMIT
    assert any("/resolve/main/" in p for m, p in hub.requests if m == "HEAD")
    assert all(f"/resolve/{COMMIT}/" in p for p in hub.gets())  # then the resolved commit


# --------------------------------------------------------------------------- PyPI wheel (NudeNet)


def pypi_spec(package: str, data: bytes) -> ModelSpec:
    return ModelSpec(
        name="nn",
        title="Detector from a wheel",
        source="pypi",
        repo=package,
        revision="3.4.2",
        files=(ModelFile(f"{package}/320n.onnx", "nudenet/320n.onnx", sha(data), len(data)),),
        licence="AGPL-3.0",
        licence_url="https://example.invalid",
        pipelines=("full",),
    )


def fake_package(root: Path, name: str, data: bytes, monkeypatch) -> None:
    write(root / name / "__init__.py", b"")
    write(root / name / "320n.onnx", data)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()


def test_pypi_model_is_copied_out_of_the_installed_package(tmp_path, monkeypatch):
    fake_package(tmp_path / "site", "fake_nudenet_pkg", WEIGHTS, monkeypatch)
    store = store_from_env(tmp_path / "models", {"nn": pypi_spec("fake_nudenet_pkg", WEIGHTS)})
    path = store.download("nn")
    assert path == tmp_path / "models" / "nudenet" / "320n.onnx"
    assert path.read_bytes() == WEIGHTS
    store.verify("nn")
    assert read_lock(tmp_path / "models" / LOCK_FILENAME)["models"]["nn"]["revision"] == "3.4.2"
    assert [p.name for p in path.parent.iterdir()] == ["320n.onnx"]  # no temp file left


def test_pypi_model_with_other_bytes_is_refused(tmp_path, monkeypatch):
    fake_package(tmp_path / "site", "fake_nudenet_other", b"other weights", monkeypatch)
    store = store_from_env(tmp_path / "models", {"nn": pypi_spec("fake_nudenet_other", WEIGHTS)})
    with pytest.raises(DownloadError, match="it was not installed"):
        store.download("nn")
    assert not (tmp_path / "models" / "nudenet" / "320n.onnx").exists()
    assert list((tmp_path / "models" / "nudenet").iterdir()) == []


def test_pypi_model_without_the_package_says_to_install_the_full_extra(tmp_path):
    store = store_from_env(tmp_path, {"nn": pypi_spec("no_such_package_ben2_test", WEIGHTS)})
    with pytest.raises(DownloadError) as err:
        store.download("nn")
    message = str(err.value)
    assert "ben2-worker[full]" in message and "not installed" in message
    assert str(tmp_path / "nudenet" / "320n.onnx") in message and sha(WEIGHTS) in message


# --------------------------------------------------------------------------- CLI


TINY_TOML = """
schema = 1
[models.tiny]
title = "Tiny stand-in"
source = "huggingface"
repo = "org/tiny"
revision = "{commit}"
revision_source = "test"
licence = "MIT"
licence_url = "https://example.invalid"
licence_source = "test"
pipelines = ["simple", "full"]

[[models.tiny.files]]
path_in_repo = "weights/model.onnx"
dest = "tiny_dir/model.onnx"
sha256 = "{weights_sha}"
sha256_source = "test"
size = {weights_size}

[[models.tiny.files]]
path_in_repo = "config.json"
dest = "tiny_dir/config.json"
sha256 = "{config_sha}"
sha256_source = "test"
size = {config_size}

[models.big]
title = "Only in the full pipeline"
source = "huggingface"
repo = "org/one"
revision = "{commit}"
revision_source = "test"
licence = "Llama 3.1 Community License"
licence_url = "https://example.invalid"
licence_source = "test"
pipelines = ["full"]

[[models.big.files]]
path_in_repo = "one.onnx"
dest = "llm/one.gguf"
sha256 = "{weights_sha}"
sha256_source = "test"
size = {weights_size}
"""


@pytest.fixture
def manifest_file(tmp_path) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(
        TINY_TOML.format(
            commit=COMMIT, weights_sha=sha(WEIGHTS), weights_size=len(WEIGHTS),
            config_sha=sha(CONFIG), config_size=len(CONFIG),
        )
    )
    return path


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(models_app, list(args), env=env, catch_exceptions=False)


def test_cli_list_shows_models_and_their_state(tmp_path, manifest_file):
    models = tmp_path / "models"
    write(models / "tiny_dir" / "model.onnx", WEIGHTS)
    result = run("list", "--models-dir", str(models), "--manifest", str(manifest_file), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and "big" in result.output
    assert "missing" in result.output and "MIT" in result.output
    assert COMMIT[:12] in result.output and "307.2 KB" in result.output


def test_cli_verify_reports_each_bad_file_and_exits_1(tmp_path, manifest_file):
    models = tmp_path / "models"
    write(models / "tiny_dir" / "model.onnx", b"\x00" * len(WEIGHTS))
    result = run("verify", "tiny", "--models-dir", str(models), "--manifest", str(manifest_file))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert "model.onnx" in errors[0] and sha(WEIGHTS) in errors[0]
    assert "config.json" in errors[1] and "ben2-worker models download tiny" in errors[1]
    assert "Traceback" not in result.output


def test_cli_verify_passes_on_good_files_using_the_env_models_dir(tmp_path, manifest_file):
    models = tmp_path / "models"
    write(models / "tiny_dir" / "model.onnx", WEIGHTS)
    write(models / "tiny_dir" / "config.json", CONFIG)
    result = run("verify", "--manifest", str(manifest_file), env={"BEN2_WORKER_MODELS": str(models)})
    assert result.exit_code == 0, result.output  # default --pipeline simple: only tiny
    assert "tiny: verified" in result.output and "big" not in result.output


def test_cli_download_offline_is_one_clear_line(tmp_path, manifest_file):
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    result = run("download", "--all", "--models-dir", str(tmp_path), "--manifest", str(manifest_file), env=env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: could not reach the Hugging Face Hub")
    assert "Traceback" not in result.output


def test_cli_download_fetches_the_pipeline_models(tmp_path, manifest_file, hub):
    models = tmp_path / "models"
    result = run("download", "--no-progress", "--models-dir", str(models), "--manifest", str(manifest_file),
                 env={"HF_ENDPOINT": hub.url})
    assert result.exit_code == 0, result.output
    assert (models / "tiny_dir" / "model.onnx").read_bytes() == WEIGHTS
    assert not (models / "llm").exists()  # `big` is only in the full pipeline
    result = run("download", "big", "--no-progress", "--models-dir", str(models), "--manifest", str(manifest_file),
                 env={"HF_ENDPOINT": hub.url})
    assert result.exit_code == 0, result.output
    assert (models / "llm" / "one.gguf").read_bytes() == WEIGHTS


def test_cli_rejects_unknown_names_with_usage_exit_code(tmp_path, manifest_file):
    result = run("verify", "nope", "--models-dir", str(tmp_path), "--manifest", str(manifest_file))
    assert result.exit_code == 2
    assert "unknown model(s) nope" in result.stderr and "tiny" in result.stderr


def test_cli_export_lock(tmp_path, manifest_file, hub):
    models = tmp_path / "models"
    assert run("download", "--no-progress", "--models-dir", str(models), "--manifest", str(manifest_file),
               env={"HF_ENDPOINT": hub.url}).exit_code == 0
    out = tmp_path / "exported.lock.json"
    result = run("export-lock", str(out), "--models-dir", str(models), "--manifest", str(manifest_file))
    assert result.exit_code == 0, result.output
    assert read_lock(out)["models"]["tiny"]["revision"] == COMMIT
