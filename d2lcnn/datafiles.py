"""Dataset files: what d2lcnn knows about each dataset, where its files live, reading them into numpy
arrays, and bringing them onto a machine without network access.

Where a dataset comes from, in the order tried (see `load_arrays`):

1. `<data root>/<name>.npz` (keys train_images, train_labels, test_images, test_labels, classes);
2. the layout torchvision leaves after a download (`MNIST/raw`, `FashionMNIST/raw`,
   `cifar-10-batches-py`, `stl10_binary`);
3. a download through torchvision.
"""

from __future__ import annotations

import codecs
import filecmp
import functools
import gzip
import math
import os
import pickle
import shutil
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptDataError, D2LCNNError, DataNotFoundError, unknown_name
from .files import atomic_write

__all__ = [
    "DATASETS",
    "Arrays",
    "DatasetInfo",
    "data_root",
    "dataset_info",
    "describe_root",
    "import_offline",
    "load_arrays",
    "stl10_images",
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

_NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
_IDX_FILES = {  # part -> file name in torchvision's MNIST/FashionMNIST raw folder
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_STL_IMAGE_BYTES = 3 * 96 * 96
# dataset -> (torchvision class, folder under the data root, files it must hold)
_RAW_LAYOUT = {
    "mnist": ("MNIST", "MNIST/raw", tuple(_IDX_FILES.values())),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", tuple(_IDX_FILES.values())),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (*_CIFAR_TRAIN, "test_batch")),
    "stl10": ("STL10", "stl10_binary", ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")),
}


def dataset_info(name: str) -> DatasetInfo:
    """DATASETS[name], or an UnknownNameError that suggests the closest name."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    return DATASETS[name]


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


def _root(root: str | Path | None) -> Path:
    return Path(root).expanduser() if root is not None else data_root()


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


# ----------------------------------------------------------------------------------------------
# Finding a dataset (or downloading it)


def load_arrays(name: str, root: str | Path | None = None, download: bool | None = None) -> Arrays:
    """Read dataset `name` from the data root, downloading it through torchvision if needed.

    Looks for `<name>.npz`, then torchvision's raw layout; else downloads unless `download` is
    False. Raises DataNotFoundError if the data cannot be had, CorruptDataError if a file is bad.
    """
    info = dataset_info(name)
    root = _root(root)
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
        return _read_raw(info, root)
    if download is False:
        raise _not_found(info, root, missing, "download=False was given")
    _torchvision_download(info, root, missing)
    arrays = _read_raw(info, root)
    arrays.source += " (downloaded by torchvision)"
    return arrays


def _torchvision_download(info: DatasetInfo, root: Path, missing: list[str]) -> None:
    import torchvision.datasets  # takes about a second to import: only a download needs it

    dataset_class = getattr(torchvision.datasets, _RAW_LAYOUT[info.name][0])
    print(f"Downloading {info.name} through torchvision into the data root (first use only)...")
    # Building the (smaller) test split downloads the whole dataset; we read the files ourselves.
    split = {"split": "test"} if info.name == "stl10" else {"train": False}
    try:
        dataset_class(str(root), download=True, **split)
    except Exception as err:  # network errors come in many types (URLError, RuntimeError, OSError)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
        cause = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        reason = f"downloading it through torchvision failed ({type(err).__name__}: {cause[:300]})"
        raise _not_found(info, root, missing, reason) from None
    missing = _missing_raw_files(info.name, root)
    if missing:
        raise _not_found(info, root, missing, "torchvision's download did not produce them")


def _idx_path(folder: Path, file: str) -> Path:
    """An idx file as it is, else gzipped."""
    return folder / file if (folder / file).is_file() else folder / f"{file}.gz"


def _missing_raw_files(name: str, root: Path) -> list[str]:
    _, folder, files = _RAW_LAYOUT[name]
    if name in ("mnist", "fashion_mnist"):
        return [f for f in files if not _idx_path(root / folder, f).is_file()]
    return [f for f in files if not (root / folder / f).is_file()]


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


def describe_root(root: str | Path | None = None) -> list[str]:
    """One line per dataset saying whether the data root holds it, and as which files."""
    if root is not None:
        lines = [f"data root: {root}"]
    elif os.environ.get("D2LCNN_DATA"):
        lines = ["data root: $D2LCNN_DATA"]
    else:
        lines = ["data root: ~/.cache/d2lcnn (set D2LCNN_DATA to move it)"]
    root = _root(root)
    for name in DATASETS:
        if (root / f"{name}.npz").exists():
            where = f"{name}.npz"
        elif (root / f"{name}.npz").is_symlink():
            where = f"{name}.npz is a broken link: import it again"
        elif not _missing_raw_files(name, root):
            where = f"{_RAW_LAYOUT[name][1]}/"
        else:
            where = "not here (downloaded on first use, or `d2lcnn data import DIR`)"
        lines.append(f"{name}: {where}")
    return lines


# ----------------------------------------------------------------------------------------------
# Reading and checking the arrays


def _open_npz(path: Path, fix: str) -> Any:
    """The open .npz archive, once it is known to be one that holds the four dataset arrays."""
    if not zipfile.is_zipfile(path):
        raise CorruptDataError(
            f"{path} is not an .npz archive (not a zip file: damaged, truncated or another format). {fix}"
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as err:
        raise CorruptDataError(f"{path} is not a readable .npz file ({err}). {fix}") from None
    missing = [k for k in _NPZ_KEYS if k not in npz.files]
    if missing:
        npz.close()
        raise CorruptDataError(
            f"{path} lacks the key(s) {', '.join(missing)} (it has: {', '.join(npz.files) or 'nothing'}). "
            f"A dataset .npz needs {', '.join(_NPZ_KEYS)} and optionally classes. {fix}"
        )
    return npz


def _read_npz(path: Path, info: DatasetInfo) -> Arrays:
    with _open_npz(path, "Replace it with a good copy.") as npz:
        try:
            parts = {k: npz[k] for k in _NPZ_KEYS}
            classes = npz["classes"] if "classes" in npz.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise CorruptDataError(
                f"Cannot read the arrays in {path} ({err}). Replace it with a good copy."
            ) from None
    return _checked_arrays(info, parts, classes, where=str(path), source=path.name)


def _read_raw(info: DatasetInfo, root: Path) -> Arrays:
    folder = _RAW_LAYOUT[info.name][1]
    reader = {"cifar10": _read_cifar, "stl10": _read_stl10}.get(info.name, _read_idx_folder)
    parts, classes = reader(root / folder, info)
    return _checked_arrays(info, parts, classes, where=str(root / folder), source=folder)


def _checked_arrays(
    info: DatasetInfo,
    parts: dict[str, np.ndarray],
    classes: Sequence[Any] | np.ndarray | None,
    where: str,
    source: str,
) -> Arrays:
    for split in ("train", "test"):
        images = _checked_images(parts[f"{split}_images"], info, f"{where}: {split}_images")
        labels = _checked_labels(parts[f"{split}_labels"], len(images), info, f"{where}: {split}_labels")
        parts[f"{split}_images"], parts[f"{split}_labels"] = images, labels
    if classes is None:
        classes = list(info.classes)
    elif len(classes) != info.num_classes:
        raise CorruptDataError(
            f"{where}: classes lists {len(classes)} names; {info.name} has {info.num_classes}."
        )
    names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes]
    return Arrays(**parts, classes=names, source=source)


def _checked_images(images: np.ndarray, info: DatasetInfo, what: str) -> np.ndarray:
    s, c = info.image_size, info.channels
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
    return images


def _checked_labels(labels: np.ndarray, num_images: int, info: DatasetInfo, what: str) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise CorruptDataError(
            f"{what} has dtype {labels.dtype} and shape {labels.shape}; expected a 1-D "
            f"array of integer class indices."
        )
    if len(labels) != num_images:
        raise CorruptDataError(f"{what} has {len(labels)} labels for {num_images} images.")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= info.num_classes:
        raise CorruptDataError(f"{what} has values {low}..{high}; expected 0..{info.num_classes - 1}.")
    return labels.astype(np.int64, copy=False)


def _read_idx_folder(folder: Path, info: DatasetInfo) -> tuple[dict[str, np.ndarray], None]:
    parts = {}
    for part, file in _IDX_FILES.items():
        path = _idx_path(folder, file)
        parts[part] = _parse_idx(_read_idx_bytes(path), path)
        expected_ndim = 3 if part.endswith("images") else 1
        if parts[part].ndim != expected_ndim:
            raise CorruptDataError(
                f"{path} holds a {parts[part].ndim}-D array; {part} needs {expected_ndim}-D."
            )
    return parts, None


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


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_cifar_pickle(path)
    rows, labels = batch.get("data"), batch.get("labels")
    if not (
        isinstance(rows, np.ndarray)
        and rows.dtype == np.uint8
        and rows.ndim == 2
        and rows.shape[1] == 3 * 32 * 32
        and labels is not None
        and len(labels) == len(rows)
    ):
        raise CorruptDataError(
            f"{path} is not a CIFAR-10 batch: expected 'data' (uint8, N x 3072) and N 'labels'."
        )
    return rows, np.asarray(labels)


def _read_cifar(folder: Path, info: DatasetInfo) -> tuple[dict[str, np.ndarray], Any]:
    parts = {}
    for split, files in (("train", _CIFAR_TRAIN), ("test", ("test_batch",))):
        batches = [_cifar_batch(folder / file) for file in files]
        rows = np.concatenate([rows for rows, _ in batches])  # red, green, then blue 32x32 plane
        parts[f"{split}_images"] = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        parts[f"{split}_labels"] = np.concatenate([labels for _, labels in batches])
    classes = None
    meta = folder / "batches.meta"
    if meta.is_file():
        classes = _load_cifar_pickle(meta).get("label_names")
        if classes is None:
            raise CorruptDataError(f"{meta} has no 'label_names'.")
    return parts, classes


def stl10_images(path: Path) -> np.ndarray:
    """NHWC view of an STL-10 *_X.bin file, memory-mapped (nothing read until used)."""
    size = path.stat().st_size
    if size == 0 or size % _STL_IMAGE_BYTES:
        raise CorruptDataError(
            f"{path} is truncated or not an STL-10 image file: {size} bytes is not a whole "
            f"number of 3x96x96 images ({_STL_IMAGE_BYTES} bytes each)."
        )
    images = np.memmap(path, np.uint8, mode="r", shape=(size // _STL_IMAGE_BYTES, 3, 96, 96))
    return images.transpose(0, 3, 2, 1)  # each image is stored column-major: (C, W, H)


def _read_stl10(folder: Path, info: DatasetInfo) -> tuple[dict[str, np.ndarray], list[str] | None]:
    parts = {}
    for split in ("train", "test"):
        images = stl10_images(folder / f"{split}_X.bin")
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
        parts[f"{split}_images"], parts[f"{split}_labels"] = images, labels.astype(np.int64) - 1
    names_path = folder / "class_names.txt"
    if not names_path.is_file():
        return parts, None
    return parts, [line.strip() for line in names_path.read_text().splitlines() if line.strip()]


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
    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    done = []
    for source in (Path(s).expanduser() for s in sources):
        if source.is_file():
            if not (source.suffix == ".npz" and source.stem in DATASETS):
                raise D2LCNNError(
                    f"Don't know how to import {source}: expected a file named <name>.npz with "
                    f"<name> one of {', '.join(DATASETS)}, or a folder of such files or of idx files."
                )
            done.append(_import_npz(source, root))
        elif source.is_dir():
            done += _import_folder(source, root, as_name)
        else:
            raise DataNotFoundError(f"{source} does not exist.")
    return done


def _import_folder(source: Path, root: Path, as_name: str | None) -> list[str]:
    found = [source / f"{name}.npz" for name in DATASETS if (source / f"{name}.npz").is_file()]
    done = [_import_npz(path, root) for path in found]
    idx = {f: _idx_path(source, f) for f in _IDX_FILES.values()}
    absent = [f for f, path in idx.items() if not path.is_file()]
    if absent and len(absent) < len(idx):
        raise DataNotFoundError(
            f"{source} holds only some of the idx files: {', '.join(absent)} missing (.gz or not)."
        )
    if not absent:
        done.append(_import_idx(source, idx, root, as_name))
    elif not found:
        raise DataNotFoundError(
            f"Nothing to import in {source}: expected {', '.join(f'{n}.npz' for n in DATASETS)} "
            f"or the four idx files {', '.join(f'{f}.gz' for f in _IDX_FILES.values())}."
        )
    return done


def _import_npz(source: Path, root: Path) -> str:
    _open_npz(source, "Not imported.").close()  # refuse a file that is not a dataset .npz
    target = root / source.name
    if target.is_symlink() and not target.exists():
        target.unlink()  # a dangling link from an earlier import holds nothing
    if target.exists():
        if filecmp.cmp(source, target, shallow=False):
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
            atomic_write(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
        return f"{source.name}: copied into the data root"


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
        content = _read_idx_bytes(path)
        _parse_idx(content, path)  # refuse truncated or foreign files before writing anything
        target = root / folder / file
        if target.exists():
            (same if target.read_bytes() == content else kept).append(file)
            continue
        atomic_write(target, lambda f, content=content: f.write(content))
        written.append(file)
    outcomes = [
        (written, f"{len(written)} idx file(s) decompressed into {folder}/"),
        (same, f"{len(same)} already there"),
        (kept, f"NOT replaced (different files already there, delete them first): {', '.join(kept)}"),
    ]
    return f"{name}: " + "; ".join(text for which, text in outcomes if which)
