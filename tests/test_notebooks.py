"""The committed chapters: executed on real data in the cpu profile, readable on the static site.

(nbval re-runs them in the smoke profile: see the Makefile's test target.)"""

from __future__ import annotations

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
    exercises = markdown.split("Exercises", 1)
    assert len(exercises) == 2, "an Exercises section"
    assert len(re.findall(r"^\s*\d+\.\s", exercises[1], re.M)) >= 5, "at least five exercises"


@pytest.mark.parametrize("notebook", ARCHITECTURE_CHAPTERS, ids=lambda p: p.stem)
def test_architecture_chapter_shows_trace_curves_predictions_and_confusion(notebook):
    code = [c for c in load(notebook)["cells"] if c["cell_type"] == "code"]
    assert any("d2lcnn-trace" in t for t in outputs_of(code, "text/html")), "a shape-trace table"
    assert len(outputs_of(code, "image/png")) >= 3, "curves, predictions and a confusion matrix"


def test_comparison_chapter_shows_every_model_in_one_table_and_a_plot():
    from d2lcnn.compare import DEFAULT_MODELS

    code = [c for c in load(ROOT / "notebooks" / f"{COMPARISON}.ipynb")["cells"] if c["cell_type"] == "code"]
    tables = [t for t in outputs_of(code, "text/markdown") if "FLOPs/image" in t]
    assert tables, "the results table of d2lcnn compare"
    rows = {line.split("|")[1].strip().strip("`") for line in tables[-1].splitlines() if line.startswith("|")}
    assert set(DEFAULT_MODELS) <= rows, f"missing from the table: {set(DEFAULT_MODELS) - rows}"
    assert outputs_of(code, "image/png"), "accuracy against FLOPs and time"
