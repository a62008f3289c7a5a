"""The options are declared once (ben2_worker.options) and every door derives its schema from
that declaration: the task API's request model, the CLI's flags, the BEN2 node's INPUT_TYPES
ranges and the docs table. Compared here field by field, so a door that grows its own copy of
a range or default fails."""

from __future__ import annotations

import click
import pytest
import typer
from conftest import ROOT

from ben2_worker import options
from ben2_worker.api.schemas import OutputOptions, parse_simple_request
from ben2_worker.cli import app
from ben2_worker.errors import InputError
from ben2_worker.workflow.nodes import NODE_TYPES


def _range(param) -> tuple:
    """A CLI option's (min, max), across typer versions (a click range type, or typer's own)."""
    kind = getattr(param, "type", None)
    if kind is not None and hasattr(kind, "min"):
        return kind.min, kind.max
    return param.min, param.max


def _cli_params() -> dict[str, click.Parameter]:
    command = typer.main.get_command(app).commands["remove"]
    return {p.name: p for p in command.params}


def test_the_request_schema_is_the_declaration():
    props = OutputOptions.model_json_schema()["properties"]
    assert list(props) == [o.name for o in options.at("api")]
    for opt in options.at("api"):
        field = OutputOptions.model_fields[opt.name]
        assert field.default == opt.default, opt.name
        assert field.description == opt.description, opt.name
        schema = props[opt.name]
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") in ("integer", "number"):
                assert branch.get("minimum") == opt.min and branch.get("maximum") == opt.max, opt.name
        if opt.choices:
            assert schema["enum"] == list(opt.choices), opt.name


def test_the_cli_options_are_the_declaration():
    params = _cli_params()
    for opt in options.at("cli"):
        param = params[opt.name]
        assert opt.flag in param.opts, opt.name
        assert set(opt.aliases.get("cli", ())) <= set(param.opts), opt.name
        assert param.default == opt.default, opt.name
        assert opt.description[1:] in param.help, opt.name
        if opt.min is not None or opt.max is not None:
            assert _range(param) == (opt.min, opt.max), opt.name
    assert "put_url" not in params  # API-only options stay off the CLI


def test_the_ben2_node_ranges_are_the_declaration():
    spec = NODE_TYPES["BEN2_ONNX_RemoveBg"]
    types = spec.input_types()["optional"]
    for name in ("sensitivity", "mask_blur", "mask_offset"):
        opt = options.OPTIONS[name]
        config = types[name][1]
        assert (config["default"], config["min"], config["max"]) == (opt.default, opt.min, opt.max), name
    assert types["background_color"][0] == ["none", *options.BACKGROUND_PRESETS, "custom"]


def test_the_docs_table_is_generated_from_the_declaration():
    doc = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert options.with_table(doc) == doc, "docs/options.md is out of date: python -m ben2_worker.options docs/options.md"


def test_one_vocabulary_with_the_old_names_as_aliases():
    old = parse_simple_request({"image": "x", "output": {"mask": True}}).output
    new = parse_simple_request({"image": "x", "output": {"return_mask": True}}).output
    assert old.return_mask is new.return_mask is True and old.mask_only is False
    assert "--mask" in _cli_params()["mask_only"].opts  # the CLI's old --mask: only the matte
    with pytest.raises(InputError, match=r"input.output.sensitivity"):
        parse_simple_request({"image": "x", "output": {"sensitivity": 1.5}})


def test_an_option_declared_is_offered_at_every_door(monkeypatch):
    """Data-driven: one more entry appears in the request schema and on the CLI."""
    extra = options.Option("zoom", float, 1.0, "zoom the output", min=0.1, max=4.0)
    monkeypatch.setattr(options, "OUTPUT_OPTIONS", options.OUTPUT_OPTIONS + (extra,))
    from pydantic import create_model

    model = create_model("Probe", **options.pydantic_fields("api"))
    assert model.model_json_schema()["properties"]["zoom"]["maximum"] == 4.0

    @options.typer_options("cli")
    def probe(**opts) -> None:
        pass

    probe_app = typer.Typer()
    probe_app.command()(probe)
    probe_app.command("other")(lambda: None)
    params = {p.name: p for p in typer.main.get_command(probe_app).commands["probe"].params}
    assert _range(params["zoom"]) == (0.1, 4.0) and "--zoom" in params["zoom"].opts
