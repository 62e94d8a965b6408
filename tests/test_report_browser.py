"""The HTML report as a person sees it: headless Chromium opens it, its DOM holds the leaderboard and the
images, and its screenshot shows the plots (colours that only the embedded PNGs contain), not a blank page.

Needs Debian's `chromium` (.ci/run installs it). Without it the test skips on a developer's machine and
fails in CI (CI set), so CI cannot go green without looking at the page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report import make_sweep

from deepfake_fastai.report import write_report

WINDOW_PX = (1280, 2000)  # width, height of the screenshot
CHROMIUM_TIMEOUT_S = 120  # a cold start takes ~2 s here; a hang must not hang the suite
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
TAB_ORANGE = (255, 127, 14)  # matplotlib's second line colour: the ROC curve and learning curves of a run


def chromium() -> str:
    """Path of the chromium binary; skip without it, except in CI, where its absence is a failure."""
    path = shutil.which("chromium")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y --no-install-recommends chromium)")


def run_chromium(tmp: Path, url: str, *args: str) -> str:
    """One headless Chromium call with a fresh profile and HOME; its stdout."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    env = {**os.environ, "HOME": str(tmp)}  # keeps ~/.pki and ~/.config out of the real home
    done = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args, url], env=env,
                          capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


class Dom(HTMLParser):
    """The parts of the DOM the test looks at: <img> attributes and the text of every table row."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.rows: list[list[str]] = []
        self.row_classes: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "tr":
            self.rows.append([])
            self.row_classes.append(dict(attrs).get("class"))

    def handle_data(self, data: str) -> None:
        if self.rows and data.strip():
            self.rows[-1].append(data.strip())


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, Path]:
    """A report over two complete runs and a failed one (run folders written from numpy arrays)."""
    root = tmp_path_factory.mktemp("browser")
    sweep_dir, _ = make_sweep(root / "runs", ["good_a", "good_b"], {"broken": "RuntimeError: boom"})
    return write_report(sweep_dir, root / "no_submissions"), root


def test_dom_has_the_leaderboard_and_every_image(page):
    report, root = page
    dom = Dom()
    dom.feed(run_chromium(root, report.as_uri(), "--dump-dom"))
    leaderboard = dom.rows[1:4]  # row 0 is the header of the first table, the leaderboard
    assert [row[:3] for row in leaderboard] == [["1", "good_a", "complete"], ["2", "good_b", "complete"],
                                                ["3", "broken", "failed"]]
    assert dom.row_classes[1:4] == [None, None, "bad"]
    expected = {"ROC curves"} | {f"{kind} {run}" for kind in ("learning curves", "confusion matrix", "calibration")
                                 for run in ("good_a", "good_b")}
    assert {img["alt"] for img in dom.images} >= expected
    assert all(img["src"].startswith("data:image/png;base64,") for img in dom.images)  # embedded: opens offline


def test_screenshot_shows_the_plots(page):
    report, root = page
    shot = root / "shot.png"
    run_chromium(root, report.as_uri(), f"--screenshot={shot}", f"--window-size={WINDOW_PX[0]},{WINDOW_PX[1]}")
    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW_PX
    rgb = np.asarray(image).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    grey = rgb.mean(axis=2)
    lower = grey[WINDOW_PX[1] // 5:]  # below the title and the leaderboard: the figures
    assert lower.std() > 20 and (lower < 250).mean() > 0.05  # not a blank (or nearly blank) page
    orange = (np.abs(rgb - TAB_ORANGE).max(axis=2) < 40).sum()  # ROC and learning-curve lines
    dark_blue = ((r < 40) & (g > 30) & (g < 110) & (b > 90) & (b < 170)).sum()  # confusion matrix diagonal
    assert orange > 300, f"{orange} orange pixels: the ROC image did not paint"
    assert dark_blue > 5000, f"{dark_blue} dark blue pixels: the confusion matrix did not paint"
