"""remove.bg's request parameters, mapped onto the task API's options — the one place that
knows both vocabularies.

Every remove.bg parameter is in :data:`PARAMS` with what happens to it (the table in
docs/service.md is this list):

* ``mapped``: translated onto our option(s);
* ``ignored``: accepted and has no effect, because it means nothing here (e.g. ``type``: BEN2
  finds the foreground without a hint) — documented, never silently reinterpreted;
* ``pending``: its default (which changes nothing) is accepted; any other value maps onto the
  option of the same meaning once the task API declares it, and until then is answered with
  400 "not supported yet" rather than ignored;
* ``unsupported``: no equivalent; a non-default value is a 400 naming the parameter.

Values come as strings (form fields) or JSON scalars; both are normalised to strings first."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..api import schemas


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # mapped | ignored | pending | unsupported
    ours: str
    note: str


PARAMS: tuple[Param, ...] = (
    Param("image_file", "mapped", "image", "multipart file upload"),
    Param("image_file_b64", "mapped", "image", "base64 (a `data:` URI prefix is accepted)"),
    Param("image_url", "mapped", "image", "fetched through the SSRF guard (public https only)"),
    Param("size", "pending", "size", "`auto`, `full`, `4k`, `50MP`: full resolution (the default); `preview`, `small`, "
          "`regular`, `medium`, `hd`: the same value once declared"),
    Param("type", "ignored", "—", "BEN2 needs no foreground hint; `X-Type` answers `other`"),
    Param("type_level", "ignored", "—", "as `type`"),
    Param("format", "mapped", "format", "`png`, `jpg`, `webp`; `auto`: PNG when the result has transparency or is the "
          "matte, JPG when composited over `bg_color`; `zip`: unsupported"),
    Param("roi", "unsupported", "—", "only the whole image (`0% 0% 100% 100%`)"),
    Param("crop", "mapped", "crop", "crop to the subject"),
    Param("crop_margin", "mapped", "crop_margin", "`30px`, `30` or `10%`; several values only if all equal"),
    Param("scale", "pending", "scale", "`original` accepted; `10%`–`100%`, the same value once declared"),
    Param("position", "pending", "position", "`original` accepted; `center`, `x%` or `x% y%`, the same value once declared"),
    Param("channels", "mapped", "channels", "`rgba`: the cut-out; `alpha`: the matte only (our `mask_only` until "
          "`channels` is declared)"),
    Param("add_shadow", "pending", "add_shadow", "`false` accepted; `true` once declared"),
    Param("shadow_type", "pending", "shadow_type", "the same value once declared (ours: `both`, `drop`, `contact`; "
          "remove.bg's `3D` and `car` are refused naming it)"),
    Param("shadow_opacity", "pending", "shadow_opacity", "0–100, the same value once declared"),
    Param("semitransparency", "pending", "semitransparency", "`true` (soft edges kept: what we do) accepted; "
          "`false` once declared"),
    Param("bg_color", "mapped", "background", "hex without `#` (`81d4fa`, `fff`), 8-digit hex only when opaque (`ff`), "
          "or a CSS colour name (`green` is CSS green, #008000)"),
    Param("bg_image_url", "unsupported", "—", "no background images"),
    Param("bg_image_file", "unsupported", "—", "no background images"),
    Param("pipeline", "mapped", "pipeline", "ours, not remove.bg's: `simple` (default) or `full` (safety checks first)"),
)
BY_NAME = {p.name: p for p in PARAMS}
SOURCES = ("image_file", "image_file_b64", "image_url")
_TYPES = ("auto", "person", "product", "animal", "car", "car_interior", "car_part", "transportation", "graphics", "other")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
#: remove.bg sizes that keep the photo's full resolution (ours by default) / that shrink it.
_FULL_SIZES = ("auto", "full", "4k", "50mp")
_SMALLER = ("preview", "small", "regular", "medium", "hd")


class ParamError(ValueError):
    """A remove.bg request we refuse; ``code`` is the error code, ``status`` the HTTP status."""

    def __init__(self, title: str, code: str = "invalid_parameters", status: int = 400):
        super().__init__(title)
        self.title, self.code, self.status = title, code, status


def declared_options() -> frozenset[str]:
    """Output options the task API declares now (issue 10's arrive here by themselves)."""
    return frozenset(schemas.OutputOptions.model_fields)


def _choices(option: str) -> tuple[str, ...]:
    """The literal choices of a declared option (e.g. ``format``'s), empty if free-form."""
    schema = schemas.OutputOptions.model_json_schema()["properties"].get(option, {})
    return tuple(schema.get("enum", ()))


@dataclass
class RemoveBgRequest:
    """The translated request: where the image comes from and the task API input."""

    source: str  # which of SOURCES was given
    url: str | None = None
    b64: str | None = None
    pipeline: str = "simple"
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def alpha_only(self) -> bool:
        return bool(self.output.get("mask_only")) or self.output.get("channels") == "alpha"

    def task_input(self, image: str) -> dict:
        # The matte comes back too: the X-Foreground-* box is read from it.
        return {"image": image, "pipeline": self.pipeline, "output": {**self.output, "mask": not self.alpha_only}}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _bool(name: str, value: str) -> bool:
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ParamError(f"{name} must be true or false, got {value!r}")


def _pending(name: str, value: str, out: dict, ours: str | None = None, converted: Any = None) -> None:
    ours = ours or name
    if ours not in declared_options():
        raise ParamError(f"{name}={value} is not supported yet by this server", code="unsupported_parameter")
    out[ours] = value if converted is None else converted


def parse_color(name: str, value: str) -> str:
    """remove.bg's colour → our ``#rrggbb``."""
    text = value.strip().lstrip("#")
    if re.fullmatch(r"[0-9a-fA-F]{8}", text):
        if text[6:].lower() != "ff":
            raise ParamError(f"{name}={value}: semi-transparent background colours are not supported", code="unsupported_parameter")
        text = text[:6]
    if re.fullmatch(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}", text):
        return "#" + text.lower()
    from PIL import ImageColor

    try:
        r, g, b = ImageColor.getrgb(value.strip())[:3]
    except ValueError:
        raise ParamError(f"{name}={value!r} is neither a hex colour (81d4fa) nor a CSS colour name") from None
    return f"#{r:02x}{g:02x}{b:02x}"


def _margin(value: str) -> str | int:
    parts = value.replace(",", " ").split()
    if not parts:
        return 0
    if len(set(parts)) > 1:
        raise ParamError(f"crop_margin={value!r}: different margins per side are not supported; give one value",
                         code="unsupported_parameter")
    one = parts[0].lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(px|%)?", one)
    if not m:
        raise ParamError(f"crop_margin must be pixels (30px) or a percentage (10%), got {value!r}")
    return f"{m.group(1)}%" if m.group(2) == "%" else int(float(m.group(1)))


def translate(fields: dict[str, Any], *, has_file: bool) -> RemoveBgRequest:
    """remove.bg fields (without the file's bytes) → :class:`RemoveBgRequest`, or ParamError."""
    values = {k: _text(v) for k, v in fields.items() if v is not None}
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise ParamError(f"unknown parameter(s): {', '.join(unknown)}", code="unknown_parameter")
    given = [s for s in SOURCES if (s == "image_file" and has_file) or (s != "image_file" and values.get(s))]
    if not given:
        raise ParamError("no image given: send image_file, image_file_b64 or image_url", code="missing_source")
    if len(given) > 1:
        raise ParamError(f"give exactly one image source, got {', '.join(given)}", code="multiple_sources")
    req = RemoveBgRequest(source=given[0], url=values.get("image_url") or None, b64=values.get("image_file_b64") or None)
    out = req.output
    v = {k: x for k, x in values.items() if x != "" and k not in SOURCES}

    if "pipeline" in v:
        if v["pipeline"] not in ("simple", "full"):
            raise ParamError(f"pipeline must be simple or full, got {v['pipeline']!r}")
        req.pipeline = v["pipeline"]
    if "type" in v and v["type"].lower() not in _TYPES:
        raise ParamError(f"type must be one of {', '.join(_TYPES)}, got {v['type']!r}")
    size = v.get("size", "auto").lower()
    if size in _SMALLER:
        _pending("size", size, out)
    elif size not in _FULL_SIZES:
        raise ParamError(f"size must be auto, preview, full (or small, regular, medium, hd, 4k, 50MP), got {size!r}")
    channels = v.get("channels", "rgba").lower()
    if channels not in ("rgba", "alpha"):
        raise ParamError(f"channels must be rgba or alpha, got {channels!r}")
    if channels == "alpha":
        out.update({"channels": "alpha"} if "channels" in declared_options() else {"mask_only": True})
    if "bg_color" in v:
        out["background"] = parse_color("bg_color", v["bg_color"])
    for name in ("bg_image_url", "bg_image_file"):
        if name in v:
            raise ParamError(f"{name} is not supported: only plain background colours (bg_color)", code="unsupported_parameter")
    fmt = v.get("format", "auto").lower()
    if fmt == "zip":
        raise ParamError("format=zip is not supported; ask for channels=alpha separately", code="unsupported_parameter")
    if fmt == "auto" and "auto" not in _choices("format"):
        fmt = "jpg" if "background" in out and not req.alpha_only else "png"
    if fmt not in ("auto", "png", "jpg", "jpeg", "webp"):
        raise ParamError(f"format must be auto, png, jpg, webp or zip, got {fmt!r}")
    out["format"] = fmt
    if "crop" in v and _bool("crop", v["crop"]):
        out["crop"] = True
    if "crop_margin" in v:
        out["crop_margin"] = _margin(v["crop_margin"])
    if v.get("roi", "0% 0% 100% 100%").split() != ["0%", "0%", "100%", "100%"]:
        raise ParamError(f"roi={v['roi']!r}: only the whole image is supported", code="unsupported_parameter")
    if v.get("scale", "original").lower() != "original":
        _pending("scale", v["scale"], out)
    if v.get("position", "original").lower() != "original":
        _pending("position", v["position"], out)
    if "add_shadow" in v and _bool("add_shadow", v["add_shadow"]):
        _pending("add_shadow", v["add_shadow"], out, converted=True)
    for name in ("shadow_type", "shadow_opacity"):
        if name in v:
            _pending(name, v[name], out)
    if "semitransparency" in v and not _bool("semitransparency", v["semitransparency"]):
        _pending("semitransparency", v["semitransparency"], out, converted=False)
    return req


_REVERSE = {p.ours: p.name for p in PARAMS if p.kind in ("mapped", "pending") and p.ours not in ("image", "—")}


def explain(message: str, source: str) -> str:
    """A task-API error message in remove.bg's vocabulary (``input.output.background`` → ``bg_color``)."""
    message = re.sub(r"input\.output\.(\w+)", lambda m: _REVERSE.get(m.group(1), m.group(1)), message)
    return re.sub(r"input\.image\b", source, message)
