"""The website as a reader sees it: build it with -W, serve it on localhost and open every page in
headless Chromium. Screenshots are kept in _build/screenshots/.

Every page is also checked for layout faults a reader would see (`LAYOUT_PROBLEMS`): a markdown table
that did not render and shows as `| a | b |` text, and a table, image or svg wider than the text
column that cannot be scrolled sideways. `test_the_layout_checker_finds_what_it_should` shows that
the checker can fail, on a small page made to fail."""

from __future__ import annotations

import functools
import http.server
import json
import re
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
# Every page of the table of contents, as its path without suffix: book/intro, notebooks/01_lenet, ...
PAGES = re.findall(r"^\s*(?:root|- file): (\S+)$", (ROOT / "_toc.yml").read_text(), re.M)
WIDTHS = (1400, 400)  # a desktop window and a phone held upright
NARROW = 400  # the width at which nothing may stick out of the text column
MAX_SCREENSHOT_HEIGHT = 20_000

# The layout faults of the page open in the browser, as {"raw_tables": [line, ...], "too_wide":
# [description, ...]}. The text column is the page's main article (or <main> on a page without one).
LAYOUT_PROBLEMS = r"""
const main = document.querySelector('main');
const column = main.querySelector('article') || main;

// 1. Markdown tables that did not render: lines like '| a | b |' or '|---|---:|' in the text a
// reader sees, leaving out code (a cell that prints a table in a terminal is not a fault).
const hideCode = document.createElement('style');
hideCode.textContent = 'main pre, main code, main .highlight {display: none !important}';
document.head.append(hideCode);
const text = main.innerText;
hideCode.remove();
const row = /^\|\s.*\|.*\s\|$/;  // '| a | b |' (or '| | b |', its code left out): three pipes
const rule = /\|(\s*:?[-\u2013\u2014]+:?\s*\|){2}/;  // '|---|--:|', or the dashes smartquotes made of it
const rawTables = text.split('\n').map(line => line.trim()).filter(l => row.test(l) || rule.test(l));

// 2. Tables, images and svgs wider than the column, with no ancestor inside the column that both
// scrolls sideways (overflow-x auto or scroll) and fits the column itself.
const box = column.getBoundingClientRect();
const fits = r => r.width <= box.width + 1 && r.left >= box.left - 1 && r.right <= box.right + 1;
const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
const label = el => {
    if (el.tagName === 'IMG') return el.alt || el.getAttribute('src');
    return (el.textContent || el.getAttribute('aria-label') || '').replace(/\s+/g, ' ').trim();
};
const wide = [];
for (const el of column.querySelectorAll('table, img, svg')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || fits(r) || wide.some(outer => outer.contains(el))) continue;
    let ok = false;
    for (let a = el.parentElement; a && a !== column && !ok; a = a.parentElement) {
        ok = scrolls(a) && fits(a.getBoundingClientRect());
    }
    if (!ok) wide.push(el);
}
const tooWide = wide.map(el => `<${el.tagName.toLowerCase()}> ${Math.round(el.getBoundingClientRect().width)}`
    + ` px wide in a ${Math.round(box.width)} px column: "${label(el).slice(0, 60)}"`);
if (box.right > document.documentElement.clientWidth + 1) {
    tooWide.push(`the text column itself reaches ${Math.round(box.right)} px in a `
        + `${document.documentElement.clientWidth} px window`);
}
return {raw_tables: rawTables, too_wide: tooWide};
"""


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


def settle(browser) -> None:
    """Let the page reach its final look: no CSS transitions (the theme slides its sidebars in and out
    when the width changes), every image decoded, and two frames drawn since."""
    browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        if (!document.getElementById('no-transitions')) {
            const style = document.createElement('style');
            style.id = 'no-transitions';
            style.textContent = '*, *::before, *::after '
                + '{transition: none !important; animation: none !important}';
            document.head.append(style);
        }
        Promise.all([...document.images].map(img => img.decode().catch(() => null)))
            .then(() => requestAnimationFrame(() => requestAnimationFrame(() => done())));
        """
    )


def layout_problems(browser) -> dict[str, list[str]]:
    """What LAYOUT_PROBLEMS finds on the page open in the browser."""
    settle(browser)
    return browser.execute_script(LAYOUT_PROBLEMS)


def set_viewport(browser, width: int, height: int) -> None:
    """Size the page's viewport exactly (a headless window is never narrower than 500 px)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    settle(browser)


def save_full_page(browser, width: int, path: Path) -> None:
    """A screenshot of the whole page (up to MAX_SCREENSHOT_HEIGHT) in a viewport `width` px wide."""
    set_viewport(browser, width, 1000)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    set_viewport(browser, width, min(height, MAX_SCREENSHOT_HEIGHT))
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.execute_script("return [window.innerWidth, window.scrollX]") == [width, 0]
    browser.save_screenshot(str(path))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: Path(page).name)
def test_page_has_no_raw_tables_and_nothing_wider_than_its_column(page, browser, server, screenshots):
    browser.get(f"{server}/{page}.html")
    try:
        for width in WIDTHS:
            save_full_page(browser, width, screenshots / f"{Path(page).name}-{width}.png")
            if width == NARROW:
                found = layout_problems(browser)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    faults = [f"a markdown table that did not render: {line[:160]!r}" for line in found["raw_tables"]]
    faults += [f"at {NARROW} px, without a scroll container: {what}" for what in found["too_wide"]]
    if faults:
        pytest.fail(f"{page}.html:\n  " + "\n  ".join(faults), pytrace=False)


# A page made to fail: a 300 px column with raw table lines, four things too wide for it, and what
# must pass (code, prose with pipes, a table in a scroll container, an image scaled down to fit).
BAD_PAGE = """<!doctype html>
<html><head><style>
  body { margin: 0 } article { width: 300px } .wide { width: 600px } .scroll { overflow-x: auto }
</style></head>
<body><main><article>
  <p>| model | accuracy |
  |---|---:|
  | lenet | 91% |</p>
  <p>Two lines of one more:<br>| <code>vgg</code> | 90% |<br>|:--|--:|</p>
  <pre>| a table | printed by a cell |\n|---|---|</pre>
  <div class="highlight"><span>| highlighted | code |</span></div>
  <p>Prose with pipes: |x| is the norm, and a | b is an or.</p>
  <table class="wide"><tr><td>a table too wide</td></tr></table>
  <div class="scroll"><table class="wide"><tr><td>a table that scrolls</td></tr></table></div>
  <div class="scroll wide"><table style="width: 900px"><tr><td>a scroller too wide</td></tr></table></div>
  <img alt="a plot too wide" width="800" height="10"
       src="data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==">
  <img alt="a plot scaled to fit" width="800" height="10" style="max-width: 100%"
       src="data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==">
  <svg width="500" height="10" aria-label="a figure too wide"></svg>
</article></main></body></html>
"""


def test_the_layout_checker_finds_what_it_should(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(BAD_PAGE)
    browser.get(page.as_uri())
    found = layout_problems(browser)
    assert found["raw_tables"] == [
        "| model | accuracy | |---|---:| | lenet | 91% |",  # one paragraph: its newlines are spaces
        "| | 90% |",  # the inline code is left out of the text checked
        "|:--|--:|",
    ]
    assert found["too_wide"] == [
        '<table> 600 px wide in a 300 px column: "a table too wide"',
        '<table> 900 px wide in a 300 px column: "a scroller too wide"',
        '<img> 800 px wide in a 300 px column: "a plot too wide"',
        '<svg> 500 px wide in a 300 px column: "a figure too wide"',
    ]
    # A column wider than the window: everything fits in it, and the page still scrolls sideways.
    page.write_text('<!doctype html><body style="margin: 0"><main><article style="width: 3000px">'
                    "<p>text</p></article></main></body>")  # fmt: skip
    browser.get(page.as_uri())
    found = layout_problems(browser)
    assert found["raw_tables"] == []
    assert len(found["too_wide"]) == 1
    assert re.fullmatch(r"the text column itself reaches 3000 px in a \d+ px window", found["too_wide"][0])


def test_the_speed_page_quotes_the_measured_numbers():
    """Every number in the tables below the speed page's '## Results' comes from the bench's table."""
    page = (ROOT / "book" / "speed.md").read_text()
    measured = (ROOT / "bench" / "results" / "speed.md").read_text()
    number = r"\d[\d,]*(?:\.\d+)?"
    results = page[page.index("\n## Results\n") :]
    rows = [line for line in results.splitlines() if line.startswith("|") and "---" not in line]
    assert len(rows) > 20, "expected the results and the profile as tables"
    quoted = {n for row in rows for n in re.findall(number, row)}
    missing = sorted(quoted - set(re.findall(number, measured)))
    assert not missing, f"book/speed.md quotes numbers that bench/results/speed.md does not hold: {missing}"


# The state of a chapter's exercises: each solution and hint, and whether its content is shown.
EXERCISE_STATE = r"""
const shown = box => getComputedStyle(box.querySelector('.admonition-title ~ *')).visibility !== 'hidden';
return {
    exercises: document.querySelectorAll('div.exercise').length,
    hints: [...document.querySelectorAll('div.exercise div.hint.dropdown')].map(shown),
    solutions: [...document.querySelectorAll('div.solution.dropdown')].map(shown),
    titles: [...document.querySelectorAll('div.solution .admonition-title')].map(t => t.textContent.trim()),
};
"""


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_hints_and_solutions_are_folded_and_the_quiz_answers_a_click(notebook, browser, server):
    browser.get(f"{server}/notebooks/{notebook.stem}.html")
    settle(browser)
    state = browser.execute_script(EXERCISE_STATE)
    assert state["exercises"] >= 5
    assert len(state["hints"]) == len(state["solutions"]) == state["exercises"]
    assert not any(state["hints"]) and not any(state["solutions"]), "hints and solutions start folded"
    assert all(re.match(r"Solution to\s*Exercise \d+", title) for title in state["titles"]), state["titles"]
    browser.execute_script("document.querySelector('div.solution .admonition-title').click()")
    settle(browser)
    assert browser.execute_script(EXERCISE_STATE)["solutions"][0], "a click on its title shows a solution"

    buttons = browser.find_elements("css selector", ".MultipleChoiceQn .MCButton, .MCButton")
    assert buttons, f"{notebook.name}: no quiz question to click"
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", buttons[0])
    buttons[0].click()
    WebDriverWait(browser, 10).until(
        lambda b: b.execute_script(
            "return [...document.querySelectorAll('.Feedback')].some(f => f.textContent.trim())"
        )
    )
    verdict = buttons[0].get_attribute("class")
    assert "correctButton" in verdict or "incorrectButton" in verdict, verdict
