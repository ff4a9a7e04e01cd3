"""The website as a reader sees it: build it with -W, serve it on localhost and open every page in
headless Chromium. Screenshots are kept in _build/screenshots/."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
REPOSITORY = "github/d2lcnn/d2lcnn/blob/main"


def chapter_title(notebook: Path) -> str:
    """The text of the notebook's first '# ' heading."""
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise AssertionError(f"{notebook.name} has no '# ' title")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the book into a temporary folder, failing on any Sphinx warning."""
    out = tmp_path_factory.mktemp("site")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "-W", "--keep-going"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless browser test needs Debian's chromium and chromium-driver (make system-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1600"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = ROOT / "_build" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_book_has_the_five_chapters_in_its_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    names = [nb.stem for nb in NOTEBOOKS]
    assert names[:5] == ["01_lenet", "02_alexnet", "03_vgg", "04_resnet", "05_transfer_learning"]
    for name in names:
        assert f"notebooks/{name}" in toc, name


def test_landing_page(browser, server, screenshots):
    browser.get(server + "/index.html")  # redirects to the root page of the table of contents
    WebDriverWait(browser, 20).until(lambda b: b.current_url.endswith("/book/intro.html"))
    browser.get(server + "/book/intro.html")  # load it fully before reading the navigation
    assert "d2lcnn" in browser.title
    links = browser.execute_script("return [...document.querySelectorAll('nav a')].map(a => a.textContent)")
    for notebook in NOTEBOOKS:
        assert any(chapter_title(notebook) in link for link in links), notebook.name
    browser.save_screenshot(str(screenshots / "index.png"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_page_shows_title_figures_and_colab_link(notebook, browser, server, screenshots):
    browser.get(f"{server}/notebooks/{notebook.stem}.html")
    heading = browser.execute_script("return document.querySelector('main h1').textContent")
    assert chapter_title(notebook) in heading
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")  # load lazy images too
    figures = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const images = [...document.querySelectorAll('.cell_output img')];
        Promise.all(images.map(img => img.decode().catch(() => null))).then(() =>
            done(images.map(img => [img.complete, img.naturalWidth, img.naturalHeight])));
        """
    )
    if notebook.stem == "10_comparison":
        assert len(figures) >= 1, f"{notebook.name}: expected the accuracy-against-cost plot"
    else:
        assert len(figures) >= 3, f"{notebook.name}: expected curves, predictions and a confusion matrix"
    for complete, width, height in figures:
        assert complete and width > 0 and height > 0
    colab = browser.execute_script(
        "return [...document.querySelectorAll('a')].map(a => a.href).filter(h => h.includes('colab'))"
    )
    assert f"https://colab.research.google.com/{REPOSITORY}/notebooks/{notebook.name}" in colab
    browser.set_window_size(1280, 1600)
    browser.save_screenshot(str(screenshots / f"{notebook.stem}.png"))
