"""Profiles: how much work a chapter does. ``full`` (the sources' and d2l's settings) on a CUDA GPU, ``cpu``
(scaled to run in minutes on 2 cores) elsewhere, ``smoke`` for tests: the ``cpu`` models and sizes with a
sliver of data. ``D2LCNN_PROFILE`` overrides the automatic choice (e.g. ``D2LCNN_PROFILE=cpu`` on a GPU)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch

from d2lcnn.errors import unknown_name


def choose(*, full: dict, cpu: dict, smoke: dict) -> SimpleNamespace:
    """The settings of the active profile as attributes, plus ``.name``; ``smoke`` lists only what
    differs from ``cpu``."""
    name = os.environ.get("D2LCNN_PROFILE", "").strip().lower()
    name = name or ("full" if torch.cuda.is_available() else "cpu")
    profiles = {"full": full, "cpu": cpu, "smoke": {**cpu, **smoke}}
    if name not in profiles:
        raise unknown_name("D2LCNN_PROFILE", name, profiles, "Set it to full, cpu or smoke, or unset it")
    return SimpleNamespace(name=name, **profiles[name])
