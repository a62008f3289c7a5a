"""The playground page in a real headless Chromium (Debian's ``chromium``, driven by Playwright;
Playwright never downloads a browser of its own here) against the service on loopback:
upload a photo and check the rendered cut-out's pixels against the matte, the option controls
generated from the schema, a rejected file, an undecodable image, and the blocked-image message
of the full pipeline (tiny stand-in safety models with a classifier biased to UNSAFE). A
screenshot after a cut-out is saved as a test artefact and to docs/img/playground.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from service_harness import LOOPBACK_URLS, LiveService, engines_loader, photo_bytes
from test_fetch import body, fake_dns, serve, tls_files  # noqa: F401 - fixtures reused

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "docs" / "img" / "playground.png"
ARTEFACTS = Path(os.environ.get("BEN2_TEST_ARTEFACTS", ROOT / "test-artefacts"))
W, H = 320, 240

sync_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():  # scripts/test.sh installs it where it can; a developer machine may not have it
    if os.environ.get("BEN2_TEST_SKIP_BROWSER"):  # GitHub's ubuntu runner: the `browser` job runs these
        pytest.skip(f"browser tests run elsewhere: {os.environ['BEN2_TEST_SKIP_BROWSER']}", allow_module_level=True)
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: CI must install Debian's chromium (scripts/test.sh)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def svc(models_dir):
    live = LiveService(models_dir=models_dir)
    yield live
    live.stop()


@pytest.fixture
def page(browser, svc):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(str(exc)))
    pg.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    external: list[str] = []
    pg.on("request", lambda req: external.append(req.url) if not req.url.startswith((svc.base, "data:", "blob:")) else None)
    pg.goto(svc.base + "/")
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    assert not problems, problems
    assert not external, f"the page fetched network assets: {external}"
    context.close()


def write_photo(tmp_path: Path, name: str = "photo.png") -> tuple[np.ndarray, Path]:
    img, png = photo_bytes(W, H)
    path = tmp_path / name
    path.write_bytes(png)
    return img, path


def canvas_pixels(page, selector: str) -> np.ndarray:
    data = page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        return {w: c.width, h: c.height, px: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)};
    }""", selector)
    return np.array(data["px"], np.uint8).reshape(data["h"], data["w"], 4)


def image_pixels(page, selector: str) -> np.ndarray:
    """An <img>'s pixels as the browser decoded them (drawn into a scratch canvas)."""
    data = page.evaluate("""(sel) => {
        const img = document.querySelector(sel);
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        return {w: c.width, h: c.height, px: Array.from(ctx.getImageData(0, 0, c.width, c.height).data)};
    }""", selector)
    return np.array(data["px"], np.uint8).reshape(data["h"], data["w"], 4)


def test_upload_shows_the_cutout_transparent_where_the_matte_says(page, tmp_path):
    img, path = write_photo(tmp_path)
    page.set_input_files("#files", str(path))
    card = page.wait_for_selector(".result[data-state='done']", timeout=60_000)
    assert "Done" in card.inner_text()
    cut = canvas_pixels(page, ".result .after")
    assert cut.shape == (H, W, 4)
    page.wait_for_function("document.querySelector('.result .mask').complete")
    matte = image_pixels(page, ".result .mask")[..., 0]  # the matte the API returned, as shown
    assert np.array_equal(cut[..., 3], matte)
    # ... and that matte is the stand-in's: the centre box of this photo.
    assert matte[H // 4 + 1: 3 * H // 4 - 1, W // 4 + 1: 3 * W // 4 - 1].min() == 255
    assert matte[: H // 4].max() == 0 and matte[:, : W // 4].max() == 0
    opaque = cut[..., 3] == 255
    assert np.array_equal(cut[..., :3][opaque], img[opaque])  # the photo's own pixels
    before = canvas_pixels(page, ".result .before")
    assert np.array_equal(before[..., :3], img) and before[..., 3].min() == 255
    # What is on screen: with the slider at 0 the cut-out covers the frame and the
    # checkerboard shows through where the matte is 0.
    page.fill(".result .slider", "0")
    page.dispatch_event(".result .slider", "input")
    shot = tmp_path / "compare.png"
    page.locator(".result .compare canvas.after").screenshot(path=str(shot))
    seen = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    sh, sw = seen.shape[:2]
    corner = seen[2:sh // 8, 2:sw // 8].reshape(-1, 3)
    grey = (corner[:, 0] == corner[:, 1]) & (corner[:, 1] == corner[:, 2]) & (corner[:, 0] >= 210)
    assert grey.all() and {217, 255} <= set(corner[:, 0].tolist()), "no checkerboard behind the cut-out"
    centre = seen[sh // 2, sw // 2]
    assert np.abs(centre - img[H // 2, W // 2]).max() <= 40  # the photo, scaled for display
    # Mask, timings, download.
    assert page.eval_on_selector(".result .mask", "m => m.naturalWidth") == W
    stages = page.eval_on_selector_all(".result .timings tbody td:first-child", "tds => tds.map(t => t.textContent)")
    assert {"decode", "encode"} <= set(stages)
    link = page.locator(".result .download")
    assert link.get_attribute("download").endswith(".png") and link.get_attribute("href").startswith("data:image/png")
    assert not page.is_visible("#key-row") and not page.is_visible(".result .safety")  # no keys, no safety
    page.fill(".result .slider", "50")
    page.dispatch_event(".result .slider", "input")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "playground.png"), full_page=True)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ARTEFACTS / "playground.png", SCREENSHOT)


def test_controls_come_from_the_schema_and_crop_draws_its_box(page, tmp_path):
    from ben2_worker.api import schemas
    from ben2_worker.service.app import PLAYGROUND_HIDDEN

    for name in schemas.OutputOptions.model_fields:
        assert page.locator(f"#opt-{name}").count() == (0 if name in PLAYGROUND_HIDDEN else 1), name
    page.check("#opt-crop")
    page.fill("#opt-crop_margin", "8")
    _, path = write_photo(tmp_path)
    page.set_input_files("#files", str(path))
    page.wait_for_selector(".result[data-state='done']", timeout=60_000)
    x0, y0, x1, y1 = W // 4 - 8, H // 4 - 8, 3 * W // 4 + 8, 3 * H // 4 + 8
    assert page.inner_text(".result .crop-text").strip() == f"· crop box {x0},{y0} – {x1},{y1}"
    assert page.is_visible(".result .crop-box")
    assert canvas_pixels(page, ".result .after").shape == (y1 - y0, x1 - x0, 4)


def test_rejected_files_say_why(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    page.set_input_files("#files", [str(notes), str(broken)])
    page.wait_for_selector("#messages .msg")
    assert "Rejected notes.txt: not an image" in page.inner_text("#messages")
    card = page.wait_for_selector(".result[data-state='error']", timeout=60_000)
    assert card.query_selector(".name").inner_text() == "broken.png"
    assert "Rejected:" in card.inner_text() and "input.image" in card.inner_text()


def test_blocked_image_shows_the_gate_message_caption_and_verdict(browser, tmp_path_factory, tmp_path):
    for mod in ("nudenet", "llama_cpp", "gguf", "torch", "transformers"):
        pytest.importorskip(mod)
    from test_full_pipeline import CAPTION, build_full_models

    unsafe = build_full_models(tmp_path_factory.mktemp("models-unsafe"), "UNSAFE")
    live = LiveService(load_engines=engines_loader(unsafe, "simple,full"))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(live.base + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.select_option("#pipeline", "full")
        _, path = write_photo(tmp_path)
        page.set_input_files("#files", str(path))
        card = page.wait_for_selector(".result[data-state='blocked']", timeout=120_000)
        text = card.inner_text()
        assert "Blocked by the safety gate" in text
        assert card.query_selector(".caption").inner_text() == CAPTION
        assert "BLOCKED" in card.query_selector(".verdict").inner_text()
        assert not card.query_selector(".compare").is_visible()  # no cut-out for a blocked image
        page.screenshot(path=str(tmp_path / "blocked.png"), full_page=True)
    finally:
        context.close()
        live.stop()


def test_pasted_url_is_fetched_by_the_server(browser, models_dir, tmp_path, tls_files, fake_dns, monkeypatch):  # noqa: F811
    """A pasted https URL goes to the API, which fetches it through the SSRF guard (this
    service's policy allows the loopback test server; https and the test CA still apply). The
    browser itself cannot resolve the made-up host, so the card shows no "before"."""
    import ssl

    answers, _ = fake_dns
    answers["public.example"] = ["127.0.0.1"]
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files / "ca.pem"))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tls_files / "server.pem")
    _, png = photo_bytes(W, H)
    live = LiveService(models_dir=models_dir, urls=LOOPBACK_URLS, warm=False)
    context = browser.new_context()
    try:
        with serve({"/p.png": body(png)}, tls=tls) as images:
            page = context.new_page()
            page.goto(live.base + "/")
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#url", f"https://public.example:{images.port}/p.png")
            page.click("#url-form button")
            page.wait_for_selector(".result[data-state='done']", timeout=60_000)
            assert canvas_pixels(page, ".result .after").shape == (H, W, 4)
            assert len(images.hits) == 1  # fetched once, by the server
            page.fill("#url", "https://127.0.0.1:9/x.png")  # nothing listens there
            page.click("#url-form button")
            card = page.wait_for_selector(".result[data-state='error']", timeout=60_000)
            assert "Rejected: input.image: 127.0.0.1 port 9 refused the connection" in card.inner_text()
    finally:
        context.close()
        live.stop()
