"""Small datasets written in the package's own formats, for tests that must not need ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_mnist_like(root: Path, per_class: int = 30, seed: int = 0, name: str = "mnist") -> None:
    """A tiny <name>.npz (mnist or fashion_mnist) whose classes are separable: class k has a bright
    band at rows 2 + 2k."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 40, size=(len(labels), 28, 28, 1), dtype=np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 + 2 * k : 6 + 2 * k, 4:24] = 250
        return images, labels.astype(np.int64)

    train_x, train_y = split(per_class)
    test_x, test_y = split(per_class // 3)
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        root / f"{name}.npz", train_images=train_x, train_labels=train_y, test_images=test_x,
        test_labels=test_y, classes=np.array([str(i) for i in range(10)]),
    )  # fmt: skip
