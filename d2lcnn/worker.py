"""Run one function in a fresh Python process: its JSON result, or one line saying how it failed.

`d2lcnn compare` trains each model this way, and `bench/speed.py` each configuration: the peak
memory of a process is then that run's alone, and a run that fails (an error, a crash, a kill by
the out-of-memory killer) costs its own result, not the others'. The function takes one JSON-able
dict and returns one; its process runs ``python -m d2lcnn.worker TARGET SPEC OUT``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from d2lcnn.errors import D2LCNNError
from d2lcnn.files import write_json

_PACKAGE_PARENT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Outcome:
    """What one process did: the function's `result`, or an `error` saying how it failed."""

    result: Any = None  # the function's return value (None if it failed)
    error: str | None = None  # one line, without absolute paths of this machine
    peak_memory_mb: float | None = None  # peak resident memory of the process itself
    children_peak_memory_mb: float | None = None  # of its largest waited-for child process
    seconds: float = 0.0  # wall-clock of the whole process, Python's start-up included


def run_in_process(target: str, spec: dict, *, cwd: str | Path | None = None) -> Outcome:
    """Call `target(spec)` in a fresh Python process and return what happened.

    `target` is "package.module:function" or "path/to/file.py:function"; `cwd` is the process's
    working directory (default: this one's). The process finds this copy of d2lcnn whatever its
    working directory.
    """
    path = os.pathsep.join(filter(None, [str(_PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="d2lcnn-worker-") as tmp:
        out = Path(tmp) / "outcome.json"
        command = [sys.executable, "-m", "d2lcnn.worker", target, json.dumps(spec), str(out)]
        start = time.perf_counter()
        done = subprocess.run(
            command, cwd=cwd, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        if out.is_file():
            return Outcome(**json.loads(out.read_text()), seconds=seconds)
    return Outcome(error=_how_it_died(done), seconds=seconds)


def _how_it_died(done: subprocess.CompletedProcess) -> str:
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"the process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no message"]
    return scrub_paths(f"the process exited with code {done.returncode}: {last[0]}")


def scrub_paths(text: str) -> str:
    """`text` without this machine's absolute paths: those in the working directory are made
    relative to it, the home folder is shown as ~."""
    cwd = str(Path.cwd())
    text = text.replace(cwd + os.sep, "").replace(cwd, ".")
    return text.replace(str(Path.home()), "~")


def memory_mb(peak: bool = True) -> float | None:
    """This process's resident memory in MB: its peak so far, or (peak=False) now; None if unknown.

    Linux's VmHWM is the process's own peak since it started; `ru_maxrss`, the fallback elsewhere,
    can also count the pages of the parent it was forked from.
    """
    field = "VmHWM" if peak else "VmRSS"
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"{field}:\s*(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        pass
    return _max_rss_mb("RUSAGE_SELF") if peak else None


def _max_rss_mb(who: str) -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(getattr(resource, who)).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _load(target: str) -> Any:
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):  # a script, e.g. bench/speed.py
        spec = importlib.util.spec_from_file_location(Path(where).stem, where)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def _main(argv: list[str]) -> int:
    """`python -m d2lcnn.worker TARGET SPEC_JSON OUT`: what `run_in_process` starts."""
    target, spec, out = argv[0], json.loads(argv[1]), Path(argv[2])
    try:
        outcome = Outcome(result=_load(target)(spec))
    except D2LCNNError as err:
        outcome = Outcome(error=scrub_paths(str(err)))
    except Exception as err:  # any other failure is reported as one line, not a traceback
        outcome = Outcome(error=scrub_paths(f"{type(err).__name__}: {err}".splitlines()[0]))
    record = {
        **asdict(outcome),
        "peak_memory_mb": memory_mb(),
        "children_peak_memory_mb": _max_rss_mb("RUSAGE_CHILDREN"),
    }
    del record["seconds"]  # the parent measures the whole process
    write_json(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
