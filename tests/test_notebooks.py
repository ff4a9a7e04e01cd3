"""The committed chapters: executed on real data in the cpu profile, readable on the static site.

(nbval re-runs them in the smoke profile: see the Makefile's test target.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
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


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_structure(notebook):
    cells = load(notebook)["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    first = "".join(code[0]["source"])
    assert "google.colab" in first and "pip install" in first, "first code cell installs d2lcnn on Colab"
    assert not code[0].get("outputs"), "the Colab cell does nothing elsewhere"
    html = [
        t
        for c in code
        for o in c.get("outputs", [])
        for m, t in o.get("data", {}).items()
        if m == "text/html"
    ]
    assert any("d2lcnn-trace" in "".join(t) for t in html), "a shape-trace table"
    pngs = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3, "curves, predictions and a confusion matrix"
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    exercises = markdown.split("Exercises", 1)
    assert len(exercises) == 2, "an Exercises section"
    assert len(re.findall(r"^\s*\d+\.\s", exercises[1], re.M)) >= 5, "at least five exercises"
