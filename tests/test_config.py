"""The settings tree: read once, by config.py only, one parser per type, one yes/no dialect, a
ConfigError naming the variable, the value and what is allowed, at start; and one table in
docs/configuration.md listing exactly what config.py reads."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from ben2_worker import config
from ben2_worker.config import Settings
from ben2_worker.errors import Ben2WorkerError, ConfigError

SRC = ROOT / "src" / "ben2_worker"
ENV_NAME = re.compile(r"^(BEN2_[A-Z0-9_]+|BUCKET_[A-Z_]+|HF_[A-Z_]+|RUNPOD_[A-Z_]+|COLUMNS)$")


def _environment_reads(tree: ast.AST) -> list[str]:
    """Every use of os.environ / os.getenv / os.putenv / os.unsetenv (or those names imported
    from os) in a module, as ``line: code``."""
    found = []
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in ("environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"):
                    imported.add(alias.asname or alias.name)
                    found.append(f"{node.lineno}: from os import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"):
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in imported:
            found.append(f"{node.lineno}: {node.id}")
    return found


def test_no_module_outside_config_reads_the_environment():
    modules = sorted(SRC.rglob("*.py")) + [ROOT / "__init__.py"]  # the package and the ComfyUI pack's entry
    offenders = {}
    for path in modules:
        if path == SRC / "config.py":
            continue
        reads = _environment_reads(ast.parse(path.read_text("utf-8"), str(path)))
        if reads:
            offenders[str(path.relative_to(ROOT))] = reads
    assert offenders == {}, "read the environment in config.py only; these modules do it themselves"
    assert _environment_reads(ast.parse((SRC / "config.py").read_text("utf-8")))  # the check does see reads


def _doc_table(text: str, heading: str) -> dict[str, list[str]]:
    """variable -> the other cells of each row of the table under ``heading``."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_docs_table_lists_exactly_the_variables_config_reads():
    source = (SRC / "config.py").read_text("utf-8")
    literals = {node.value for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value)}
    assert literals == set(config.VARIABLES), "config.VARIABLES must list every variable config.py names"
    assert len(config.VARIABLES) == len(set(config.VARIABLES))
    table = _doc_table((ROOT / "docs" / "configuration.md").read_text("utf-8"), "## Variables the worker reads")
    assert list(table) == list(config.VARIABLES)


def test_readme_links_the_table_and_its_short_table_matches():
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "docs/configuration.md" in readme
    full = _doc_table((ROOT / "docs" / "configuration.md").read_text("utf-8"), "## Variables the worker reads")
    short = _doc_table(readme, "## Configuration")
    assert short and set(short) <= set(full)
    for name, (default, _meaning) in short.items():
        assert default == full[name][1], f"README and docs/configuration.md disagree on {name}'s default"


def test_defaults_when_nothing_is_set():
    s = Settings.from_env({})
    assert s == Settings()
    assert s.models_dir == Path("models") and s.pipelines is None and s.log_level == "INFO"
    assert s.job_timeout_s == 300 and s.safety_timeout_s == 120 and s.urls.max_bytes == 50 * 2**20
    assert s.s3.endpoint_url == "" and s.hub.endpoint == "https://huggingface.co" and not s.runpod.on_platform


def test_every_variable_is_parsed_into_its_branch(tmp_path):
    s = Settings.from_env({
        "BEN2_WORKER_MODELS": str(tmp_path), "BEN2_WORKER_PIPELINES": "Full, simple,full",
        "BEN2_WORKER_THREADS": "3", "BEN2_WORKER_MAX_PIXELS": "1_000_000", "BEN2_WORKER_INPUT_SCALING": "ImageNet",
        "BEN2_WORKER_JOB_TIMEOUT": "2.5", "BEN2_WORKER_SAFETY_TIMEOUT": "7", "BEN2_WORKER_PUT_TIMEOUT": "9",
        "BEN2_WORKER_LOG_LEVEL": "debug", "BEN2_WORKER_WORKFLOWS": os.pathsep.join(["a", "b/c.json"]),
        "BEN2_WORKER_URL_ALLOW_HTTP": "on", "BEN2_WORKER_URL_ALLOW_PRIVATE": "YES",
        "BEN2_COMFY_COMPAT_NODES": "never", "HF_ENDPOINT": "http://mirror.example/", "HF_HUB_OFFLINE": "true",
        "HF_HUB_ETAG_TIMEOUT": "0.5", "RUNPOD_POD_ID": "abc", "COLUMNS": "200",
        "BUCKET_ENDPOINT_URL": " https://s3.example/b ", "BUCKET_SECRET_ACCESS_KEY": "s",
    })
    assert s.models_dir == tmp_path and s.pipelines == ("full", "simple") and s.threads == 3
    assert s.max_pixels == 1_000_000 and s.input_scaling == "imagenet" and s.log_level == "DEBUG"
    assert (s.job_timeout_s, s.safety_timeout_s, s.put_timeout_s) == (2.5, 7.0, 9.0)
    assert s.workflows == (Path("a"), Path("b/c.json")) and s.comfy_compat_nodes == "never" and s.columns == 200
    assert s.urls.allow_http and s.urls.allow_private
    assert s.hub == config.HubSettings("http://mirror.example", True, 0.5) and s.runpod.on_platform
    assert s.s3.endpoint_url == "https://s3.example/b" and s.s3.secret_access_key == "s"
    assert "secret_access_key" not in repr(s)  # never logged


def test_ben2_session_settings_are_parsed_into_their_branch(tmp_path):
    assert Settings.from_env({}).session == config.SessionSettings(ben2_variant="fp32", cache=True,
                                                                   graph_level="all", cpu_arena=True)
    s = Settings.from_env({"BEN2_WORKER_BEN2_VARIANT": "INT8", "BEN2_WORKER_ORT_CACHE": str(tmp_path),
                           "BEN2_WORKER_GRAPH_LEVEL": "Basic", "BEN2_WORKER_CPU_ARENA": "off"})
    assert s.session == config.SessionSettings("int8", tmp_path, "basic", False)
    assert Settings.from_env({"BEN2_WORKER_ORT_CACHE": "OFF"}).session.cache is False
    assert Settings.from_env({"BEN2_WORKER_ORT_CACHE": "auto"}).session.cache is True
    for name, value, allowed in (("BEN2_WORKER_BEN2_VARIANT", "int4", "one of fp32, int8"),
                                 ("BEN2_WORKER_GRAPH_LEVEL", "max", "one of disable, basic, extended, all"),
                                 ("BEN2_WORKER_CPU_ARENA", "sometimes", "one of 1/true/yes/on")):
        with pytest.raises(ConfigError, match=allowed) as caught:
            Settings.from_env({name: value})
        assert caught.value.variable == name


@pytest.mark.parametrize("value", ["1", "true", "YES", "On", " on "])
def test_one_yes_dialect(value):
    assert Settings.from_env({"BEN2_WORKER_ALLOW_CUSTOM_MODELS": value}).allow_custom_models is True


@pytest.mark.parametrize("value", ["0", "false", "No", "OFF", ""])
def test_one_no_dialect(value):
    assert Settings.from_env({"BEN2_WORKER_ALLOW_CUSTOM_MODELS": value}).allow_custom_models is False


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("BEN2_WORKER_ALLOW_CUSTOM_MODELS", "maybe", "one of 1/true/yes/on or 0/false/no/off"),
        ("BEN2_WORKER_URL_ALLOW_HTTP", "2", "one of 1/true/yes/on or 0/false/no/off"),
        ("HF_HUB_OFFLINE", "sure", "one of 1/true/yes/on"),
        ("BEN2_WORKER_MAX_PIXELS", "lots", "a whole number of at least 1"),
        ("BEN2_WORKER_THREADS", "1.5", "a whole number of at least 1"),
        ("BEN2_WORKER_URL_MAX_BYTES", "0", "a whole number of at least 1"),
        ("COLUMNS", "wide", "a whole number"),
        ("BEN2_WORKER_JOB_TIMEOUT", "soon", "a positive number of seconds"),  # the raw float() of before
        ("BEN2_WORKER_SAFETY_TIMEOUT", "-1", "a positive number of seconds"),
        ("BEN2_WORKER_PUT_TIMEOUT", "inf", "a positive number of seconds"),
        ("BEN2_WORKER_URL_TIMEOUT", "nan", "a positive number of seconds"),
        ("HF_HUB_ETAG_TIMEOUT", "0", "a positive number of seconds"),
        ("BEN2_WORKER_INPUT_SCALING", "zscore", "one of unit, imagenet"),
        ("BEN2_WORKER_LOG_LEVEL", "loud", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("BEN2_COMFY_COMPAT_NODES", "sometimes", "one of auto, always, never"),
        ("BEN2_WORKER_PIPELINES", "simple,fancy", "a comma-separated list out of simple, full"),
        ("BEN2_WORKER_PIPELINES", ",", "a comma-separated list out of simple, full"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_variable_value_and_what_is_allowed(name, value, allowed):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value.strip()!r} is not allowed: ") and allowed in message
    assert caught.value.variable == name
    assert isinstance(caught.value, Ben2WorkerError) and isinstance(caught.value, ValueError)


def test_settings_are_immutable():
    s = Settings()
    with pytest.raises(AttributeError):
        s.max_pixels = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.urls.allow_private = True  # type: ignore[misc]


def test_environment_writes_go_through_config(monkeypatch):
    monkeypatch.delenv("RUNPOD_LOG_LEVEL", raising=False)
    config.quiet_runpod_sdk()
    assert os.environ["RUNPOD_LOG_LEVEL"] == "INFO"
    monkeypatch.setenv("RUNPOD_LOG_LEVEL", "WARNING")
    config.quiet_runpod_sdk()  # an operator's own value is kept
    assert os.environ["RUNPOD_LOG_LEVEL"] == "WARNING"
    env = config.child_environment(DO_NOT_TRACK="1", RUNPOD_LOG_LEVEL="DEBUG")
    assert env["DO_NOT_TRACK"] == "1" and env["RUNPOD_LOG_LEVEL"] == "WARNING"
    monkeypatch.setenv("MY_KEY", " k ")
    assert config.secret_from_env("MY_KEY") == "k" and config.secret_from_env("NO_SUCH_VARIABLE_X") is None


def test_the_worker_refuses_to_start_on_a_bad_setting_naming_it():
    """The real entry point, as RunPod starts it: the error comes before any model or SDK loads."""
    env = {**os.environ, "BEN2_WORKER_JOB_TIMEOUT": "soon", "PYTHONPATH": str(SRC.parent)}
    proc = subprocess.run([sys.executable, "-m", "ben2_worker.handler"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "ben2-worker cannot start: BEN2_WORKER_JOB_TIMEOUT='soon' is not allowed: a positive number of seconds" \
        in proc.stderr


@pytest.mark.parametrize("args", [["remove", "x.jpg"], ["models", "list"], ["selfcheck"]])
def test_the_cli_reports_a_bad_setting_naming_it(args, tmp_path):
    from ben2_worker.cli import app

    result = CliRunner().invoke(app, args, env={"BEN2_WORKER_URL_ALLOW_PRIVATE": "perhaps"})
    assert result.exit_code == 2, result.output
    assert "BEN2_WORKER_URL_ALLOW_PRIVATE='perhaps' is not allowed" in result.output


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_facts_are_cited_from_docs_contracts_and_every_cited_section_exists():
    anchors = {_anchor(line.lstrip("#")) for line in (ROOT / "docs" / "contracts.md").read_text("utf-8").splitlines()
               if line.startswith("#")}
    cited, stale = set(), []
    for path in [*ROOT.glob("src/**/*.*"), *ROOT.glob("tests/*.py"), *ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.py"),
                 ROOT / "README.md"]:
        if path.suffix not in (".py", ".md", ".toml") or path == Path(__file__):
            continue
        text = path.read_text("utf-8")
        if re.search(r"contracts §|contracts\.md section|notes/contracts", text):
            stale.append(str(path.relative_to(ROOT)))
        cited |= set(re.findall(r"contracts\.md#([\w-]+)", text))
    assert stale == [], "cite docs/contracts.md#<section>, a document inside the repository"
    assert cited and cited <= anchors, f"cited sections missing from docs/contracts.md: {cited - anchors}"


def test_every_worker_variable_the_docs_name_exists():
    """A variable renamed or dropped in config.py may not live on in a doc."""
    text = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    known = set(config.VARIABLES) | set(_doc_table(text, "## Read by others"))
    for name in list(known):  # "`SERVE_API_LOCALLY`, `RP_API_HOST`, ..." rows
        known |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", name))
    pattern = re.compile(r"\b(BEN2_WORKER_[A-Z0-9_]*[A-Z0-9]|BEN2_COMFY_[A-Z_]*[A-Z]|BUCKET_[A-Z_]*[A-Z])\b")
    unknown = {}
    for path in [*ROOT.glob("docs/*.md"), ROOT / "README.md"]:
        names = set(pattern.findall(path.read_text("utf-8"))) - known
        if names:
            unknown[path.name] = sorted(names)
    assert unknown == {}
