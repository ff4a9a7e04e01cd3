"""Run one function in a fresh Python process: its JSON result, or one line saying how it failed.
`d2lcnn compare` trains each model this way and `bench/speed.py` each configuration, so that a run's
peak memory is its own and a run that fails (an error, a crash, out of memory) costs only its result."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d2lcnn.errors import D2LCNNError
from d2lcnn.files import write_json

try:
    import resource
except ImportError:  # Windows: the peak memory is not measured
    resource = None


@dataclass(frozen=True)
class Outcome:
    """What one process did: the function's `result`, or an `error` saying how it failed."""

    result: Any = None  # the function's return value (None if it failed)
    error: str | None = None  # one line, without absolute paths of this machine
    peak_memory_mb: float | None = None  # peak resident memory of the process itself
    children_peak_memory_mb: float | None = None  # of its largest waited-for child process
    seconds: float = 0.0  # wall-clock of the whole process, Python's start-up included


def run_in_process(target: str, spec: dict, *, cwd: str | Path | None = None) -> Outcome:
    """Call `target(spec)` in a fresh Python process working in `cwd` (default: this one's); `target`
    is "package.module:function" or "path/to/file.py:function". The process imports this d2lcnn."""
    package_parent = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="d2lcnn-worker-") as tmp:
        out = Path(tmp) / "outcome.json"
        command = [sys.executable, "-m", "d2lcnn.worker", target, json.dumps(spec), str(out)]
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": path}
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if out.is_file():
            return Outcome(**json.loads(out.read_text()), seconds=seconds)
    if done.returncode < 0:
        name = {s.value: s.name for s in signal.Signals}.get(-done.returncode, f"signal {-done.returncode}")
        error = f"the process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no message"]
        error = scrub_paths(f"the process exited with code {done.returncode}: {last[0]}")
    return Outcome(error=error, seconds=seconds)


def scrub_paths(text: str) -> str:
    """`text` with paths in the working directory made relative to it, and the home folder shown as ~."""
    cwd = str(Path.cwd())
    return text.replace(cwd + os.sep, "").replace(cwd, ".").replace(str(Path.home()), "~")


def memory_mb(peak: bool = True) -> float | None:
    """This process's resident memory in MB: its peak so far, or (peak=False) now; None if unknown.
    Linux's VmHWM is the process's own peak; `ru_maxrss`, the fallback elsewhere, can also count the
    pages of the parent it was forked from."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"{'VmHWM' if peak else 'VmRSS'}:\s*(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        return _max_rss_mb("RUSAGE_SELF") if peak else None


def _max_rss_mb(who: str) -> float | None:
    if resource is None:
        return None
    peak = resource.getrusage(getattr(resource, who)).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _main(target: str, spec: str, out: str) -> None:
    """`python -m d2lcnn.worker TARGET SPEC_JSON OUT`: what `run_in_process` starts."""
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):  # a script, e.g. bench/speed.py: imported by its name from its folder
        sys.path.insert(0, str(Path(where).parent))
        where = Path(where).stem
    result = error = None
    try:
        result = getattr(importlib.import_module(where), name)(json.loads(spec))
    except Exception as err:  # one line, not a traceback (the whole message of a D2LCNNError)
        text = str(err) if isinstance(err, D2LCNNError) else f"{type(err).__name__}: {err}".splitlines()[0]
        error = scrub_paths(text)
    memory = dict(peak_memory_mb=memory_mb(), children_peak_memory_mb=_max_rss_mb("RUSAGE_CHILDREN"))
    write_json(out, dict(result=result, error=error, **memory))


if __name__ == "__main__":
    _main(*sys.argv[1:])
