"""Writing files so that a crash or a kill never leaves half of one behind, and reading them back."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from d2lcnn.errors import ConfigError, CorruptDataError, DataNotFoundError


def atomic_write(target: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(file)` on a temporary file next to `target`, flush it to disk, then rename it
    over `target`: readers see the old file or the new one, never a partial one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(target: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    text = json.dumps(data, indent=1)
    atomic_write(target, lambda f: f.write(text.encode()))


def read_json(path: str | Path, what: str) -> dict:
    """The JSON object in `path`; one clear error if it is missing or is not a JSON object.
    `what` names the kind of file in the message, e.g. "history"."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"No {what} file at {str(path)!r}; check the path.")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptDataError(f"{str(path)!r} is not a JSON {what} file ({err}).") from None
    if not isinstance(data, dict):
        raise CorruptDataError(f"{str(path)!r} does not hold a d2lcnn {what}.")
    return data


def make_folder(path: str | Path, fix: str) -> list[Path]:
    """Make the folder `path` and its missing parents; return the folders made, deepest first (to
    remove if nothing lands there). A folder that cannot be made is a ConfigError ending with `fix`."""
    path = Path(path)
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"Cannot make the folder {path} ({err.strerror or err}). {fix}") from None
    return made
