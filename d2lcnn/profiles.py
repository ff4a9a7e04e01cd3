"""Profiles: how much work a chapter does on the hardware it runs on.

- ``full``: on a CUDA GPU (Colab): the settings of the sources and d2l (full data and resolution).
- ``cpu``: anywhere else: scaled (data subset, width, epochs) so a chapter runs in minutes on 2 cores.
- ``smoke``: for tests (``D2LCNN_PROFILE=smoke``): the ``cpu`` profile's models and input sizes with a
  sliver of data and a few steps, so every cell runs in seconds.

``D2LCNN_PROFILE`` overrides the automatic choice (e.g. ``D2LCNN_PROFILE=cpu`` on a GPU machine).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch

from d2lcnn.errors import unknown_name

PROFILES = ("full", "cpu", "smoke")


def profile_name() -> str:
    """``$D2LCNN_PROFILE`` if set, else ``full`` with a CUDA GPU and ``cpu`` without one."""
    name = os.environ.get("D2LCNN_PROFILE", "").strip().lower()
    if not name:
        return "full" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise unknown_name("profile (D2LCNN_PROFILE)", name, PROFILES)
    return name


def choose(*, full: dict, cpu: dict, smoke: dict | None = None, name: str | None = None) -> SimpleNamespace:
    """The settings of the active profile as attributes (plus ``.name``).

    ``smoke`` lists only what differs from ``cpu``: models and input sizes stay those of ``cpu``.
    """
    name = name or profile_name()
    if name not in PROFILES:
        raise unknown_name("profile", name, PROFILES)
    settings = {"full": full, "cpu": cpu, "smoke": {**cpu, **(smoke or {})}}[name]
    return SimpleNamespace(name=name, **settings)
