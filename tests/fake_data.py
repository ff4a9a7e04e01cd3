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


def make_cifar_like(root: Path, per_class: int = 6, seed: int = 0) -> None:
    """A tiny cifar10.npz: 32x32 RGB noise, class k tinted by a colour of its own."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(10, 3))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(10), n)
        noise = rng.integers(0, 60, size=(len(labels), 32, 32, 3))
        images = (noise + 0.7 * colours[labels][:, None, None, :]).clip(0, 255).astype(np.uint8)
        return images, labels.astype(np.int64)

    train_x, train_y = split(per_class)
    test_x, test_y = split(max(1, per_class // 3))
    root.mkdir(parents=True, exist_ok=True)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    np.savez_compressed(
        root / "cifar10.npz", train_images=train_x, train_labels=train_y, test_images=test_x,
        test_labels=test_y, classes=np.array(classes),
    )  # fmt: skip
