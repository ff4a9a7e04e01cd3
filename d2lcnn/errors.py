"""Errors d2lcnn raises on purpose, each saying what was wrong and what to do; and the checks behind them."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class D2LCNNError(Exception):
    """Base class of every error d2lcnn raises on purpose."""


class UnknownNameError(D2LCNNError, ValueError):
    """A model, dataset or option name that does not exist."""


class InputShapeError(D2LCNNError, ValueError):
    """An input a model cannot take (too small, wrong channel count, not a batch, not float images)."""


class DataNotFoundError(D2LCNNError, FileNotFoundError):
    """A dataset, checkpoint or history file that is not where it was looked for."""


class CorruptDataError(D2LCNNError, ValueError):
    """A dataset or checkpoint file that exists but cannot be read as what it claims to be."""


class ConfigError(D2LCNNError, ValueError):
    """Settings that cannot work: a bad argument value, or a checkpoint that does not fit the run."""


class TrainingDivergedError(D2LCNNError, FloatingPointError):
    """The training loss became NaN or infinite."""


def is_int(value: object) -> bool:
    """A whole number (True and False, though ints to Python, are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name most like `name`, or None if nothing is close."""
    valid = list(valid)
    matches = difflib.get_close_matches(name.lower(), valid, n=len(valid), cutoff=0.5)
    if not matches:
        return None

    # Break ties between equally close names by reading look-alike characters (l/1, o/0) as the same.
    def lookalike(text: str) -> str:
        return text.lower().replace("l", "1").replace("o", "0")

    return max(matches, key=lambda m: difflib.SequenceMatcher(None, lookalike(name), lookalike(m)).ratio())


def unknown_name(kind: str, name: str, valid: Iterable[str], listing: str | None = None) -> UnknownNameError:
    """An error for an unknown `kind` name that suggests the closest valid one and lists them all
    (or says `listing` instead of the list)."""
    valid = sorted(valid)
    guess = closest(name, valid)
    hint = f" Did you mean {guess!r}?" if guess else ""
    listing = listing or f"Valid {kind}s: {', '.join(valid)}"
    return UnknownNameError(f"Unknown {kind} {name!r}.{hint} {listing}.")
