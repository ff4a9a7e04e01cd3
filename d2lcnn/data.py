"""Datasets for the CNN chapters and a fast loader that keeps a whole dataset on the device.

Where the data comes from, in the order tried (see `load_arrays`):

1. `<data root>/<name>.npz` (keys train_images, train_labels, test_images, test_labels, classes);
2. the layout torchvision leaves after a download (`MNIST/raw`, `FashionMNIST/raw`,
   `cifar-10-batches-py`, `stl10_binary`);
3. a download through torchvision.

`DeviceLoader` follows KellerJordan/cifar10-airbench: the dataset lives on the device as uint8,
and each batch is cropped, flipped, resized and normalised there, in a few vectorised tensor ops.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import functools
import gzip
import hashlib
import math
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import CorruptDataError, D2LCNNError, DataNotFoundError, unknown_name
from .files import atomic_write

__all__ = [
    "DATASETS",
    "Arrays",
    "Data",
    "DatasetInfo",
    "DeviceLoader",
    "TorchLoader",
    "balanced_subset",
    "data_root",
    "dataset_info",
    "default_device",
    "describe_root",
    "import_offline",
    "load",
    "load_arrays",
    "load_folder",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What d2lcnn knows about a dataset before reading it."""

    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]  # per-channel pixel mean and std on the 0..1 scale
    std: tuple[float, ...]
    flip: bool  # whether a horizontal flip gives another valid image of the same class
    classes: tuple[str, ...]  # torchvision's class names, used when the files carry none
    pad: int  # padding of the random crop when augmenting
    pad_mode: str  # "constant" (black border) or "reflect"


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", 10, 28, 1, (0.1307,), (0.3081,), flip=False,
        classes=tuple(f"{i} - {w}" for i, w in enumerate(
            ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])),
        pad=2, pad_mode="constant",
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 10, 28, 1, (0.2860,), (0.3530,), flip=True,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        pad=2, pad_mode="constant",
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 32, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), flip=True,
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"),
        pad=4, pad_mode="reflect",
    ),
    "stl10": DatasetInfo(
        "stl10", 10, 96, 3, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), flip=True,
        classes=("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                 "truck"),
        pad=12, pad_mode="reflect",
    ),
}  # fmt: skip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
_IDX_FILES = {  # part -> file name in torchvision's MNIST/FashionMNIST raw folder
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_STL_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
_STL_IMAGE_BYTES = 3 * 96 * 96
# dataset -> (torchvision class, folder under the data root, files it must hold)
_RAW_LAYOUT = {
    "mnist": ("MNIST", "MNIST/raw", tuple(_IDX_FILES.values())),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", tuple(_IDX_FILES.values())),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (*_CIFAR_TRAIN, "test_batch")),
    "stl10": ("STL10", "stl10_binary", _STL_FILES),
}


def dataset_info(name: str) -> DatasetInfo:
    """DATASETS[name], or an UnknownNameError that suggests the closest name."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    return DATASETS[name]


_info = dataset_info


def data_root() -> Path:
    """The folder datasets live in: $D2LCNN_DATA if set, else ~/.cache/d2lcnn (created if needed)."""
    env = os.environ.get("D2LCNN_DATA")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "d2lcnn"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise D2LCNNError(
            f"Cannot create the data folder {root} ({err.strerror}). "
            "Set the environment variable D2LCNN_DATA to a folder you can write to."
        ) from None
    return root


def default_device() -> torch.device:
    """cuda if available, else mps, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise D2LCNNError(f"Unknown device {device!r} ({err}). Use 'cpu', 'cuda' or 'mps'.") from None
    missing = (device.type == "cuda" and not torch.cuda.is_available()) or (
        device.type == "mps" and not torch.backends.mps.is_available()
    )
    if missing:
        raise D2LCNNError(
            f"Device {str(device)!r} is not available on this machine; use device='cpu' or leave "
            f"device=None to pick the best one available."
        )
    return device


# ----------------------------------------------------------------------------------------------
# Reading datasets into numpy arrays


@dataclass
class Arrays:
    """A dataset as numpy arrays: uint8 NHWC images, int64 labels, class names, where it came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    source: str  # short description such as "cifar10.npz" (never an absolute path)

    def __repr__(self) -> str:
        def shape(a: np.ndarray) -> str:
            return "x".join(str(d) for d in a.shape)

        return (
            f"Arrays(train {shape(self.train_images)}, test {shape(self.test_images)}, "
            f"{len(self.classes)} classes, from {self.source})"
        )


def load_arrays(name: str, root: str | Path | None = None, download: bool | None = None) -> Arrays:
    """Read dataset `name` from the data root, downloading it through torchvision if needed.

    Looks for `<name>.npz`, then torchvision's raw layout; else downloads unless `download` is
    False. Raises DataNotFoundError if the data cannot be had, CorruptDataError if a file is bad.
    """
    info = _info(name)
    root = Path(root).expanduser() if root is not None else data_root()
    npz = root / f"{name}.npz"
    if npz.is_symlink() and not npz.exists():
        raise DataNotFoundError(
            f"{npz} is a link to {os.readlink(npz)}, which no longer exists. "
            f"Import the file again (`d2lcnn data import DIR`) or delete the link."
        )
    if npz.is_file():
        return _read_npz(npz, info)
    missing = _missing_raw_files(name, root)
    if not missing:
        return _read_raw(name, root)
    if download is False:
        raise _not_found(info, root, missing, "download=False was given")
    try:
        _torchvision_download(name, root)
    except Exception as err:  # network errors come in many types (URLError, RuntimeError, OSError)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
        cause = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        reason = f"downloading it through torchvision failed ({type(err).__name__}: {cause[:300]})"
        raise _not_found(info, root, missing, reason) from None
    missing = _missing_raw_files(name, root)
    if missing:
        raise _not_found(info, root, missing, "torchvision's download did not produce them")
    arrays = _read_raw(name, root)
    arrays.source += " (downloaded by torchvision)"
    return arrays


def _torchvision_download(name: str, root: Path) -> None:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, _RAW_LAYOUT[name][0])
    print(f"Downloading {name} through torchvision into the data root (first use only)...")
    # Building the (smaller) test split downloads the whole dataset; we read the files ourselves.
    if name == "stl10":
        dataset_class(str(root), split="test", download=True)
    else:
        dataset_class(str(root), train=False, download=True)


def _missing_raw_files(name: str, root: Path) -> list[str]:
    _, folder, files = _RAW_LAYOUT[name]
    allow_gz = name in ("mnist", "fashion_mnist")
    return [
        f for f in files
        if not (root / folder / f).is_file() and not (allow_gz and (root / folder / f"{f}.gz").is_file())
    ]  # fmt: skip


def describe_root(root: str | Path | None = None) -> list[str]:
    """One line per dataset saying whether the data root holds it, and as which files."""
    if root is not None:
        lines = [f"data root: {root}"]
    elif os.environ.get("D2LCNN_DATA"):
        lines = ["data root: $D2LCNN_DATA"]
    else:
        lines = ["data root: ~/.cache/d2lcnn (set D2LCNN_DATA to move it)"]
    root = Path(root).expanduser() if root is not None else data_root()
    for name in DATASETS:
        folder = _RAW_LAYOUT[name][1]
        if (root / f"{name}.npz").exists():
            where = f"{name}.npz"
        elif (root / f"{name}.npz").is_symlink():
            where = f"{name}.npz is a broken link: import it again"
        elif not _missing_raw_files(name, root):
            where = f"{folder}/"
        else:
            where = "not here (downloaded on first use, or `d2lcnn data import DIR`)"
        lines.append(f"{name}: {where}")
    return lines


def _not_found(info: DatasetInfo, root: Path, missing: list[str], reason: str) -> DataNotFoundError:
    _, folder, files = _RAW_LAYOUT[info.name]
    if len(missing) < len(files):
        raw = f"{folder}/ is there but lacks {', '.join(missing)}"
    else:
        raw = f"no {folder}/ with {', '.join(files)}"
    return DataNotFoundError(
        f"Dataset {info.name!r} is not in the data root {root} (no {info.name}.npz, {raw}), and "
        f"{reason}.\nTo get it, either:\n"
        f"  - run once with internet access: d2lcnn downloads it through torchvision into the "
        f"data root; or\n"
        f"  - put {info.name}.npz (keys {', '.join(_NPZ_KEYS)}, classes) or the raw files "
        f"({folder}/...) into {root}, e.g. `d2lcnn data import DIR` with DIR holding "
        f"{info.name}.npz (or the four MNIST/Fashion-MNIST idx .gz files).\n"
        f"Pass root=... or set D2LCNN_DATA to use another data root."
    )


def _read_npz(path: Path, info: DatasetInfo) -> Arrays:
    _check_zip(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise CorruptDataError(
            f"{path} is not a readable .npz file ({err}). Replace it with a good copy."
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CorruptDataError(f"{path} holds a single .npy array, not an .npz archive of arrays.")
    with npz:
        missing = [k for k in _NPZ_KEYS if k not in npz.files]
        if missing:
            raise CorruptDataError(
                f"{path} lacks the key(s) {', '.join(missing)} (it has: "
                f"{', '.join(npz.files) or 'nothing'}). A dataset .npz needs "
                f"{', '.join(_NPZ_KEYS)} and optionally classes."
            )
        try:
            parts = {k: npz[k] for k in _NPZ_KEYS}
            classes = npz["classes"] if "classes" in npz.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise CorruptDataError(
                f"Cannot read the arrays in {path} ({err}). Replace it with a good copy."
            ) from None
    return _checked_arrays(info, parts, classes, where=str(path), source=path.name)


def _check_zip(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise CorruptDataError(
            f"{path} is not an .npz archive (not a zip file: damaged, truncated or another "
            f"format). Replace it with a good copy."
        )


def _checked_arrays(
    info: DatasetInfo,
    parts: dict[str, np.ndarray],
    classes: Sequence[Any] | np.ndarray | None,
    where: str,
    source: str,
) -> Arrays:
    s, c = info.image_size, info.channels
    for split in ("train", "test"):
        images, labels = parts[f"{split}_images"], parts[f"{split}_labels"]
        what = f"{where}: {split}_images"
        if images.dtype != np.uint8:
            raise CorruptDataError(f"{what} has dtype {images.dtype}; expected uint8 pixel values 0..255.")
        if images.ndim == 3 and c == 1:
            images = images[..., None]
        if images.ndim != 4 or images.shape[1:] != (s, s, c):
            hint = ""
            if images.ndim == 4 and images.shape[1:] == (c, s, s):
                hint = " It looks like NCHW; store NHWC (images.transpose(0, 2, 3, 1))."
            raise CorruptDataError(
                f"{what} has shape {images.shape}; {info.name} needs (N, {s}, {s}, {c}).{hint}"
            )
        if len(images) == 0:
            raise CorruptDataError(f"{what} holds no images.")
        what = f"{where}: {split}_labels"
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise CorruptDataError(
                f"{what} has dtype {labels.dtype} and shape {labels.shape}; expected a 1-D "
                f"array of integer class indices."
            )
        if len(labels) != len(images):
            raise CorruptDataError(f"{what} has {len(labels)} labels for {len(images)} images.")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= info.num_classes:
            raise CorruptDataError(f"{what} has values {low}..{high}; expected 0..{info.num_classes - 1}.")
        parts[f"{split}_images"] = images
        parts[f"{split}_labels"] = labels.astype(np.int64, copy=False)
    if classes is None:
        classes = list(info.classes)
    elif len(classes) != info.num_classes:
        raise CorruptDataError(
            f"{where}: classes lists {len(classes)} names; {info.name} has {info.num_classes}."
        )
    names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes]
    return Arrays(**parts, classes=names, source=source)


def _read_raw(name: str, root: Path) -> Arrays:
    info = _info(name)
    folder = root / _RAW_LAYOUT[name][1]
    source = _RAW_LAYOUT[name][1]
    if name in ("mnist", "fashion_mnist"):
        parts = {}
        for part, file in _IDX_FILES.items():
            path = folder / file if (folder / file).is_file() else folder / f"{file}.gz"
            array = _parse_idx(_read_idx_bytes(path), path)
            expected_ndim = 3 if part.endswith("images") else 1
            if array.ndim != expected_ndim:
                raise CorruptDataError(
                    f"{path} holds a {array.ndim}-D array; {part} needs {expected_ndim}-D."
                )
            parts[part] = array
        return _checked_arrays(info, parts, None, where=str(folder), source=source)
    if name == "cifar10":
        return _read_cifar(folder, info, source)
    return _read_stl10(folder, info, source)


def _read_idx_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDataError(f"Cannot read {path}: {err}. Replace it with a good copy.") from None


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """The uint8 array in an idx file (the MNIST format): magic 0 0 8 ndim, big-endian sizes, data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise CorruptDataError(
            f"{path} is not an idx file of uint8 data (its header is {data[:4].hex() or 'empty'}, "
            f"expected 000008 followed by the number of dimensions)."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDataError(f"{path} is truncated: it ends inside its header.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected, found = math.prod(shape), len(data) - header
    if found != expected:
        problem = "is truncated" if found < expected else "has trailing bytes"
        raise CorruptDataError(
            f"{path} {problem}: its header promises shape {shape} ({expected} bytes) but "
            f"{found} bytes follow. Replace it with a good copy."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


@functools.cache
def _pickle_allowed() -> dict[tuple[str, str], Any]:
    sample = np.zeros(1, np.uint8)
    reconstruct = sample.__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it
    frombuffer = sample.__reduce_ex__(5)[0]  # used by pickle protocol 5
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes
    }
    for package in ("numpy.core", "numpy._core"):  # pickles written under numpy 1 or 2
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle cannot run code through us."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _pickle_allowed()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not allowed")
        return allowed[(module, name)]


def _load_cifar_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            content = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise CorruptDataError(f"{path} is not a CIFAR-10 batch file ({err}).") from None
    if not isinstance(content, dict):
        raise CorruptDataError(f"{path} holds a {type(content).__name__}, not a CIFAR-10 dict.")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}


def _read_cifar(folder: Path, info: DatasetInfo, source: str) -> Arrays:
    parts = {}
    for split, files in (("train", _CIFAR_TRAIN), ("test", ("test_batch",))):
        images, labels = [], []
        for file in files:
            batch = _load_cifar_pickle(folder / file)
            data, batch_labels = batch.get("data"), batch.get("labels")
            if not (
                isinstance(data, np.ndarray)
                and data.dtype == np.uint8
                and data.ndim == 2
                and data.shape[1] == 3 * 32 * 32
                and batch_labels is not None
                and len(batch_labels) == len(data)
            ):
                raise CorruptDataError(
                    f"{folder / file} is not a CIFAR-10 batch: expected 'data' (uint8, N x 3072) "
                    f"and N 'labels'."
                )
            images.append(data)
            labels.append(np.asarray(batch_labels))
        # Each row holds the red, green, then blue 32x32 plane.
        parts[f"{split}_images"] = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        parts[f"{split}_labels"] = np.concatenate(labels)
    classes = None
    meta = folder / "batches.meta"
    if meta.is_file():
        classes = _load_cifar_pickle(meta).get("label_names")
        if classes is None:
            raise CorruptDataError(f"{meta} has no 'label_names'.")
    return _checked_arrays(info, parts, classes, where=str(folder), source=source)


def _stl10_images(path: Path) -> np.ndarray:
    """NHWC view of an STL-10 *_X.bin file, memory-mapped (nothing read until used)."""
    size = path.stat().st_size
    if size == 0 or size % _STL_IMAGE_BYTES:
        raise CorruptDataError(
            f"{path} is truncated or not an STL-10 image file: {size} bytes is not a whole "
            f"number of 3x96x96 images ({_STL_IMAGE_BYTES} bytes each)."
        )
    images = np.memmap(path, np.uint8, mode="r", shape=(size // _STL_IMAGE_BYTES, 3, 96, 96))
    return images.transpose(0, 3, 2, 1)  # each image is stored column-major: (C, W, H)


def _read_stl10(folder: Path, info: DatasetInfo, source: str) -> Arrays:
    parts = {}
    for split in ("train", "test"):
        images = _stl10_images(folder / f"{split}_X.bin")
        labels_path = folder / f"{split}_y.bin"
        labels = np.fromfile(labels_path, np.uint8)
        if len(labels) != len(images):
            raise CorruptDataError(
                f"{labels_path} has {len(labels)} labels for the {len(images)} images of "
                f"{split}_X.bin: one of them is truncated."
            )
        if len(labels) and (labels.min() < 1 or labels.max() > info.num_classes):
            raise CorruptDataError(
                f"{labels_path} has labels {labels.min()}..{labels.max()}; STL-10 uses 1..10."
            )
        parts[f"{split}_images"] = images
        parts[f"{split}_labels"] = labels.astype(np.int64) - 1
    classes = None
    names_path = folder / "class_names.txt"
    if names_path.is_file():
        classes = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    return _checked_arrays(info, parts, classes, where=str(folder), source=source)


# ----------------------------------------------------------------------------------------------
# Importing files on offline machines


def import_offline(
    sources: Sequence[str | Path], root: str | Path | None = None, *, as_name: str | None = None
) -> list[str]:
    """Bring dataset files into the data root without network access; return what was done.

    Each source is a `<name>.npz` file, or a folder holding such files and/or the four MNIST or
    Fashion-MNIST idx files (`.gz` or not). The .npz files are linked (copied if links fail);
    idx files are decompressed into `<root>/FashionMNIST/raw` or `<root>/MNIST/raw`: the dataset
    is `as_name` if given, else told by "fashion" or "mnist" in the folder's path. An existing,
    different file is never replaced: the returned descriptions say so instead.
    """
    if as_name is not None and as_name not in ("mnist", "fashion_mnist"):
        raise unknown_name("idx dataset", as_name, ("mnist", "fashion_mnist"))
    root = Path(root).expanduser() if root is not None else data_root()
    root.mkdir(parents=True, exist_ok=True)
    done = []
    for source in map(Path, sources):
        source = source.expanduser()
        if source.is_file():
            if not (source.suffix == ".npz" and source.stem in DATASETS):
                raise D2LCNNError(
                    f"Don't know how to import {source}: expected a file named <name>.npz with "
                    f"<name> one of {', '.join(DATASETS)}, or a folder of such files or of idx files."
                )
            done.append(_import_npz(source, root))
            continue
        if not source.is_dir():
            raise DataNotFoundError(f"{source} does not exist.")
        found = [source / f"{name}.npz" for name in DATASETS if (source / f"{name}.npz").is_file()]
        done += [_import_npz(path, root) for path in found]
        idx = {f: source / f if (source / f).is_file() else source / f"{f}.gz" for f in _IDX_FILES.values()}
        present = [f for f, path in idx.items() if path.is_file()]
        if present and len(present) < len(idx):
            raise DataNotFoundError(
                f"{source} holds only some of the idx files: "
                f"{', '.join(f for f in idx if f not in present)} missing (.gz or not)."
            )
        if present:
            done.append(_import_idx(source, idx, root, as_name))
        elif not found:
            raise DataNotFoundError(
                f"Nothing to import in {source}: expected {', '.join(f'{n}.npz' for n in DATASETS)} "
                f"or the four idx files {', '.join(f'{f}.gz' for f in _IDX_FILES.values())}."
            )
    return done


def _import_npz(source: Path, root: Path) -> str:
    _read_npz_keys(source)
    target = root / source.name
    if target.is_symlink() and not target.exists():
        target.unlink()  # a dangling link from an earlier import holds nothing
    if target.exists():
        if _same_file(source, target):
            return f"{source.name}: already in the data root"
        return (
            f"{source.name}: NOT imported, the data root already has a different {source.name} "
            f"(delete it first to replace it)"
        )
    try:
        os.symlink(source.resolve(), target)
        return f"{source.name}: linked into the data root"
    except OSError:  # e.g. Windows without the right to make links
        with open(source, "rb") as src:
            atomic_write(target, lambda dst: _copy_stream(src, dst))
        return f"{source.name}: copied into the data root"


def _read_npz_keys(path: Path) -> None:
    """Fail early on a file that is not a dataset .npz (only reads the archive's directory)."""
    _check_zip(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = npz.files
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as err:
        raise CorruptDataError(f"{path} is not a readable .npz file ({err}).") from None
    missing = [k for k in _NPZ_KEYS if k not in keys]
    if missing:
        raise CorruptDataError(f"{path} lacks the key(s) {', '.join(missing)}; not imported.")


def _import_idx(source: Path, files: dict[str, Path], root: Path, as_name: str | None) -> str:
    name = as_name
    if name is None:
        where = str(source.resolve()).lower()
        name = "fashion_mnist" if "fashion" in where else "mnist" if "mnist" in where else None
    if name is None:
        raise D2LCNNError(
            f"Cannot tell whether the idx files in {source} are MNIST or Fashion-MNIST: "
            f"pass as_name='mnist' or as_name='fashion_mnist'."
        )
    folder = _RAW_LAYOUT[name][1]
    written, same, kept = [], [], []
    for file, path in files.items():
        data = _read_idx_bytes(path)
        _parse_idx(data, path)  # refuse truncated or foreign files before writing anything
        target = root / folder / file
        if target.exists():
            (same if target.read_bytes() == data else kept).append(file)
            continue
        atomic_write(target, lambda f, data=data: f.write(data))
        written.append(file)
    parts = []
    if written:
        parts.append(f"{len(written)} idx file(s) decompressed into {folder}/")
    if same:
        parts.append(f"{len(same)} already there")
    if kept:
        parts.append(f"NOT replaced (different files already there, delete them first): {', '.join(kept)}")
    return f"{name}: " + "; ".join(parts)


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if os.path.samefile(a, b):
            return True
    if a.stat().st_size != b.stat().st_size:
        return False
    return _sha256(a) == _sha256(b)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_stream(src: BinaryIO, dst: BinaryIO) -> None:
    while chunk := src.read(1 << 20):
        dst.write(chunk)


def balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `per_class` examples of every class in `labels`, chosen with `seed`."""
    labels = np.asarray(labels)
    if per_class < 1:
        raise D2LCNNError(f"per_class must be at least 1, got {per_class}.")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise D2LCNNError(
                f"Class {label} has only {len(members)} examples, fewer than per_class={per_class}."
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------------------------
# Loaders


def _seed(*numbers: int) -> int:
    """A generator seed depending on all of `numbers` (no collisions like seed + epoch would have)."""
    state = np.random.SeedSequence([n % 2**64 for n in numbers]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def _shard_size(n: int, rank: int, world_size: int, drop_last: bool) -> int:
    if drop_last:  # every rank gets the same count, so they stay in step
        return n // world_size
    return len(range(rank, n, world_size))


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    # drop_last never drops the only batch: a tiny subset must still train.
    if n == 0:
        return 0
    return max(1, n // batch_size) if drop_last else math.ceil(n / batch_size)


def _epoch_order(
    n: int, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int, drop_last: bool
) -> Tensor:
    """This rank's example indices for `epoch`: one permutation for all ranks, then strided."""
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, epoch, 0)))
    else:
        order = torch.arange(n)
    if world_size > 1:
        if drop_last:
            order = order[: n // world_size * world_size]
        order = order[rank::world_size]
    return order


def _check_shard(rank: int, world_size: int, current_world_size: int) -> None:
    if current_world_size != 1:
        raise D2LCNNError("This loader is already a shard; shard the full loader instead.")
    if not (world_size >= 1 and 0 <= rank < world_size):
        raise D2LCNNError(f"Need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")


class _BatchTransform:
    """uint8 NCHW batch -> augmented, resized, normalised float batch, all on the batch's device."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        channels: int,
        image_hw: tuple[int, int],
        device: torch.device,
        resize: int | None = None,
        augment: bool = False,
        flip: bool = True,
        pad: int = 4,
        pad_mode: str = "reflect",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if len(mean) != channels or len(std) != channels:
            raise D2LCNNError(
                f"mean and std need one value per channel ({channels}); got {len(mean)} and {len(std)}."
            )
        if min(std) <= 0:
            raise D2LCNNError(f"std values must be positive, got {tuple(std)}.")
        if resize is not None and resize < 1:
            raise D2LCNNError(f"resize must be a positive image size, got {resize}.")
        if pad_mode not in ("reflect", "constant"):
            raise unknown_name("pad mode", pad_mode, ("reflect", "constant"))
        if augment and (pad < 0 or (pad_mode == "reflect" and pad >= min(image_hw))):
            raise D2LCNNError(
                f"pad={pad} does not fit {image_hw[0]}x{image_hw[1]} images "
                f"(reflect padding needs 0 <= pad < image size)."
            )
        std_tensor = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_tensor = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1 / (255 * std_tensor)
        self.shift = -mean_tensor / std_tensor
        self.resize, self.augment, self.flip = resize, augment, flip
        self.pad, self.pad_mode = pad, pad_mode
        self.dtype, self.channels_last = dtype, channels_last

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if self.augment:
            images = _random_crop_flip(images, self.pad, self.pad_mode, self.flip, generator)
        x = images.float()
        height, width = x.shape[-2:]
        if self.resize is not None and (height, width) != (self.resize, self.resize):
            shrinking = self.resize < min(height, width)
            x = F.interpolate(
                x, size=(self.resize, self.resize), mode="bilinear", align_corners=False,
                antialias=shrinking,
            )  # fmt: skip
        x = (x * self.scale + self.shift).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _random_crop_flip(
    images: Tensor, pad: int, pad_mode: str, flip: bool, generator: torch.Generator
) -> Tensor:
    """Per image: a random crop of the padded image, then a random horizontal flip if `flip`.

    Done as two gathers with per-image source rows/columns, so there is no loop over images
    and no padded copy. Random numbers come from a CPU generator, so results match on any device.
    """
    n, c, height, width = images.shape
    device = images.device
    shifts = torch.randint(-pad, pad + 1, (2, n), generator=generator).to(device)
    rows = torch.arange(height, device=device) + shifts[0, :, None]  # (n, height)
    cols = torch.arange(width, device=device) + shifts[1, :, None]  # (n, width)
    if flip:
        flipped = (torch.rand(n, generator=generator) < 0.5).to(device)
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    if pad_mode == "reflect":  # mirror around the edge pixel, like F.pad(mode="reflect")
        rows = torch.where(rows < 0, -rows, rows)
        rows = torch.where(rows >= height, 2 * (height - 1) - rows, rows)
        cols = torch.where(cols < 0, -cols, cols)
        cols = torch.where(cols >= width, 2 * (width - 1) - cols, cols)
    else:
        inside = ((rows >= 0) & (rows < height))[:, None, :, None] & ((cols >= 0) & (cols < width))[
            :, None, None, :
        ]
        rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    out = images.gather(2, rows[:, None, :, None].expand(n, c, height, width))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, height, width))
    if pad_mode == "constant":
        out = out * inside
    return out


class DeviceLoader:
    """Whole dataset as uint8 NCHW tensor on the device; yields (float images normalized NCHW, int64 labels).

    Epoch k's order and augmentation depend only on (seed, k), so a resumed run repeats its
    batches exactly. `drop_last` (default: `train`) drops an incomplete last batch unless it is
    the only one.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        resize: int | None = None,
        augment: bool = False,
        flip: bool = True,
        pad: int = 4,
        drop_last: bool | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        pad_mode: str = "reflect",
    ) -> None:
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise D2LCNNError(
                f"DeviceLoader needs uint8 images of shape (N, C, H, W); got {images.dtype} of "
                f"shape {tuple(images.shape)}. Pass raw 0..255 pixels: normalising happens here."
            )
        if images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
            raise D2LCNNError(
                f"Images of shape {tuple(images.shape)} look like NHWC; DeviceLoader needs NCHW: "
                f"images.permute(0, 3, 1, 2)."
            )
        if labels.ndim != 1 or len(labels) != len(images) or labels.is_floating_point():
            raise D2LCNNError(
                f"labels must be a 1-D integer tensor with one label per image; got "
                f"{labels.dtype} of shape {tuple(labels.shape)} for {len(images)} images."
            )
        if batch_size < 1:
            raise D2LCNNError(f"batch_size must be at least 1, got {batch_size}.")
        self.device = _device(device)
        self.transform = _BatchTransform(
            mean, std, channels=images.shape[1], image_hw=tuple(images.shape[2:]),
            device=self.device, resize=resize, augment=augment, flip=flip, pad=pad,
            pad_mode=pad_mode, dtype=dtype, channels_last=channels_last,
        )  # fmt: skip
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.drop_last = train if drop_last is None else drop_last
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    @property
    def num_examples(self) -> int:
        """Examples this loader (this shard, if sharded) covers per epoch."""
        return _shard_size(len(self.labels), self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        return _num_batches(self.num_examples, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (each iteration then counts up from there)."""
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> DeviceLoader:
        """This loader's share for `rank` of `world_size`: disjoint from the other ranks' shares."""
        _check_shard(rank, world_size, self.world_size)
        shard = copy.copy(self)  # shares the tensors on the device
        shard.rank, shard.world_size = rank, world_size
        return shard

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = _epoch_order(
            len(self.labels), self.train, self.seed, epoch, self.rank, self.world_size,
            self.drop_last,
        ).to(self.device)  # fmt: skip
        generator = torch.Generator().manual_seed(_seed(self.seed, epoch, 1, self.rank))
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            images = self.images.index_select(0, index)
            yield self.transform(images, generator), self.labels.index_select(0, index)


class _EpochBatchSampler:
    """Batches of indices for DataLoader(batch_sampler=...), ordered like DeviceLoader's."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.epoch, self.rank, self.world_size = seed, 0, 0, 1

    def __len__(self) -> int:
        n = _shard_size(self.n, self.rank, self.world_size, self.drop_last)
        return _num_batches(n, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        order = _epoch_order(
            self.n, self.shuffle, self.seed, self.epoch, self.rank, self.world_size, self.drop_last
        ).tolist()
        for i in range(len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]


class TorchLoader:
    """A torch DataLoader (ImageFolder, full STL-10) behind the same interface as DeviceLoader.

    Yields (images, labels) on the device. `batch_transform(uint8 batch, generator)`, if given,
    runs on the device after the transfer (how STL-10 is augmented and normalised).
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        *,
        batch_size: int,
        train: bool,
        seed: int = 0,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
        drop_last: bool | None = None,
        batch_transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    ) -> None:
        if batch_size < 1:
            raise D2LCNNError(f"batch_size must be at least 1, got {batch_size}.")
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.drop_last = train if drop_last is None else drop_last
        self.seed = seed
        self.device = _device(device)
        self.num_workers = min(2, os.cpu_count() or 1) if num_workers is None else num_workers
        self.batch_transform = batch_transform
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._build()

    def _build(self) -> None:
        self._sampler = _EpochBatchSampler(
            len(self.dataset), self.batch_size, self.train, self.drop_last, self.seed
        )
        self._sampler.rank, self._sampler.world_size = self.rank, self.world_size
        self._loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self._sampler,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(_seed(self.seed, 2)),
        )

    @property
    def num_examples(self) -> int:
        """Examples this loader (this shard, if sharded) covers per epoch."""
        return _shard_size(len(self.dataset), self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        return len(self._sampler)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (each iteration then counts up from there)."""
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> TorchLoader:
        """This loader's share for `rank` of `world_size`: disjoint from the other ranks' shares."""
        _check_shard(rank, world_size, self.world_size)
        shard = copy.copy(self)
        shard.rank, shard.world_size = rank, world_size
        shard._build()
        return shard

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        self._sampler.epoch = epoch
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(_seed(self.seed, epoch, 1, self.rank))
        try:
            for images, labels in self._loader:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                if self.batch_transform is not None:
                    images = self.batch_transform(images, generator)
                yield images, labels
        except D2LCNNError as err:
            message = str(err)
            if "DataLoader worker" in message:  # drop the worker's traceback, keep our message
                prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
                last = message.strip().splitlines()[-1]
                message = last.removeprefix(prefix)
            raise type(err)(message) from None


class _ArrayDataset(torch.utils.data.Dataset):
    """uint8 CHW tensors and labels from NHWC numpy images (memory-mapped STL-10 files stay lazy)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray | None) -> None:
        self.images, self.labels = images, labels
        self.indices = np.arange(len(labels)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        j = self.indices[i]
        image = np.array(self.images[j].transpose(2, 0, 1), dtype=np.uint8, order="C")
        return torch.from_numpy(image), int(self.labels[j])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self.images, np.memmap):  # send the path to workers, not the pixels
            state["images"] = Path(self.images.filename)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["images"], Path):
            state["images"] = _stl10_images(state["images"])
        self.__dict__.update(state)


# ----------------------------------------------------------------------------------------------
# One call from a name (or a folder) to ready loaders


@dataclass
class Data:
    """A dataset ready to train on: loaders plus what a model and a plot need to know."""

    name: str
    train: DeviceLoader | TorchLoader
    test: DeviceLoader | TorchLoader
    classes: list[str]
    in_channels: int
    image_size: int  # after resize
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalised images (NCHW or CHW) back to [0, 1] on the CPU, for plotting."""
        x = x.detach().float().cpu()
        shape = (-1, 1, 1) if x.ndim == 3 else (1, -1, 1, 1)
        mean = torch.tensor(self.mean).view(shape)
        std = torch.tensor(self.std).view(shape)
        return (x * std + mean).clamp(0, 1)

    def __repr__(self) -> str:
        size = self.image_size
        return (
            f"Data({self.name}: {self.train.num_examples:,} train / {self.test.num_examples:,} "
            f"test images, {self.num_classes} classes, {self.in_channels}x{size}x{size}, "
            f"batch {self.train.batch_size}, device {self.train.device}, from {self.source})"
        )


def _nchw_tensor(images: np.ndarray, indices: np.ndarray | None) -> Tensor:
    chosen = images if indices is None else images[indices]
    if not chosen.flags.writeable:
        chosen = chosen.copy()
    return torch.from_numpy(chosen).permute(0, 3, 1, 2).contiguous()


def load(
    name: str,
    *,
    root: str | Path | None = None,
    batch_size: int = 256,
    test_batch_size: int | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    resize: int | None = None,
    augment: bool = False,
    device: str | torch.device | None = None,
    seed: int = 0,
    download: bool | None = None,
    channels_last: bool = False,
) -> Data:
    """Dataset `name` as train/test loaders on `device` (default: cuda, else mps, else cpu).

    `*_per_class` keep a seeded class-balanced subset; `resize` scales images on the device;
    `augment` adds random crops (and flips where they make sense) to the training batches.
    """
    info = _info(name)
    arrays = load_arrays(name, root, download)
    device = _device(device)
    train_index = test_index = None
    if train_per_class is not None:
        train_index = balanced_subset(arrays.train_labels, train_per_class, seed)
    if test_per_class is not None:
        test_index = balanced_subset(arrays.test_labels, test_per_class, seed)
    test_batch_size = test_batch_size or batch_size
    style = dict(mean=info.mean, std=info.std, resize=resize, channels_last=channels_last)
    augmentation = dict(augment=augment, flip=info.flip, pad=info.pad, pad_mode=info.pad_mode)

    if name == "stl10":  # too big to copy to the device whole: read the memory-mapped files
        hw = (info.image_size, info.image_size)

        def transform(random_args: dict) -> _BatchTransform:
            return _BatchTransform(channels=3, image_hw=hw, device=device, **style, **random_args)

        train = TorchLoader(
            _ArrayDataset(arrays.train_images, arrays.train_labels, train_index),
            batch_size=batch_size, train=True, seed=seed, device=device,
            batch_transform=transform(augmentation),
        )  # fmt: skip
        test = TorchLoader(
            _ArrayDataset(arrays.test_images, arrays.test_labels, test_index),
            batch_size=test_batch_size, train=False, seed=seed, device=device,
            batch_transform=transform({}),
        )  # fmt: skip
    else:
        train = DeviceLoader(
            _nchw_tensor(arrays.train_images, train_index),
            torch.from_numpy(arrays.train_labels[train_index] if train_index is not None
                             else arrays.train_labels),
            batch_size=batch_size, train=True, seed=seed, device=device, **style, **augmentation,
        )  # fmt: skip
        test = DeviceLoader(
            _nchw_tensor(arrays.test_images, test_index),
            torch.from_numpy(arrays.test_labels[test_index] if test_index is not None
                             else arrays.test_labels),
            batch_size=test_batch_size, train=False, seed=seed, device=device, **style,
        )  # fmt: skip
    return Data(
        name=name, train=train, test=test, classes=arrays.classes, in_channels=info.channels,
        image_size=resize or info.image_size, mean=info.mean, std=info.std, source=arrays.source,
    )  # fmt: skip


def _load_rgb(path: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptDataError(f"Cannot read image {path}: {err}. Remove or replace it.") from None


_FOLDER_LAYOUT = (
    "PATH/<class name>/<image> (split into train/test here), or PATH/train/<class name>/<image> "
    "plus PATH/test/<class name>/<image> (or PATH/val/...)"
)


def _image_folder(folder: Path, transform: Callable) -> Any:
    from torchvision.datasets import ImageFolder

    class _ImageFolder(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            # Hidden folders such as .ipynb_checkpoints are not classes.
            classes = sorted(
                e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
            )
            if not classes:
                raise FileNotFoundError(f"no class folders in {directory}")
            return classes, {name: i for i, name in enumerate(classes)}

    try:
        return _ImageFolder(str(folder), transform=transform, loader=_load_rgb)
    except FileNotFoundError as err:
        raise DataNotFoundError(
            f"No images found under {folder} ({err}). Expected layout: {_FOLDER_LAYOUT}."
        ) from None


def _stratified_split(targets: Sequence[int], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        n_test = round(len(members) * test_fraction)
        if len(members) >= 2:  # every class with two images gets one on each side
            n_test = min(max(n_test, 1), len(members) - 1)
        test += members[:n_test].tolist()
        train += members[n_test:].tolist()
    return sorted(train), sorted(test)


def load_folder(
    path: str | Path,
    *,
    image_size: int = 224,
    batch_size: int = 64,
    test_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = True,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
) -> Data:
    """Your own images, one folder per class, as Data with ImageNet normalisation.

    Uses PATH/train and PATH/test (or PATH/val) if present, else splits the class folders with
    a seeded, class-stratified `test_fraction`.
    """
    from torch.utils.data import Subset
    from torchvision import transforms

    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"{path} is not a folder. Expected layout: {_FOLDER_LAYOUT}.")
    if not 0 < test_fraction < 1:
        raise D2LCNNError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    normalize = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if augment:
        train_crop = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
    else:
        train_crop = [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    train_transform = transforms.Compose(train_crop + normalize)
    test_transform = transforms.Compose(
        [transforms.Resize(image_size), transforms.CenterCrop(image_size)] + normalize
    )

    test_dir = next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
    base = path / "train" if (path / "train").is_dir() else path
    if base != path and test_dir is not None:
        train_set = _image_folder(base, train_transform)
        test_set = _image_folder(test_dir, test_transform)
        if train_set.classes != test_set.classes:
            only_train = sorted(set(train_set.classes) - set(test_set.classes))
            only_test = sorted(set(test_set.classes) - set(train_set.classes))
            raise D2LCNNError(
                f"The class folders of {base.name}/ and {test_dir.name}/ differ: only in "
                f"{base.name}: {only_train or 'none'}; only in {test_dir.name}: {only_test or 'none'}."
            )
        classes = train_set.classes
    else:
        full = _image_folder(base, train_transform)
        full_test = copy.copy(full)
        full_test.transform = test_transform
        train_index, test_index = _stratified_split(full.targets, test_fraction, seed)
        if not train_index or not test_index:
            raise DataNotFoundError(
                f"{base} has too few images to split into train and test ({len(full)} found)."
            )
        train_set, test_set = Subset(full, train_index), Subset(full_test, test_index)
        classes = full.classes
    loader = dict(batch_size=batch_size, seed=seed, device=device, num_workers=num_workers)
    name = path.resolve().name
    return Data(
        name=name,
        train=TorchLoader(train_set, train=True, **loader),
        test=TorchLoader(test_set, train=False, **loader),
        classes=list(classes),
        in_channels=3,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source=f"{name}/ (ImageFolder)",
    )
