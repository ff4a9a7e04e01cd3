"""The committed chapters: executed on real data in the cpu profile, readable on the static site.

(nbval re-runs them in the smoke profile: see the Makefile's test target.)"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
COMPARISON = "10_comparison"  # every architecture side by side: a table and a plot, no single model to trace
ARCHITECTURE_CHAPTERS = [n for n in NOTEBOOKS if n.stem != COMPARISON]
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:work|root|home|tmp|usr|opt|Users|private)/[\w./-]+")


def load(notebook: Path) -> dict:
    return json.loads(notebook.read_text())


def output_texts(cell: dict) -> list[str]:
    texts = []
    for output in cell.get("outputs", []):
        if "text" in output:
            texts.append("".join(output["text"]))
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/"):
                texts.append("".join(value) if isinstance(value, list) else value)
        if output.get("output_type") == "error":
            texts.append("\n".join(output.get("traceback", [])))
    return texts


def test_there_are_five_chapters():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_is_committed_executed_in_the_cpu_profile_without_errors(notebook):
    cells = [c for c in load(notebook)["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in cells[1:]), "every cell after the Colab one ran"
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    everything = "\n".join(t for c in cells for t in output_texts(c))
    assert "profile: cpu" in everything, "committed outputs come from the cpu profile"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_outputs_show_no_path_of_the_machine(notebook):
    for cell in load(notebook)["cells"]:
        for text in output_texts(cell):
            assert not ABSOLUTE_PATH.search(text), ABSOLUTE_PATH.search(text).group(0)


def outputs_of(code: list[dict], mime: str) -> list[str]:
    return [
        "".join(t) if isinstance(t, list) else t
        for c in code
        for o in c.get("outputs", [])
        for m, t in o.get("data", {}).items()
        if m == mime
    ]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_has_a_colab_cell_and_exercises(notebook):
    cells = load(notebook)["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    first = "".join(code[0]["source"])
    assert "google.colab" in first and "pip install" in first, "first code cell installs d2lcnn on Colab"
    assert not code[0].get("outputs"), "the Colab cell does nothing elsewhere"
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert re.search(r"^## Exercises$", markdown, re.M), "an Exercises section"
    # each one an exercise directive; test_checks.py checks their hints and solutions
    assert len(re.findall(r"^`{3,}\{exercise\}", markdown, re.M)) >= 5, "at least five exercises"


@pytest.mark.parametrize("notebook", ARCHITECTURE_CHAPTERS, ids=lambda p: p.stem)
def test_architecture_chapter_shows_trace_curves_predictions_and_confusion(notebook):
    code = [c for c in load(notebook)["cells"] if c["cell_type"] == "code"]
    assert any("d2lcnn-trace" in t for t in outputs_of(code, "text/html")), "a shape-trace table"
    assert len(outputs_of(code, "image/png")) >= 3, "curves, predictions and a confusion matrix"


def html_table_rows(html: str) -> list[list[str]]:
    """The cells of every row of the HTML tables in `html` (header rows included), tags stripped."""
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S) for row in rows]
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in row] for row in cells]


def test_comparison_chapter_trains_every_model_well_above_chance_in_one_table_and_a_plot():
    from d2lcnn.compare import DEFAULT_MODELS

    code = [c for c in load(ROOT / "notebooks" / f"{COMPARISON}.ipynb")["cells"] if c["cell_type"] == "code"]
    tables = [t for t in outputs_of(code, "text/html") if ">FLOPs/image<" in t and ">Test acc<" in t]
    assert len(tables) == 1, "one results table"
    rows = html_table_rows(tables[0])
    header, body = rows[0], rows[1:]
    accuracy = {row[0]: float(row[header.index("Test acc")].rstrip("%")) for row in body}
    missing = set(DEFAULT_MODELS) - set(accuracy)
    assert not missing, f"missing from the table: {missing}"
    at_chance = {model: acc for model, acc in accuracy.items() if acc < 25}  # 10 classes: chance is 10%
    assert not at_chance, f"models that did not learn (test accuracy %): {at_chance}"
    cells = load(ROOT / "notebooks" / f"{COMPARISON}.ipynb")["cells"]
    exercises = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises"))
    body = [c for c in cells[:exercises] if c["cell_type"] == "code"]  # the exercises may plot more
    assert len(outputs_of(body, "image/png")) == 1, "one plot: accuracy against FLOPs and time"
    assert not any("subprocess" in "".join(c["source"]) for c in code), "no subprocess boilerplate"


def fast_network_results(notebook: str, model: str) -> tuple[str, str]:
    """(accuracy, seconds) as the chapter prints them: '<model> on CIFAR-10: test accuracy X% ... and Y s'."""
    code = [c for c in load(ROOT / "notebooks" / f"{notebook}.ipynb")["cells"] if c["cell_type"] == "code"]
    printed = "\n".join(t for c in code for t in output_texts(c))
    pattern = rf"{model} on CIFAR-10: test accuracy ([0-9.]+)% after \d+ epochs and (\d+) s"
    found = re.findall(pattern, printed)
    assert found, f"{notebook} prints no '{model} on CIFAR-10: test accuracy ... s' line"
    return found[-1]


@pytest.mark.parametrize(
    ("notebook", "model"), [("03_vgg", "fast_vgg"), ("04_resnet", "fast_resnet")], ids=["vgg", "resnet"]
)
def test_the_fast_network_of_the_vgg_and_resnet_chapters_reaches_90_percent_on_cifar10(notebook, model):
    accuracy, _ = fast_network_results(notebook, model)
    assert float(accuracy) >= 90.0


def test_the_speed_page_quotes_the_fast_networks_as_their_chapters_printed_them():
    page = " ".join((ROOT / "book" / "speed.md").read_text().split())
    for notebook, model in [("03_vgg", "fast_vgg"), ("04_resnet", "fast_resnet")]:
        accuracy, seconds = fast_network_results(notebook, model)
        assert f"`{model}` reached {accuracy}% in {seconds} s" in page or (
            f"`{model}` {accuracy}% in {seconds} s" in page
        ), f"book/speed.md should quote {model}'s stored run of {notebook}: {accuracy}% in {seconds} s"


NUMBER = re.compile(r"(?<![\w.-])\d[\d,]*(?:\.\d+)?")


def quotes_of_the_stored_run(cells: list[dict]) -> list[str]:
    """Prose that quotes the chapter's stored run: each paragraph saying 'stored with this page', with the
    list that follows it, without inline code and roles (code and citations are not results)."""
    quotes = []
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        paragraphs = [" ".join(p.split()) for p in "".join(cell["source"]).split("\n\n")]
        for i, paragraph in enumerate(paragraphs):
            if "stored with this page" in paragraph:
                its_list = itertools.takewhile(lambda p: p.startswith("- "), paragraphs[i + 1 :])
                quotes.append(re.sub(r"(\{[\w:-]+\})?`[^`]*`", "", " ".join([paragraph, *its_list])))
    return quotes


def unprinted_numbers(cells: list[dict]) -> list[str]:
    """The numbers that prose about the stored run quotes and no output of the chapter shows."""
    printed = {n.rstrip(",") for c in cells for t in output_texts(c) for n in NUMBER.findall(t)}
    quoted = {n.rstrip(",") for quote in quotes_of_the_stored_run(cells) for n in NUMBER.findall(quote)}
    return sorted(quoted - printed)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_about_the_stored_run_quotes_only_numbers_the_chapter_printed(notebook):
    missing = unprinted_numbers(load(notebook)["cells"])
    assert not missing, f"prose saying 'stored with this page' quotes numbers no output shows: {missing}"


def test_the_stored_run_check_finds_a_stale_number():
    printed = {"output_type": "stream", "text": ["acc 61.3% in 533 s"]}
    prose = "In the run stored with this page: 61.3% in 557 s.\n\n- `fit(epochs=3)`: 533 s\n\nLater: 99%"
    cells = [{"cell_type": "code", "outputs": [printed]}, {"cell_type": "markdown", "source": [prose]}]
    assert unprinted_numbers(cells) == ["557"]  # the list counts; inline code and later paragraphs do not


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_has_a_summary_and_no_table_left_as_raw_markdown(notebook):
    cells = load(notebook)["cells"]
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert re.search(r"^## Summary$", markdown, re.M), "a Summary section"
    code = [c for c in cells if c["cell_type"] == "code"]
    raw = [t for t in outputs_of(code, "text/markdown") if re.search(r"^\|.*\|\s*$", t, re.M)]
    assert not raw, f"a pipe table shown as markdown output (use d2lcnn.show.Table): {raw[0][:200]}"


# Chapter 5 fine-tunes chapter 4's ResNet-18, which chapter 4 draws.
DRAWN_CHAPTERS = [n for n in ARCHITECTURE_CHAPTERS if n.stem != "05_transfer_learning"]


@pytest.mark.parametrize("notebook", DRAWN_CHAPTERS, ids=lambda p: p.stem)
def test_architecture_chapter_draws_its_network_from_the_model(notebook):
    code = [c for c in load(notebook)["cells"] if c["cell_type"] == "code"]
    drawn = [c for c in code if re.search(r"^draw\(", "".join(c["source"]), re.M)]
    assert drawn, "a cell that draws the network with d2lcnn.diagram.draw"
    assert outputs_of(drawn, "image/png"), "the diagram's image is in the stored outputs"


def code_cell_with(notebook: Path, text: str) -> str:
    """The source of the one code cell of `notebook` that contains `text`."""
    sources = ["".join(c["source"]) for c in load(notebook)["cells"] if c["cell_type"] == "code"]
    found = [s for s in sources if text in s]
    assert len(found) == 1, f"{notebook.name}: {len(found)} code cells contain {text!r}"
    return found[0]


def test_a_missing_stl10_does_not_stop_the_alexnet_chapter(tmp_path, monkeypatch, capsys):
    """On Colab the full profile tries STL-10; if the download fails the cell says so and the chapter
    goes on ("Run all" reaches the exercises)."""
    from types import SimpleNamespace

    from d2lcnn import datafiles

    def offline(info, root, missing):
        raise datafiles._not_found(info, root, missing, "downloading it through torchvision failed (offline)")

    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path))
    monkeypatch.setattr(datafiles, "_torchvision_download", offline)
    cell = code_cell_with(ROOT / "notebooks" / "02_alexnet.ipynb", 'load("stl10"')
    namespace = {"P": SimpleNamespace(name="full", stl10_epochs=30, batch_size=128, lr=0.01)}
    exec("from d2lcnn.data import load\n" + cell, namespace)  # noqa: S102 - the chapter's own cell
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("Not run: STL-10 is not available") and "offline" in printed[-1]
    assert namespace["stl10"] is None
