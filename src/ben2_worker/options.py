"""Every user-facing option, declared once.

Each :class:`Option` holds a name, type, range or choices, default, description and the old
names it is still accepted under. The doors derive their schemas from :data:`OUTPUT_OPTIONS`:

* the task API's ``output`` object (``api.schemas.OutputOptions``, a pydantic model);
* the ``ben2-worker remove`` options (:func:`typer_options`);
* the ranges of the BEN2 node's ``INPUT_TYPES`` (``workflow.nodes`` via :func:`node_range`);
* the table in docs/options.md (:func:`markdown_table`; ``python -m ben2_worker.options
  docs/options.md`` rewrites it, and a test fails when it is out of date).

A new output option is one more entry here (plus its use in the engine). The vocabularies the
package shares — background presets, the pipelines — live here too. Pure data: no imports from
the rest of the package, so every module may import it."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The pipelines a worker can serve (which models each needs: the model manifest's ``pipelines``).
PIPELINES = ("simple", "full")

#: Background presets of the user's BEN2 node, as RGB.
BACKGROUND_PRESETS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
}
#: Names of "no background" (a transparent RGBA cut-out).
TRANSPARENT_NAMES = ("none", "transparent", "")

#: ``size`` presets -> the most pixels the photo keeps (None: its full size): remove.bg's names
#: (preview ~ 0.25 MP, full, auto) and the legacy ones older clients still send.
SIZE_PRESETS: dict[str, int | None] = {
    "full": None,
    "auto": None,  # remove.bg: the best its plan allows; here always the full size
    "preview": 250_000,
    "small": 250_000,
    "regular": 250_000,
    "medium": 1_500_000,
    "hd": 4_000_000,
    "4k": None,
}
#: How the model's matte is brought up to the photo's size (docs/edges.md).
UPSAMPLING = ("guided", "bilinear")
#: What the output holds: the cut-out (``rgba``) or only its matte (``alpha``), remove.bg's names.
CHANNELS = ("rgba", "alpha")
#: Shadows built from the matte (cutout/shadow.py).
SHADOW_TYPES = ("both", "drop", "contact")

#: The doors an option can be offered at.
DOORS = ("api", "cli")


@dataclass(frozen=True)
class Option:
    """One option. ``type`` is bool, int, float or str; ``api_type`` overrides the request
    schema's annotation where JSON may carry more than one type (``crop_margin``: 20 or "5%")."""

    name: str
    type: type
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    #: Old names still accepted, per door: {"api": ("mask",)} / {"cli": ("--mask",)}.
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    doors: tuple[str, ...] = DOORS
    nullable: bool = False  # None allowed (and the default means "let the encoder choose")
    api_type: Any = None
    #: Short CLI flag (``-f``).
    short: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"{_num(self.min)} to {_num(self.max)}"
        if self.min is not None:
            return f"at least {_num(self.min)}"
        return ""


def _num(value: float) -> str:
    return f"{value:g}"


OUTPUT_OPTIONS: tuple[Option, ...] = (
    Option("format", str, "png", "png, webp, jpg, or auto: png when the result has transparency, jpg otherwise "
           "(jpg has no alpha: composited over `background`, white by default)",
           choices=("png", "webp", "jpg", "jpeg", "auto"), short="-f"),
    Option("background", str, "none",
           "none (transparent), white, black, red, green, blue or a hex colour like #F3FFFF (or F3FFFF)",
           aliases={"api": ("bg_color",), "cli": ("--bg-color",)}, short="-b"),
    Option("channels", str, "rgba", "rgba: the cut-out; alpha: only its matte, greyscale (as mask_only)",
           choices=CHANNELS),
    Option("mask_only", bool, False, "return only the matte (greyscale) instead of the cut-out",
           aliases={"cli": ("--mask",)}),
    Option("return_mask", bool, False, "also return the matte as a greyscale PNG, beside the cut-out",
           aliases={"api": ("mask",)}),
    Option("size", str, "full", "the most pixels the photo is cut out at: full/auto/4k (its own size), "
           "preview/small/regular (0.25 MP), medium (1.5 MP), hd (4 MP); aspect kept, never enlarged",
           choices=tuple(SIZE_PRESETS)),
    Option("crop", bool, False, "crop to the subject"),
    Option("crop_margin", str, "0", "margin when cropping: pixels (20 or '20px') or percent of the subject's "
           "larger side ('5%')", api_type=str | int | float),
    Option("scale", str, "original", "the subject's size on the canvas: 'original' or 10% to 100% "
           "(its box fitted into that share of the canvas; implies position center)", api_type=str | int | float),
    Option("position", str, "original", "where the subject sits: 'original', 'center', 'X%' or 'X% Y%' "
           "(0% = left/top edge, 100% = right/bottom)"),
    Option("output_size", str, None, "a fixed output canvas WIDTHxHEIGHT (e.g. 2000x2000); the subject (or the "
           "cropped region) is fitted into it", nullable=True),
    Option("semitransparency", bool, True, "keep semi-transparent regions (glass, veils, hair); false: every "
           "pixel fully opaque or fully clear"),
    Option("add_shadow", bool, False, "add a shadow built from the matte under the subject"),
    Option("shadow_type", str, "both", "both, drop (offset and blurred) or contact (a thin band at the base)",
           choices=SHADOW_TYPES),
    Option("shadow_opacity", int, 50, "the shadow's opacity in percent", min=0, max=100),
    Option("shadow_blur", float, 2.5, "the drop shadow's softness (Gaussian sigma), in % of the subject's height",
           min=0.0, max=50.0),
    Option("shadow_offset_x", float, 1.0, "the drop shadow's shift to the right, in % of the subject's height",
           min=-50.0, max=50.0),
    Option("shadow_offset_y", float, 2.0, "the drop shadow's shift down, in % of the subject's height",
           min=-50.0, max=50.0),
    Option("refine", bool, False, "estimate foreground colours at the edges (no background halo)"),
    Option("upsampling", str, "guided", "how the matte reaches full resolution: guided (the full-resolution photo "
           "shapes its edges, docs/edges.md) or bilinear (a plain enlargement)", choices=UPSAMPLING),
    Option("quality", int, None, "JPEG/WebP quality (default 92 JPEG, 90 WebP; WebP with transparency is lossless "
           "when not given)", min=1, max=100, nullable=True),
    Option("sensitivity", float, 1.0, "as the ComfyUI node: alpha x (2 - sensitivity); lower keeps more",
           min=0.0, max=1.0),
    Option("mask_blur", int, 0, "Gaussian blur of the matte, in pixels at the ~1 MP working size", min=0, max=64),
    Option("mask_offset", int, 0, "grow (+) or shrink (-) the matte by this many pixels at the ~1 MP working size",
           min=-64, max=64),
    Option("put_url", str, None, "presigned PUT URL for the cut-out (single-image requests)", doors=("api",),
           nullable=True),
    Option("mask_put_url", str, None, "presigned PUT URL for the matte", doors=("api",), nullable=True),
)

OPTIONS: dict[str, Option] = {o.name: o for o in OUTPUT_OPTIONS}


def at(door: str) -> tuple[Option, ...]:
    """The options offered at ``door`` ("api" or "cli"), in declaration order."""
    return tuple(o for o in OUTPUT_OPTIONS if door in o.doors)


def check_range(name: str, value: Any) -> None:
    """Raise :class:`~ben2_worker.errors.InputError` naming the option and its range when
    ``value`` is outside it (for callers that bypass a door's schema, e.g. the engine API)."""
    opt = OPTIONS[name]
    low = opt.min if opt.min is not None else float("-inf")
    high = opt.max if opt.max is not None else float("inf")
    if not low <= value <= high:
        from .errors import InputError

        raise InputError(f"{name} must be between {_num(opt.min)} and {_num(opt.max)}, got {value}", field=name)


def check_choice(name: str, value: Any) -> str:
    """``value`` (case and surrounding blanks ignored) when it is one of the option's choices,
    else :class:`~ben2_worker.errors.InputError` naming the option and its choices (the CLI's
    flags take any text; the request schema checks the same list)."""
    opt = OPTIONS[name]
    key = str(value).strip().lower()
    if key not in (opt.choices or ()):
        from .errors import InputError

        raise InputError(f"{name} must be one of {', '.join(opt.choices or ())}, got {value!r}", field=name)
    return key


def node_range(name: str) -> dict[str, Any]:
    """``default``/``min``/``max`` of an option, for a node input of the same meaning."""
    opt = OPTIONS[name]
    return {"default": opt.default, "min": opt.min, "max": opt.max}


# ----------------------------------------------------------------------------- doors


def pydantic_fields(door: str = "api") -> dict[str, tuple[Any, Any]]:
    """``create_model`` field definitions for the request schema: type, range, default,
    description and the accepted aliases."""
    from typing import Literal

    from pydantic import AliasChoices, Field

    fields: dict[str, tuple[Any, Any]] = {}
    for opt in at(door):
        annotation: Any = opt.api_type or (Literal[opt.choices] if opt.choices else opt.type)  # type: ignore[valid-type]
        if opt.nullable:
            annotation = annotation | None
        extra: dict[str, Any] = {}
        if opt.min is not None:
            extra["ge"] = opt.min
        if opt.max is not None:
            extra["le"] = opt.max
        aliases = opt.aliases.get(door, ())
        if aliases:
            extra["validation_alias"] = AliasChoices(opt.name, *aliases)
        fields[opt.name] = (annotation, Field(opt.default, description=opt.description, **extra))
    return fields


def typer_options(door: str = "cli") -> Callable[[Callable], Callable]:
    """Decorator: a typer command gets one ``--option`` per declared option, replacing its
    ``**options`` parameter; the command receives them as keyword arguments."""
    from typing import Annotated, Optional

    import typer

    def decorate(fn: Callable) -> Callable:
        import typing

        hints = typing.get_type_hints(fn, include_extras=True)
        sig = inspect.signature(fn)
        params = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        added = []
        for opt in at(door):
            names = [opt.flag, *opt.aliases.get(door, ())] + ([opt.short] if opt.short else [])
            kw: dict[str, Any] = {"help": opt.description[0].upper() + opt.description[1:] + "."}
            if opt.min is not None:
                kw["min"] = opt.min
            if opt.max is not None:
                kw["max"] = opt.max
            typ: Any = Optional[opt.type] if opt.nullable else opt.type
            added.append(inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=opt.default,
                                           annotation=Annotated[typ, typer.Option(*names, **kw)]))

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        full = params + added
        command.__signature__ = sig.replace(parameters=full)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in full}
        del command.__wrapped__  # typer reads the signature above, not the wrapped one's
        return command

    return decorate


def markdown_table() -> str:
    """The options table of docs/options.md."""
    rows = ["| option | type | range / choices | default | API | CLI | also accepted as | what it does |",
            "|---|---|---|---|---|---|---|---|"]
    for opt in OUTPUT_OPTIONS:
        aliases = ", ".join(f"`{a}` ({door})" for door, names in opt.aliases.items() for a in names)
        default = "—" if opt.default is None else f"`{str(opt.default).lower() if opt.type is bool else opt.default}`"
        rows.append(
            f"| `{opt.name}` | {opt.type.__name__} | {opt.range_text() or '—'} | {default} | "
            f"{'`output.' + opt.name + '`' if 'api' in opt.doors else '—'} | "
            f"{'`' + opt.flag + '`' if 'cli' in opt.doors else '—'} | {aliases or '—'} | {opt.description} |"
        )
    return "\n".join(rows) + "\n"


TABLE_START = "<!-- options table: generated, do not edit by hand -->\n"
TABLE_END = "<!-- end of options table -->"


def with_table(doc: str) -> str:
    """``doc`` (docs/options.md) with its generated table replaced by the current one."""
    head, rest = doc.split(TABLE_START, 1)
    return head + TABLE_START + markdown_table() + TABLE_END + rest.split(TABLE_END, 1)[1]


if __name__ == "__main__":  # pragma: no cover - `python -m ben2_worker.options [docs/options.md]`
    import sys

    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as fh:
            text = with_table(fh.read())
        with open(sys.argv[1], "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        print(markdown_table(), end="")
