"""The widget browser in a real browser: Voila serves notebooks/05_browse.ipynb on loopback, headless
Chromium (Debian's, driven by Playwright) types a product name and checks the grid changed (issue 4)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PRODREC_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("PRODREC_TEST_ARTIFACTS", ROOT / "test-artifacts"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def voila(demo_dir: Path, tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    pytest.importorskip("playwright")
    if shutil.which("voila", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("voila is not installed (pip install voila)")
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    shutil.copy(ROOT / "notebooks" / "05_browse.ipynb", nbdir)
    port = free_port()
    env = dict(os.environ, PRODREC_DATA=str(demo_dir), PRODREC_NB_N_PRODUCTS="48", PRODREC_NB_OUT=str(tmp_path / "out"))
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "voila"), "05_browse.ipynb", "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1", "--ServerApp.port_retries=0"],
        cwd=nbdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "api/status" if False else url, timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "voila.log").read_text()
            time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def page(voila: str):
    """Headless Chromium on the Voila page, once the widget's first grid is drawn."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        try:
            page.goto(voila, timeout=120_000)
            page.wait_for_selector(".prodrec-browser .prodrec-tile img", timeout=180_000)
            yield page
        finally:
            browser.close()


def test_widget_renders_and_search_updates_grid(page, demo_dir: Path) -> None:
    from prodrec import load_catalog

    cat = load_catalog(demo_dir)
    target = cat.row(90021)["productDisplayName"]
    assert "Error displaying widget" not in page.content()
    srcs = lambda: page.eval_on_selector_all(".prodrec-tile img", "els => els.map(e => e.src)")
    names = lambda: page.eval_on_selector_all(".prodrec-tile .prodrec-name", "els => els.map(e => e.textContent)")
    before_src, before_names = srcs(), names()
    assert len(before_src) == 5
    page.fill(".prodrec-browser .prodrec-search input", target)
    page.wait_for_function(
        "t => [...document.querySelectorAll('.prodrec-query .prodrec-name')].some(e => e.textContent === t)",
        arg=target, timeout=60_000)
    page.wait_for_function("old => { const n = [...document.querySelectorAll('.prodrec-tile img')]"
                           ".map(e => e.src); return n.length === 5 && n.join() !== old.join(); }",
                           arg=before_src, timeout=60_000)
    after_names = names()
    assert after_names != before_names and len(after_names) == 5
    assert "90021" in page.inner_text(".prodrec-browser")
    page.screenshot(path=str(ARTIFACTS / "browser-search.png"), full_page=True)
    assert "Error displaying widget" not in page.content()
    # describe a product in words: the grid shows what the description finds (text arm here)
    before_src = srcs()
    page.fill(".prodrec-browser .prodrec-describe input", "red handbags for women")
    page.press(".prodrec-browser .prodrec-describe input", "Enter")
    page.wait_for_function(
        "t => [...document.querySelectorAll('.prodrec-query .prodrec-name')].some(e => e.textContent === t)",
        arg="red handbags for women", timeout=60_000)
    page.wait_for_function("old => { const n = [...document.querySelectorAll('.prodrec-tile img')]"
                           ".map(e => e.src); return n.length === 5 && n.join() !== old.join(); }",
                           arg=before_src, timeout=60_000)
    found = names()
    assert sum("Handbags" in n for n in found) >= 4, found
    page.screenshot(path=str(ARTIFACTS / "browser-describe.png"), full_page=True)
    assert "Error displaying widget" not in page.content()


def test_like_and_refine_in_the_browser(page) -> None:
    """Like a recommendation, type a modifier in the refine box and press Enter: a REFINED row replaces the
    grid (the like and the modifier in its status line) and no widget error shows."""
    before = page.eval_on_selector_all(".prodrec-tile img", "els => els.map(e => e.src)")
    page.click(".prodrec-browser .prodrec-tile .prodrec-like >> nth=0")
    page.wait_for_function("() => document.querySelector('.prodrec-browser').innerText.includes('liked 1')",
                           timeout=60_000)
    page.fill(".prodrec-browser .prodrec-refine input", "in red")
    page.press(".prodrec-browser .prodrec-refine input", "Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.prodrec-query')].some(e => e.innerText.includes('REFINED'))",
        timeout=60_000)
    page.wait_for_function("old => { const n = [...document.querySelectorAll('.prodrec-tile img')]"
                           ".map(e => e.src); return n.length === 5 && n.join() !== old.join(); }",
                           arg=before, timeout=60_000)
    status = page.inner_text(".prodrec-browser")
    assert "like 1, dislike 0" in status and "text model" in status  # the modifier, placed by the text arm
    page.screenshot(path=str(ARTIFACTS / "browser-refine.png"), full_page=True)
    assert "Error displaying widget" not in page.content()
