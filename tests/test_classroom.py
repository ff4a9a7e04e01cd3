"""The classroom edition, end to end: `d2lcnn classroom` (what `make classroom` runs) writes each chapter's
student notebook and autograder with otter-grader; otter grades the solution notebook with full marks and
the untouched student notebook with zero. The notebooks run in the smoke profile the tests use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from d2lcnn.classroom import autograder_zip, master_notebook, student_markdown
from d2lcnn.cli import main
from d2lcnn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

EXERCISE = """````{exercise} Width
:label: toy-width

Double the channels of {term}`LeNet's convolutions <convolution>` {cite}`lecun1998gradient`.

```{hint}
:class: dropdown
Count each layer.
```
````"""


def toy_chapter(stub: str | None = "width = ...  # a number") -> nbformat.NotebookNode:
    new_md, new_code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    answer = new_code("width = 2 * 6", metadata={"tags": ["answer"]})
    if stub:
        answer.metadata["d2lcnn"] = {"stub": stub}
    check = new_code('check("toy-width", width)', metadata={"tags": ["self-check"]})
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        new_md("# 1. Toy\n\nA {term}`pooling` layer."),
        new_md(EXERCISE),
        new_md("````{solution-start} toy-width\n:class: dropdown\n````\nTwice six."),
        answer,
        check,
        new_code("print(width)"),
        new_md("It is 12.\n\n````{solution-end}\n````"),
        new_md("````{exercise} Think\n:label: toy-think\n\nWhy?\n````"),
        new_md("```{solution} toy-think\n:class: dropdown\nBecause.\n```"),
    ]
    return notebook


def sources(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_the_master_notebook_grades_self_checked_exercises_and_drops_other_solutions():
    cells = sources(master_notebook(toy_chapter(), "toy"))
    text = "\n".join(source for _, source in cells)
    assert cells[0][0] == "raw" and cells[0][1].startswith("# ASSIGNMENT CONFIG\nname: toy")
    assert ("raw", "# BEGIN QUESTION\nname: toy-width\npoints: 1") in cells
    assert "# BEGIN SOLUTION NO PROMPT\nwidth = 2 * 6\n# END SOLUTION" in text
    assert '""" # BEGIN PROMPT\nwidth = ...  # a number\n""" # END PROMPT' in text
    assert "verdict = check('toy-width', width)\n    assert verdict.passed" in text
    assert "print(width)" not in text and "It is 12" not in text and "Because." not in text
    assert ("markdown", "A pooling layer.") in [(kind, src.split("\n\n")[-1]) for kind, src in cells]
    assert "{term}" not in text and "{solution" not in text and "{exercise}" not in text


def test_an_exercise_becomes_bold_text_with_its_hint_folded_in_html_details():
    text = student_markdown(EXERCISE, number="1.3")
    assert text.startswith(
        "**Exercise 1.3: Width.** Double the channels of LeNet's convolutions [lecun1998gradient]."
    )
    assert "<details><summary>Hint</summary>\n\nCount each layer.\n\n</details>" in text
    assert ":label:" not in text and ":class:" not in text


def test_an_answer_cell_without_a_stub_is_an_error_that_names_the_exercise():
    with pytest.raises(ConfigError, match="toy-width.*no stub"):
        master_notebook(toy_chapter(stub=None), "toy")


def test_the_command_refuses_to_overwrite_a_classroom_folder(tmp_path, capsys):
    (tmp_path / "01_lenet").mkdir()
    assert main(["classroom", str(NOTEBOOKS[0]), "--out", str(tmp_path)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["classroom", str(tmp_path / "nothing.ipynb"), "--out", str(tmp_path)]) == 2
    assert "not a chapter notebook" in capsys.readouterr().err


@pytest.fixture(scope="module")
def classroom(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classroom")
    command = [
        sys.executable,
        "-m",
        "d2lcnn",
        "classroom",
        *map(str, NOTEBOOKS),
        "--out",
        str(out),
        "--overwrite",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def grade(classroom: Path, chapter: str, notebook: Path) -> dict[str, tuple[float, float]]:
    """Otter's score of `notebook` with the chapter's autograder: {question: (score, max_score)}."""
    out = notebook.parent / f"graded-{notebook.parent.name}"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "D2LCNN_PROFILE": "smoke", "D2LCNN_PROGRESS": "0", "MPLBACKEND": "Agg"}
    zip_path = autograder_zip(classroom / chapter)
    command = [sys.executable, "-m", "otter", "run", "-a", str(zip_path), "-o", str(out), str(notebook)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tests = json.loads((out / "results.json").read_text())["tests"]
    return {t["name"]: (t["score"], t["max_score"]) for t in tests if "max_score" in t}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_otter_gives_the_solution_full_marks_and_the_blank_student_notebook_zero(classroom, notebook):
    chapter = notebook.stem
    student = nbformat.read(classroom / chapter / "student" / f"{chapter}.ipynb", as_version=4)
    text = "\n".join(cell.source for cell in student.cells)
    assert "{solution" not in text and "BEGIN SOLUTION" not in text and "grader.check(" in text
    solution = grade(classroom, chapter, classroom / chapter / "autograder" / f"{chapter}.ipynb")
    blank = grade(classroom, chapter, classroom / chapter / "student" / f"{chapter}.ipynb")
    assert len(solution) >= 3 and set(solution) == set(blank)
    assert all(score == maximum for score, maximum in solution.values()), solution
    assert all(score == 0 for score, _ in blank.values()), blank


def test_an_exercise_that_wants_a_gpu_says_so_in_the_student_edition():
    gpu_exercise = EXERCISE.replace(":label: toy-width\n", ":label: toy-width\n:class: gpu\n")
    text = student_markdown(gpu_exercise, number="1.3")
    assert text.startswith("**Exercise 1.3: Width (full version on a GPU).**")
    assert ":class:" not in text
