"""The classroom edition of the chapters: a student notebook and an autograder for each, made by otter-grader.

A chapter marks its exercises for the site (sphinx-exercise ``exercise`` directives, folded hints, folded
solutions between ``solution-start`` and ``solution-end``) and for this module: a solution's *answer cell*
(tag ``answer``) carries the student's stub in its metadata (``d2lcnn.stub``), and a *self-check cell*
(tag ``self-check``) calls ``check("<label>", answer, ...)``. From that, `master_notebook` writes an
Otter Assign master notebook: every self-checked exercise becomes a graded question whose test is the
same check, every other solution is removed and leaves an empty cell. ``otter assign`` then writes the
student notebook (stubs instead of answers, ``grader.check`` cells for feedback) and the autograder zip;
``otter run -a <zip> <notebook>`` grades a notebook on the teacher's machine, no Docker needed.

Why otter-grader and not nbgrader: a chapter stays a plain notebook (no course database, no Jupyter
server extension), one zip grades locally, on Gradescope or in CI, and students see each check's feedback
while they work.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .errors import ConfigError, DataNotFoundError
from .show import Table

EXERCISE = re.compile(r"^(`{3,})\{exercise\}[ \t]*(?P<title>[^\n]*)\n(?P<body>.*?)^\1[ \t]*$", re.S | re.M)
HINT = re.compile(r"^(`{3,})\{hint\}[^\n]*\n(?P<body>.*?)^\1[ \t]*$", re.S | re.M)
SOLUTION = re.compile(r"^(`{3,})\{solution\}.*?^\1[ \t]*$", re.S | re.M)
OPTION = re.compile(r"^:[\w-]+:.*$\n?", re.M)
GPU = re.compile(r"^:class:.*\bgpu\b", re.M)  # an exercise whose full version wants a GPU
CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")  # {cite}`key` -> [key]: the site's bibliography names it
TERM = re.compile(r"\{term\}`(?:([^`<]+?)\s*<[^`>]+>|([^`]+))`")
INIT = 'import otter  # the grader (pip install otter-grader)\n\ngrader = otter.Notebook("{name}.ipynb")'
PROMPT = '""" # BEGIN PROMPT\n{stub}\n""" # END PROMPT'
ASSIGNMENT_CONFIG = """# ASSIGNMENT CONFIG
name: {name}
init_cell: false
check_all_cell: true
export_cell: false
run_tests: false
solutions_pdf: false
generate: true
tests:
  files: false
  ok_format: false
"""


def _tags(cell: NotebookNode) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def exercise_label(cell: NotebookNode) -> str | None:
    """The label of the exercise a markdown cell states, or None."""
    match = EXERCISE.search(cell.source) if cell.cell_type == "markdown" else None
    label = re.search(r"^:label:\s*(\S+)", match.group("body"), re.M) if match else None
    return label.group(1) if label else None


@dataclass
class Exercise:
    """One exercise of a chapter: its markdown cell, the cells between it and its solution that belong to
    the prompt (a cell the prompt calls "the cell below"), and the cells of its solution."""

    cell: NotebookNode
    prompt: list[NotebookNode] = field(default_factory=list)
    solution: list[NotebookNode] = field(default_factory=list)

    @property
    def label(self) -> str:
        return exercise_label(self.cell)


def split_exercises(cells: list[NotebookNode]) -> list[NotebookNode | Exercise]:
    """The chapter's cells, with each exercise and the cells that belong to it grouped as an `Exercise`."""
    items: list[NotebookNode | Exercise] = []
    current: Exercise | None = None  # the exercise whose solution has not started yet
    solution: list[NotebookNode] | None = None
    for cell in cells:
        text = cell.source if cell.cell_type == "markdown" else ""
        if solution is not None:  # inside solution-start ... solution-end
            solution.append(cell)
            if "{solution-end}" in text:
                solution = None
        elif exercise_label(cell):
            current = Exercise(cell)
            items.append(current)
        elif current and ("{solution-start}" in text or "{solution}" in text):
            current.solution.append(cell)
            if "{solution-start}" in text and "{solution-end}" not in text:
                solution = current.solution
            current = None
        elif current and not text.startswith("#"):
            current.prompt.append(cell)
        else:
            current = None
            items.append(cell)
    return items


def student_markdown(text: str, number: str | None = None) -> str:
    """Markdown for Jupyter: the exercise fence as a bold heading, its hint folded in <details>, solutions
    dropped, glossary links as plain words and citations as [key]."""

    def exercise(match: re.Match) -> str:
        gpu = " (full version on a GPU)" if GPU.search(match.group("body")) else ""
        body = OPTION.sub("", match.group("body"), count=0).strip()
        body = HINT.sub(lambda h: _details(OPTION.sub("", h.group("body")).strip()), body)
        title = f": {match.group('title').strip()}" if match.group("title").strip() else ""
        return f"**Exercise {number}{title}{gpu}.** {body}"

    text = CITE.sub(r"[\1]", SOLUTION.sub("", EXERCISE.sub(exercise, text)))
    return TERM.sub(lambda m: (m.group(1) or m.group(2)).strip(), text).strip()


def _details(hint: str) -> str:
    return f"<details><summary>Hint</summary>\n\n{hint}\n\n</details>"


def check_call(cell: NotebookNode) -> tuple[str, list[str]]:
    """The label and the variable names of a self-check cell's ``check("<label>", name, ...)``."""
    try:
        call = ast.parse(cell.source).body
        assert len(call) == 1 and isinstance(call[0], ast.Expr) and isinstance(call[0].value, ast.Call)
        label, *names = call[0].value.args
        return label.value, [name.id for name in names]
    except (AssertionError, AttributeError, SyntaxError, ValueError) as err:
        raise ConfigError(
            f"a self-check cell must be one call check('<label>', name, ...), not: {cell.source!r}"
        ) from err


def _test_cell(label: str, checks: list[tuple[str, list[str]]]) -> NotebookNode:
    names = sorted({name for _, args in checks for name in args})
    function = "test_" + re.sub(r"\W", "_", label)
    lines = [f"def {function}({', '.join(names)}):", "    from d2lcnn.checks import check", ""]
    for check_label, args in checks:
        lines += [
            f"    verdict = check({check_label!r}, {', '.join(args)})",
            "    assert verdict.passed, str(verdict)",
        ]
    return nbformat.v4.new_code_cell("\n".join([*lines, "", "", f"{function}({', '.join(names)})"]))


def _copy(cell: NotebookNode) -> NotebookNode:
    """A chapter cell for the student edition: markdown for Jupyter, code without its outputs."""
    if cell.cell_type == "markdown":
        return nbformat.v4.new_markdown_cell(student_markdown(cell.source))
    return nbformat.v4.new_code_cell(cell.source, metadata=copy.deepcopy(cell.metadata))


def _question(exercise: Exercise, number: str) -> list[NotebookNode]:
    """The exercise as Otter Assign cells: a graded question if its solution has answer cells, else the
    prompt and one empty cell for the student's work."""
    label, solution = exercise.label, exercise.solution
    prompt = [nbformat.v4.new_markdown_cell(student_markdown(exercise.cell.source, number))]
    prompt += [_copy(cell) for cell in exercise.prompt]
    answers = [c for c in solution if "answer" in _tags(c)]
    checks = [c for c in solution if "self-check" in _tags(c)]
    if not answers:
        has_code = any(c.cell_type == "code" for c in solution)
        work = nbformat.v4.new_code_cell("") if has_code else nbformat.v4.new_markdown_cell("*Your answer:*")
        return [*prompt, work]
    if not checks:
        raise ConfigError(f"exercise {label!r} has an answer cell but no self-check cell after it")
    raw = nbformat.v4.new_raw_cell
    cells = [raw(f"# BEGIN QUESTION\nname: {label}\npoints: 1"), *prompt]
    for answer in answers:
        stub = answer.metadata.get("d2lcnn", {}).get("stub")
        if not stub:
            raise ConfigError(f"the answer cell of exercise {label!r} has no stub (metadata d2lcnn.stub)")
        # Otter keeps the solution in the autograder's notebook and shows the prompt (our stub) to students.
        source = f"# BEGIN SOLUTION NO PROMPT\n{answer.source}\n# END SOLUTION\n{PROMPT.format(stub=stub)}"
        cells += [raw("# BEGIN SOLUTION"), nbformat.v4.new_code_cell(source), raw("# END SOLUTION")]
    cells += [nbformat.v4.new_code_cell(c.source) for c in checks]
    test = _test_cell(label, [check_call(c) for c in checks])
    return [*cells, raw("# BEGIN TESTS"), test, raw("# END TESTS"), raw("# END QUESTION")]


def exercise_number(chapter: str, count: int) -> str:
    """The number the site gives the `count`-th exercise of a chapter: "3.2" in 03_vgg (numbered table of
    contents), or just "2" in a notebook whose name does not start with its chapter number."""
    prefix = chapter.split("_")[0]
    return f"{int(prefix)}.{count}" if prefix.isdigit() else str(count)


def chapter_title(chapter: NotebookNode, name: str) -> str:
    """The chapter's first '# ' heading, numbered as the site numbers it: "3. VGG" for 03_vgg."""
    for cell in chapter.cells:
        heading = re.search(r"^# (.+)$", cell.source, re.M) if cell.cell_type == "markdown" else None
        if heading:
            prefix = name.split("_")[0]
            return (
                f"{int(prefix)}. {heading.group(1).strip()}" if prefix.isdigit() else heading.group(1).strip()
            )
    raise ConfigError(f"{name} has no '# ' title")


def master_notebook(chapter: NotebookNode, name: str) -> NotebookNode:
    """The Otter Assign master notebook of a chapter (outputs cleared)."""
    master = copy.deepcopy(chapter)
    cells = [nbformat.v4.new_raw_cell(ASSIGNMENT_CONFIG.format(name=name))]
    count = 0
    for item in split_exercises(chapter.cells):
        if isinstance(item, Exercise):
            count += 1
            cells += _question(item, exercise_number(name, count))
        elif "colab" in _tags(item):  # students on Colab install the grader too, then start it
            source = item.source.replace("%pip install -q ", "%pip install -q otter-grader ")
            cells.append(nbformat.v4.new_code_cell(source, metadata=copy.deepcopy(item.metadata)))
            cells.append(nbformat.v4.new_code_cell(INIT.format(name=name)))
        else:
            cells.append(_copy(item))
    for cell in cells:
        cell.pop("id", None)
    note = (
        f"*Student edition of chapter {chapter_title(chapter, name)}.* The worked solutions are removed. "
        "Write your answers in the cells under each exercise; an exercise with a `check(...)` cell tells you "
        "whether your answer is right, and its `grader.check(...)` cell runs the test that grades it."
    )
    master.cells = [cells[0], nbformat.v4.new_markdown_cell(note), *cells[1:]]
    master.nbformat_minor = 4
    return master


def write_classroom(chapters: list[Path], out: Path, overwrite: bool = False) -> list[Path]:
    """For each chapter, run Otter Assign on its master notebook into ``out/<chapter>/``: ``student/`` (the
    notebook to hand out) and ``autograder/`` (the zip that grades it, and the solution notebook).
    Refuses to replace an existing ``out/<chapter>`` unless `overwrite`. Returns the chapter folders."""
    missing = [str(p) for p in chapters if p.suffix != ".ipynb" or not p.is_file()]
    if missing:
        raise DataNotFoundError(
            f"not a chapter notebook: {', '.join(missing)}; pass e.g. notebooks/01_lenet.ipynb"
        )
    if importlib.util.find_spec("otter") is None:
        raise ConfigError("the classroom edition is made by otter-grader: pip install otter-grader")
    existing = [p.stem for p in chapters if (out / p.stem).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out}/ already has {', '.join(existing)}: pass --overwrite to replace them")
    written = []
    for path in chapters:
        master = master_notebook(nbformat.read(path, as_version=4), path.stem)
        target = out / path.stem
        with tempfile.TemporaryDirectory() as scratch:
            master_path = Path(scratch) / path.name
            nbformat.write(master, master_path)
            result = Path(scratch) / "dist"
            run = subprocess.run(
                [sys.executable, "-m", "otter", "assign", str(master_path), str(result)],
                capture_output=True,
                text=True,
            )
            if run.returncode:
                raise ConfigError(f"otter assign failed on {path.name}:\n{run.stderr[-2000:]}")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(result, target)
        written.append(target)
    return written


def autograder_zip(folder: Path) -> Path:
    """The autograder zip in a chapter folder written by `write_classroom`."""
    zips = sorted((folder / "autograder").glob("*-autograder_*.zip"))
    if not zips:
        raise DataNotFoundError(f"no autograder zip in {folder}/autograder: run `make classroom` first")
    return zips[-1]


def _seconds(cell: NotebookNode) -> float:
    """How long a code cell ran when the notebook was last executed (0 if not recorded)."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def exercise_table(chapters: list[Path]) -> Table:
    """Every exercise of `chapters` by its number (3.4: chapter 3): whether it checks itself, how long its
    solution's code ran in the stored (cpu profile) outputs, and whether its full version wants a GPU
    (``:class: gpu`` on the exercise)."""
    rows = []
    for path in chapters:
        count = 0
        for item in split_exercises(nbformat.read(path, as_version=4).cells):
            if not isinstance(item, Exercise):
                continue
            count += 1
            title = EXERCISE.search(item.cell.source).group("title").strip()
            checked = "yes" if any("self-check" in _tags(c) for c in item.solution) else ""
            code = [c for c in item.solution if c.cell_type == "code"]
            seconds = sum(map(_seconds, code))
            run = "no code" if not code else "< 1 s" if seconds < 0.5 else f"{seconds:.0f} s"
            full = "GPU" if GPU.search(item.cell.source) else "CPU"
            rows.append((exercise_number(path.stem, count), title, checked, run, full))
    columns = ("No.", "Exercise", "Self-check", "Solution on 2 CPU cores", "Full version on")
    return Table(columns, rows, align="lllrl")
