"""bench/speed.py end to end in quick mode: it completes and writes a well-formed markdown table.

Quick mode trains a few steps on tiny subsets, so only the table's form is checked, never a speed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from d2lcnn.data import data_root
from d2lcnn.errors import D2LCNNError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "speed.py"
COLUMNS = [
    "Model", "Side", "Run", "Examples/s", "d2lcnn / baseline", "Time to acc", "Final acc",
    "Peak RSS (MB)", "GFLOP/s", "% of bf16 peak",
]  # fmt: skip
MODELS = ("LeNet", "AlexNet", "ResNet-18")
ROWS = [(model, side) for model in MODELS for side in ("baseline", "d2lcnn")]
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")  # fmt: skip


def missing_data() -> list[str]:
    """What the bench needs from the data root and does not find there."""
    root = data_root()
    missing = []
    if not all((root / "FashionMNIST" / "raw" / f).is_file() for f in IDX_FILES):
        missing.append("FashionMNIST/raw (unpacked idx files, read by torchvision)")
    if not ((root / "cifar10.npz").exists() or (root / "cifar-10-batches-py").is_dir()):
        missing.append("cifar10.npz")
    return missing


def run_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def table(text: str, header_start: str) -> list[list[str]]:
    """The rows (header first, separator dropped) of the markdown table whose header starts so."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert all(re.fullmatch(r":?-{3,}:?", cell) for cell in rows[1]), rows[1]
    return [rows[0], *rows[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, str, Path]:
    missing = missing_data()
    if missing:
        pytest.skip(
            f"the data root lacks {', '.join(missing)}: run `make data` (or `python -m d2lcnn data "
            "import ../shared/data /usr/share/datasets/fashion-mnist`)"
        )
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "speed.md"
    result = run_bench("--quick", "--out", str(out), cwd=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, out.read_text(), tmp


def test_quick_bench_writes_one_row_per_model_and_side(quick_run):
    _, text, _ = quick_run
    header, *rows = table(text, "| Model |")
    assert header == COLUMNS
    assert [(row[0], row[1]) for row in rows] == ROWS
    for row in rows:
        cells = dict(zip(header, row))
        assert number(cells["Examples/s"]) > 0
        ratio = number(cells["d2lcnn / baseline"])
        assert ratio > 0
        if cells["Side"] == "baseline":
            assert ratio == 1.0
            assert cells["Run"].startswith("d2l 1.0.3 train_ch6:"), "the d2l package itself, not a copy"
        assert 0 <= number(cells["Final acc"]) <= 100
        assert number(cells["GFLOP/s"]) >= 0
        assert 0 <= number(cells["% of bf16 peak"]) <= 100
        assert re.fullmatch(r"[\d,]+( \(workers [\d,]+\))?", cells["Peak RSS (MB)"])
        assert re.fullmatch(r"([\d.]+ s|not reached) to \d+%", cells["Time to acc"])
    # The ratio is the d2lcnn row's examples/s over its baseline's (both printed to 0.1).
    for base, ours in zip(rows[::2], rows[1::2]):
        low = (number(ours[3]) - 0.05) / (number(base[3]) + 0.05)
        high = (number(ours[3]) + 0.05) / max(number(base[3]) - 0.05, 1e-9)
        assert low - 0.005 <= number(ours[4]) <= high + 0.005, (base, ours)


def test_quick_table_has_metadata_recipes_and_targets(quick_run):
    result, text, tmp = quick_run
    assert "**Quick mode**" in text and "meaningless" in text
    assert re.search(r"^- Date: \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$", text, re.M)
    assert re.search(r"^- Machine: .+, \d+ cores, torch \d+\.\d+", text, re.M)
    assert re.search(r"^- Commit: ([0-9a-f]{7,}(\+dirty)?|unknown .*)$", text, re.M)
    assert re.search(r"^- bf16 matmul peak: [\d,]+ GFLOP/s", text, re.M)
    assert re.search(r"^- Command: `python bench/speed.py --quick`$", text, re.M)

    header, *rows = table(text, "| Side | Recipe |")
    assert [row[0] for row in rows] == ["baseline", "d2lcnn"]
    assert "python -m d2lcnn train --model lenet_modern --dataset fashion_mnist" in rows[1][1]

    header, *rows = table(text, "| Target |")
    assert header == ["Target", "Measured", "Met"]
    # three speed-ups, LeNet's 90% in 75 s, fast_vgg's 94% and 93% in 15 min and share of the peak,
    # fast_resnet's 91% in 10 min and 90% in 5, ResNet-18's share of the peak
    assert len(rows) == 10
    assert all(row[2] == "— (quick mode)" for row in rows)
    fast = [row for row in rows if row[0].startswith("`fast_")]
    assert [re.search(r">= (\d+)%", row[0]).group(1) for row in fast] == ["94", "93", "40", "91", "90"]
    for row in fast:  # every accuracy target states the final accuracy and its margin to the target
        if "test accuracy" in row[0]:
            assert re.search(r"final [\d.]+% \([+-][\d.]+ points\) after \d+ s", row[1]), row

    # The printed table is the written one, and neither shows a path of this machine.
    assert text in result.stdout
    for shown in (text, result.stdout):
        assert str(tmp) not in shown and str(Path.home()) not in shown


def test_quick_table_runs_the_fast_recipes_as_one_command_each(quick_run):
    _, text, _ = quick_run
    header, *rows = table(text, "| Model | Command |")
    assert [row[0] for row in rows] == ["fast_vgg", "fast_resnet"]
    for row in rows:
        cells = dict(zip(header, row))
        assert f"python -m d2lcnn train --model {row[0]} --dataset cifar10" in cells["Command"]
        assert 0 <= number(cells["Final acc (TTA)"]) <= 100
        assert number(cells["Training examples/s"]) > 0
        assert 0 < number(cells["% of bf16 peak"]) <= 100


def test_quick_table_shows_where_the_time_goes(quick_run):
    _, text, _ = quick_run
    header, *rows = table(text, "| Model | Steps |")
    assert header[:3] == ["Model", "Steps", "conv forward"]
    assert header[-2:] == ["conv fwd GFLOP/s", "conv bwd GFLOP/s"]
    assert [row[0] for row in rows] == [*MODELS, "fast_vgg", "fast_resnet"]
    for row in rows:
        assert re.fullmatch(r"\d+ x \d+", row[1])
        shares = [number(cell) for cell in row[2:-2]]
        assert all(0 <= share <= 100 for share in shares)
        assert sum(shares) == pytest.approx(100, abs=0.1 * len(shares))  # each rounded to 0.1
        for cell in row[-2:]:
            assert re.fullmatch(r"[\d,]+ \(\d+%\)", cell)


def test_quick_mode_never_overwrites_the_full_table(tmp_path):
    full = ROOT / "bench" / "results" / "speed.md"
    before = full.read_bytes() if full.exists() else None
    result = run_bench("--quick", "--out", "bench/results/speed.md", cwd=ROOT)
    assert result.returncode == 2
    assert "--quick would overwrite the full-mode table" in result.stderr
    assert "Traceback" not in result.stderr
    assert (full.read_bytes() if full.exists() else None) == before


def test_unknown_model_is_one_clear_error(tmp_path):
    out = tmp_path / "t.md"
    result = run_bench("--quick", "--only", "lenet,resnet", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert "Unknown model 'resnet'. Did you mean 'resnet18'?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_run_that_fails_is_one_clear_error_naming_it(monkeypatch):
    spec = importlib.util.spec_from_file_location("speed", SCRIPT)
    speed = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "speed", speed)  # its dataclasses look their module up there
    spec.loader.exec_module(speed)
    with pytest.raises(D2LCNNError, match=r"^The nope:d2lcnn run failed: KeyError: 'nope'$"):
        speed.run_task("nope", "d2lcnn", quick=True)
