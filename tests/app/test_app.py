"""The web app served on loopback: the /segment API (gradio_client) returns the official FC-CLIP
fixture's panoptic output, and the page works in a real headless Chromium (Playwright driving
Debian's /usr/bin/chromium). One app process (a server thread) serves both tests.

Screenshots go to ``$OVSEG_TEST_ARTIFACTS`` (if set) or pytest's tmp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from ovseg_testing import REPO, fixture_dir

gr = pytest.importorskip("gradio", reason="the app needs gradio: pip install -e '.[app]'")

from ovseg import Segmenter  # noqa: E402
from ovseg.app.ui import build_app, launch  # noqa: E402

TINY = REPO / "ovseg/configs/tests/fcclip_tiny.yaml"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def fixture_vocabulary_text(fx: Path) -> str:
    """The fixture's vocabulary in ovseg's syntax ("a, a2; b [stuff]; ...")."""
    classes = json.loads((fx / "vocabulary.json").read_text())["classes"]
    return "; ".join(c["name"] + ("" if c["isthing"] else " [stuff]") for c in classes)


def expected_segments(fx: Path) -> list[dict]:
    """The official panoptic segments: id, category_id, isthing, label, area."""
    classes = json.loads((fx / "vocabulary.json").read_text())["classes"]
    pan = np.load(fx / "panoptic_seg.npy")
    info = json.loads((fx / "panoptic_segments_info.json").read_text())
    return [
        {
            "id": s["id"],
            "category_id": s["category_id"],
            "isthing": s["isthing"],
            "label": classes[s["category_id"]]["name"].split(",")[0].strip(),
            "area": int((pan == s["id"]).sum()),
        }
        for s in info
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    fx = fixture_dir("fcclip_tiny")
    seg = Segmenter.from_pretrained(fx / "fcclip_tiny_a.pth", config=TINY)
    demo = build_app(seg, examples_dir=REPO / "demo" / "examples")
    port = _free_port()
    launch(demo, host="127.0.0.1", port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    root = os.environ.get("OVSEG_TEST_ARTIFACTS")
    out = Path(root) / "app" if root else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.timeout(300)
def test_segment_api_returns_the_fixture_output(app_url, tmp_path):
    from gradio_client import Client, handle_file

    fx = fixture_dir("fcclip_tiny")
    client = Client(app_url, verbose=False, httpx_kwargs={"timeout": 120})
    assert "/segment" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    annotated, segments = client.predict(
        handle_file(str(fx / "image.png")),
        fixture_vocabulary_text(fx),
        "panoptic",
        api_name="/segment",
    )
    mine = [{k: s[k] for k in ("id", "category_id", "isthing", "label", "area")} for s in segments]
    assert mine == expected_segments(fx)
    # one (mask, label) per segment; each mask image is the segment's pixels
    from PIL import Image

    assert [a["label"] for a in annotated["annotations"]] == [s["label"] for s in segments]
    for a, s in zip(annotated["annotations"], segments):
        alpha = np.asarray(Image.open(a["image"]).convert("RGBA"))[..., 3]
        assert int((alpha > 0).sum()) == s["area"]
    assert Image.open(annotated["image"]).size == (240, 360)

    # concurrent requests queue (one model, one at a time) and both complete
    jobs = [
        client.submit(handle_file(str(fx / "image.png")), text, "panoptic", api_name="/segment")
        for text in (fixture_vocabulary_text(fx), "person; sky [stuff]")
    ]
    first, second = (job.result(timeout=120) for job in jobs)
    assert first[1] == segments
    assert {s["label"] for s in second[1]} <= {"person", "sky"}

    # bad input: one message, no traceback
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="bad vocabulary: no class names"):
        client.predict(handle_file(str(fx / "image.png")), ";;", "panoptic", api_name="/segment")
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(AppError, match="cannot read the uploaded image: .*photo.png"):
        client.predict(handle_file(str(bad)), "cat", "panoptic", api_name="/segment")


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).is_file():
        pytest.skip("no Chromium: apt-get install chromium (Debian's package)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.timeout(300)
def test_page_in_headless_chromium(app_url, chromium, artifacts):
    fx = fixture_dir("fcclip_tiny")
    page = chromium.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    try:
        page.goto(app_url)
        page.locator("#segment").wait_for()
        page.screenshot(path=str(artifacts / "1_loaded.png"), full_page=True)

        page.locator("#image input[type=file]").set_input_files(str(fx / "image.png"))
        page.locator("#image img").first.wait_for()
        page.locator("#vocabulary textarea").fill(fixture_vocabulary_text(fx))
        page.locator("#segment").click()
        page.locator("#status").get_by_text("4 panoptic segment(s)").wait_for()
        table = page.locator("#table")
        for s in expected_segments(fx):
            assert table.get_by_text(s["label"], exact=True).count() >= 1, s["label"]
        assert page.locator("#annotated img").count() >= 1
        assert page.locator("#overlay img").count() == 1
        page.screenshot(path=str(artifacts / "2_segmented.png"), full_page=True)

        page.locator("#vocabulary textarea").fill("cat;; ,")
        page.locator("#segment").click()
        page.locator("#status").get_by_text("bad vocabulary: class 1 has a blank name").wait_for()
        assert "Traceback" not in page.content()
        page.screenshot(path=str(artifacts / "3_bad_vocabulary.png"), full_page=True)
    finally:
        page.close()
    assert sorted(p.name for p in artifacts.iterdir()) == [
        "1_loaded.png",
        "2_segmented.png",
        "3_bad_vocabulary.png",
    ]
