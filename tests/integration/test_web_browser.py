"""The hub's web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
against a real hub and a real device process: log in, see the device on the fleet page, filter
samples, annotate a detection sample with two boxes drawn with the mouse, have a second person
review it, and find it in the next training dataset.

Screenshots of the fleet and annotation pages go to ``$LEANLOOP_SCREENSHOTS`` when it is set
(the README's pictures come from there), else to the test's temp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopkit import BundleMaker, Device, committed, publish

from hub.api._common import BLOBS, DB
from hub.client import HubAdminClient
from hub.jobs import export_samples
from hub.testing import LiveHub

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip

pytestmark = pytest.mark.integration


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # pragma: no cover - make test installs it
        pytest.skip(f"playwright is not installed: {e}")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium; make test installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _token(admin: HubAdminClient, name: str, role: str) -> str:
    answer = admin._json("POST", "/admin/tokens", json_body={"name": name, "role": role})
    return str(answer["token"])


def _login(browser: Any, url: str, token: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{url}/ui/")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/ui/")
    return page


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("LEANLOOP_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_web_page_when_two_people_annotate_and_review_the_sample_reaches_training(
    browser: Any,
    live_hub: LiveHub,
    admin: HubAdminClient,
    keys: Path,
    make_bundle: BundleMaker,
    start_device: Any,
    tmp_path: Path,
) -> None:
    publish(admin, keys, make_bundle(1, [(10, 10, 40, 40), (50, 50, 90, 90)]), 1)
    device: Device = start_device("cam-web")
    device.wait("v1 committed", committed(1))
    device.feed(4, levels=(60, 200))
    device.feed(4, levels=(120, 30))
    deadline = time.monotonic() + 60
    while len(admin.samples("digits", state="pending", limit=100)) < 2:
        assert time.monotonic() < deadline, f"no samples reached the hub: {device.tail()}"
        time.sleep(0.3)
    shots = _shots(tmp_path)
    ann_token, rev_token = _token(admin, "ann", "annotator"), _token(admin, "rev", "annotator")
    url = live_hub.url

    # Fleet: the device this test started, running v1.
    page = _login(browser, url, ann_token)
    row = page.locator("#fleet tr[data-device='cam-web']")
    row.wait_for()
    assert "digits v1" in row.inner_text()
    page.screenshot(path=str(shots / "fleet.png"), full_page=True)

    # Samples: filter by device and by strategy.
    page.goto(f"{url}/ui/samples")
    page.fill("input[name=device]", "cam-web")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/ui/samples?**device=cam-web**")
    thumbs = page.locator("#samples li[data-sample]")
    assert thumbs.count() >= 2
    page.fill("input[name=device]", "cam-nobody")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**device=cam-nobody**")
    assert page.locator("#samples li[data-sample]").count() == 0

    # Annotate: the queue's top, starting from the model's boxes; replace them with two.
    page.goto(f"{url}/ui/annotate?bundle=digits")
    page.wait_for_selector("canvas[data-ready='1']")
    sample_id = page.url.split("/ui/annotate/")[1].split("?")[0]
    canvas = page.locator("#canvas")
    box = canvas.bounding_box()
    assert box is not None
    scale = box["width"] / 96
    canvas.click(position={"x": 2, "y": 2})  # focus; deselects
    while page.locator("#boxes li").count():
        page.keyboard.press("Tab")
        page.keyboard.press("Delete")

    def draw(x1: float, y1: float, x2: float, y2: float) -> None:
        page.mouse.move(box["x"] + x1 * scale, box["y"] + y1 * scale)
        page.mouse.down()
        page.mouse.move(box["x"] + (x1 + x2) / 2 * scale, box["y"] + (y1 + y2) / 2 * scale)
        page.mouse.move(box["x"] + x2 * scale, box["y"] + y2 * scale)
        page.mouse.up()
        page.keyboard.press("Escape")

    page.keyboard.press("4")  # class "3" (the ontology is 0..9)
    draw(8, 8, 42, 42)
    page.keyboard.press("8")  # class "7"
    draw(48, 52, 92, 90)
    labels = page.locator("#boxes li").all_inner_texts()
    assert [t.split()[0] for t in labels] == ["3", "7"], labels
    page.screenshot(path=str(shots / "annotate.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda u: sample_id not in u)

    # Review by a second person.
    reviewer = _login(browser, url, rev_token)
    reviewer.goto(f"{url}/ui/review")
    reviewer.click(f"#review tr[data-sample='{sample_id}'] a")
    reviewer.wait_for_selector("canvas[data-ready='1']")
    reviewer.click("#accept")
    reviewer.wait_for_url(f"{url}/ui/review")

    # The next training dataset holds the sample with the two reviewed boxes.
    db, blobs = live_hub.app[DB], live_hub.app[BLOBS]
    annotated = [s for s in db.samples("digits", "annotated", None) if s.id == sample_id]
    assert len(annotated) == 1
    job_dir = tmp_path / "next-training-set"
    assert export_samples(annotated, blobs, job_dir) == 1
    line = json.loads((job_dir / "annotations.jsonl").read_text().splitlines()[0])
    boxes = line["boxes"]
    assert [b[4] for b in boxes] == ["3", "7"]
    for got, want in zip(boxes, [(8, 8, 42, 42), (48, 52, 92, 90)], strict=True):
        assert all(abs(g - w) <= 1.5 for g, w in zip(got[:4], want, strict=True)), boxes
    assert annotated[0].annotation is not None
    assert annotated[0].annotation["reviewer"] == "rev"
