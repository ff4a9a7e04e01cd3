"""Re-execute every chapter in place in the cpu profile (the outputs the site shows).

    python scripts/execute_notebooks.py [notebooks/01_lenet.ipynb ...]

Runs them one after another (each uses every core), prints how long each took, and refuses to
write a notebook whose outputs contain an error or an absolute path of this machine.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from d2lcnn.classroom import exercise_table
from d2lcnn.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
EXERCISE_TABLE = ROOT / "book" / "_exercise_table.md"  # the teachers' page includes it
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:work|root|home|tmp|usr|opt|Users|private)/[\w./-]+")


def execute(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    seconds = time.perf_counter() - start
    text = nbformat.writes(notebook)
    leaked = ABSOLUTE_PATH.search(
        "\n".join(str(o) for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    )
    if leaked:
        raise SystemExit(f"{path.name}: an output shows the path {leaked.group(0)!r}; not written")
    atomic_write(path, lambda f: f.write(text.encode()))
    return seconds


def main() -> None:
    os.environ["D2LCNN_PROFILE"] = os.environ.get("D2LCNN_PROFILE", "cpu")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("D2LCNN_PROGRESS", "0")  # epoch lines, no live bar, in the stored outputs
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter in notebooks/")
    paths = parser.parse_args().notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if p.suffix != ".ipynb" or not p.is_file()]
    if missing:
        parser.error(f"not a notebook file: {', '.join(missing)}; pass paths like notebooks/01_lenet.ipynb")
    for path in paths:
        print(f"{path.name}: executing ({os.environ['D2LCNN_PROFILE']} profile) ...", flush=True)
        print(f"{path.name}: {execute(path):.0f} s", flush=True)
    write_exercise_table()


def write_exercise_table() -> None:
    """The teachers' table of every exercise, with its solution's run time from the stored outputs."""
    chapters = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    text = exercise_table(chapters).to_markdown() + "\n"
    atomic_write(EXERCISE_TABLE, lambda f: f.write(text.encode()))


if __name__ == "__main__":
    main()
