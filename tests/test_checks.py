"""The classroom kit inside the chapters: every exercise has a hint and a folded solution, at least three
per chapter check themselves, each check says right or wrong without the answer, and every chapter ends
with a quiz. (That each check passes on the solution and fails on the stub is graded end to end by
otter in test_classroom.py; nbval compares the self-check cells' "Right" with a fresh run.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from torch import nn

from d2lcnn.checks import QUIZZES, Verdict, Wrong, all_checks, check, expect_model, expect_number, register
from d2lcnn.classroom import Exercise, check_call, split_exercises
from d2lcnn.errors import UnknownNameError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def exercises(notebook: Path) -> list[Exercise]:
    cells = nbformat.read(notebook, as_version=4).cells
    return [item for item in split_exercises(cells) if isinstance(item, Exercise)]


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def self_checks(notebook: Path) -> list[tuple[str, object]]:
    """(exercise label, self-check cell) for every self-check of the chapter."""
    return [
        (exercise.label, cell)
        for exercise in exercises(notebook)
        for cell in exercise.solution
        if "self-check" in tags(cell)
    ]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_folded_hint_and_a_folded_solution(notebook):
    found = exercises(notebook)
    assert len(found) >= 5, f"{notebook.name}: expected the chapter's exercises as exercise directives"
    for exercise in found:
        label, solution = exercise.label, exercise.solution
        assert re.search(r"\{hint\}\n:class: dropdown", exercise.cell.source), f"{label}: no folded hint"
        assert solution, f"{label}: no solution after the exercise"
        opening = solution[0].source
        assert re.search(rf"\{{solution(-start)?\}} {re.escape(label)}\n:class: dropdown", opening), label
        if "{solution-start}" in opening:
            assert "{solution-end}" in solution[-1].source, f"{label}: solution-start without solution-end"


def test_exercise_labels_are_unique_across_the_book():
    labels = [exercise.label for nb in NOTEBOOKS for exercise in exercises(nb)]
    assert len(labels) == len(set(labels)), sorted(label for label in labels if labels.count(label) > 1)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_at_least_three_exercises_per_chapter_check_themselves(notebook):
    checked = {label for label, _ in self_checks(notebook)}
    assert len(checked) >= 3, f"{notebook.name}: self-checked exercises {sorted(checked)}"
    for label, cell in self_checks(notebook):
        check_label, names = check_call(cell)
        assert check_label == label, f"the check in exercise {label} is {check_label!r}"
        assert names, f"{label}: the self-check passes no answer"
        assert "nbval-ignore-output" not in tags(cell), f"{label}: nbval must compare the check's verdict"
    for exercise in exercises(notebook):
        for cell in exercise.solution:
            if "answer" in tags(cell):
                stub = cell.metadata["d2lcnn"]["stub"]
                assigned = set(re.findall(r"^(\w+) = \.\.\.", stub, re.M))
                assert assigned, f"{exercise.label}: the stub must assign the answer to ..."


def test_every_registered_check_is_used_by_exactly_one_exercise():
    used = [label for nb in NOTEBOOKS for label, _ in self_checks(nb)]
    assert sorted(used) == sorted(all_checks()), "registered checks and the chapters' self-checks differ"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_ends_with_a_quiz_of_about_five_questions(notebook):
    cells = nbformat.read(notebook, as_version=4).cells
    calls = [re.search(r'quiz\("(\w+)"\)', c.source) for c in cells if c.cell_type == "code"]
    names = [call.group(1) for call in calls if call]
    assert len(names) == 1, f"{notebook.name}: expected one quiz(...) cell"
    questions = json.loads((QUIZZES / f"{names[0]}.json").read_text())
    assert 4 <= len(questions) <= 8
    assert any(q["type"] == "multiple_choice" for q in questions), "the browser test clicks a multiple choice"
    for question in questions:
        assert question["type"] in ("multiple_choice", "many_choice", "numeric"), question["question"]
        assert any(answer.get("correct") for answer in question["answers"]), question["question"]
        assert all(answer.get("feedback") for answer in question["answers"]), question["question"]


def test_a_stub_is_not_an_answer():
    verdict = check("lenet-kernel", ...)
    assert not verdict and "replace the ..." in verdict.message


def test_a_wrong_network_is_pointed_at_its_first_wrong_layer_without_the_answer():
    from d2lcnn.models import create

    verdict = check("lenet-kernel", create("lenet"))
    assert not verdict
    assert "layer 1" in verdict.message and "Conv2d" in verdict.message and "6 x 1 x 5 x 5" in verdict.message
    assert "3 x 3" not in verdict.message  # the shape the answer needs is not given away


def test_a_check_that_raises_on_the_answer_says_how_instead_of_a_traceback():
    broken = nn.Sequential(nn.Conv2d(1, 6, 3), nn.Flatten(), nn.Linear(5, 10))
    verdict = check("lenet-kernel", broken)
    assert not verdict and "InputShapeError" in verdict.message


def test_a_number_check_says_too_high_or_too_low_and_never_the_number():
    @register("test-number")
    def number(answer):
        expect_number(answer, 117_078, what="the count", look_at="count each layer")
        return "well counted"

    try:
        low, high, text = (
            check("test-number", 1000),
            check("test-number", 10**6),
            check("test-number", "many"),
        )
        assert "too low" in low.message and "too high" in high.message and "not str" in text.message
        assert not any("117" in v.message for v in (low, high, text))
        assert check("test-number", 117_078) == Verdict("test-number", True, "well counted")
    finally:
        all_checks()  # the registry is shared: drop the test's check again
        from d2lcnn import checks

        del checks.CHECKS["test-number"]


def test_expect_model_notices_a_missing_layer():
    answer = nn.Sequential(nn.Conv2d(1, 4, 3))
    reference = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1))  # the same output shape
    with pytest.raises(Wrong, match="fewer than asked for"):
        expect_model(answer, reference, (1, 1, 8, 8), look_at="x")


def test_an_unknown_check_suggests_the_closest_label():
    with pytest.raises(UnknownNameError, match="Did you mean 'lenet-depth'"):
        check("lenet-depht", 1)


def test_the_teachers_table_lists_every_exercise_as_the_chapters_hold_it():
    """book/_exercise_table.md (written by scripts/execute_notebooks.py) is what the notebooks say now."""
    from d2lcnn.classroom import exercise_table

    committed = (ROOT / "book" / "_exercise_table.md").read_text()
    assert committed == exercise_table(NOTEBOOKS).to_markdown() + "\n", "run scripts/execute_notebooks.py"


def glossary_terms() -> dict[str, str]:
    """The glossary's terms and their definitions."""
    text = (ROOT / "book" / "glossary.md").read_text()
    block = text[text.index("```{glossary}") : text.rindex("```")]
    return dict(re.findall(r"^(\S[^\n]*)\n((?:  [^\n]*\n?)+)", block, re.M))


def test_the_glossary_gives_the_korean_word_for_the_core_terms():
    terms = glossary_terms()
    korean = {
        "convolution": "합성곱",
        "pooling": "풀링",
        "feature map": "특징 맵",
        "overfitting": "과적합",
        "batch normalisation": "배치 정규화",
        "residual connection": "잔차 연결",
    }
    for term, word in korean.items():
        assert word in terms[term], term
    source = ROOT.parent / "shared" / "seeds" / "003_fb5b9703f8f1e3fb.txt"
    if source.exists():  # the words marked (source) are the source write-up's own
        for term, definition in terms.items():
            if "**(source)**" in definition:
                word = re.search(r"Korean:\s+(\S+)", definition).group(1)
                assert word in source.read_text(), f"{term}: {word} is not in the source write-up"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_links_its_terms_to_the_glossary(notebook):
    text = "\n".join(
        c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "markdown"
    )
    linked = {m.group(2) or m.group(1) for m in re.finditer(r"\{term\}`([^`<]+?)(?:\s*<([^`>]+)>)?`", text)}
    assert len(linked) >= 2, f"{notebook.name} links {sorted(linked)}"
    unknown = {term.lower() for term in linked} - {term.lower() for term in glossary_terms()}
    assert not unknown, f"{notebook.name} links terms the glossary lacks: {sorted(unknown)}"
