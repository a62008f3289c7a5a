"""The requests an endpoint test sends: both pipelines, through both request formats.

* ``comfy-simple`` — worker-comfyui request with the user's simple workflow
  (``BG_remove_BEN2_simple_2nd.api.json``);
* ``comfy-full``   — worker-comfyui request with the user's full workflow
  (``BG_remove_BEN2_simple_1st.api.json``: Florence-2, NudeNet, Llama classifier, gate);
* ``api-simple``   — the simple task API, ``pipeline: simple``;
* ``api-full``     — the simple task API, ``pipeline: full``.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

WORKFLOW_FILES = {
    "simple": "BG_remove_BEN2_simple_2nd.api.json",
    "full": "BG_remove_BEN2_simple_1st.api.json",
}
CASE_NAMES = ("comfy-simple", "comfy-full", "api-simple", "api-full")
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the checkout, for an editable install


@dataclass
class InputImage:
    data: bytes
    mime: str
    width: int
    height: int
    name: str

    @property
    def b64(self) -> str:
        return base64.b64encode(self.data).decode()

    @property
    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{self.b64}"


@dataclass
class Case:
    name: str
    pipeline: str  # simple | full
    api: str  # worker-comfyui | simple-api
    payload: dict  # the job input (what goes under "input")
    expect_width: int
    expect_height: int
    expect_alpha: bool = True
    notes: list[str] = field(default_factory=list)

    def body(self) -> bytes:
        return json.dumps({"input": self.payload}, separators=(",", ":")).encode()


def find_workflows_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``./workflows``, else the checkout's ``workflows/``; ``FileNotFoundError``
    naming where it looked."""
    candidates = [explicit] if explicit else [Path.cwd() / "workflows", _PACKAGE_ROOT / "workflows"]
    for folder in candidates:
        if folder and all((folder / f).is_file() for f in WORKFLOW_FILES.values()):
            return folder
    looked = ", ".join(str(c) for c in candidates if c)
    raise FileNotFoundError(
        f"the user's API-format workflows ({', '.join(WORKFLOW_FILES.values())}) are not in {looked}; "
        "pass --workflows DIR"
    )


def default_image_path() -> Path | None:
    for path in (Path.cwd() / "samples" / "astronaut.jpg", _PACKAGE_ROOT / "samples" / "astronaut.jpg"):
        if path.is_file():
            return path
    return None


def load_image(path: Path | None) -> InputImage:
    """The photo to send (its bytes as they are); without one, a generated 640x480 PNG."""
    from PIL import Image

    if path is None:
        return synthetic_image()
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        fmt = (img.format or "").upper()
        # The worker applies EXIF orientation: compare outputs with the displayed size.
        from PIL import ImageOps

        w, h = ImageOps.exif_transpose(img).size
    mime = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}.get(fmt, "application/octet-stream")
    return InputImage(data=data, mime=mime, width=w, height=h, name=path.name)


def synthetic_image(width: int = 640, height: int = 480) -> InputImage:
    """A subject (a bright disc) on a textured background, as a PNG."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 1] = (xx * 255 // max(1, width - 1)).astype(np.uint8)
    img[..., 2] = (yy * 255 // max(1, height - 1)).astype(np.uint8)
    disc = (xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (min(width, height) / 3) ** 2
    img[disc] = (255, 200, 40)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return InputImage(buf.getvalue(), "image/png", width, height, "synthetic.png")


def loadimage_name(workflow: dict) -> str:
    for node in workflow.values():
        if isinstance(node, dict) and node.get("class_type") == "LoadImage":
            return str(node["inputs"]["image"])
    raise ValueError("the workflow has no LoadImage node")


def build_cases(image: InputImage, workflows_dir: Path, names: tuple[str, ...] = CASE_NAMES) -> list[Case]:
    cases = []
    for name in names:
        if name not in CASE_NAMES:
            raise ValueError(f"unknown case {name!r}; choose from {', '.join(CASE_NAMES)}")
        api, pipeline = name.split("-")
        if api == "comfy":
            workflow = json.loads((workflows_dir / WORKFLOW_FILES[pipeline]).read_text(encoding="utf-8"))
            payload = {"workflow": workflow, "images": [{"name": loadimage_name(workflow), "image": image.data_uri}]}
            cases.append(Case(name, pipeline, "worker-comfyui", payload, image.width, image.height))
        else:
            payload = {"image": image.b64, "pipeline": pipeline, "output": {"format": "png"}}
            cases.append(Case(name, pipeline, "simple-api", payload, image.width, image.height))
    return cases
