"""What d2lcnn knows about each dataset, and reading its files into numpy arrays. A dataset comes from
`<data root>/<name>.npz`, else from the files a torchvision download leaves (MNIST/raw, FashionMNIST/raw,
cifar-10-batches-py, stl10_binary), else from a download through torchvision; `import_offline` brings
the files onto a machine without network access."""

from __future__ import annotations

import codecs
import filecmp
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
from .files import atomic_write, make_folder


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
    classes: tuple[str, ...]  # torchvision's class names, used unless a .npz carries its own
    pad: int  # padding of the random crop when augmenting
    pad_mode: str  # "constant" (black border) or "reflect"


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", 10, 28, 1, (0.1307,), (0.3081,), flip=False, pad=2, pad_mode="constant",
        classes=tuple(f"{i} - {word}" for i, word in enumerate(
            ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])),
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 10, 28, 1, (0.2860,), (0.3530,), flip=True, pad=2, pad_mode="constant",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 32, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), flip=True,
        pad=4, pad_mode="reflect",
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
    "stl10": DatasetInfo(
        "stl10", 10, 96, 3, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), flip=True,
        pad=12, pad_mode="reflect",
        classes=("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
    ),
}  # fmt: skip

_IDX_FILES = {  # part of a dataset -> its file in torchvision's MNIST/FashionMNIST raw folder
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_PARTS = tuple(_IDX_FILES)  # the four arrays of every dataset, and the keys of its .npz
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
    make_folder(root, "Set the environment variable D2LCNN_DATA to a folder you can write to.")
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
        train, test = ("x".join(map(str, images.shape)) for images in (self.train_images, self.test_images))
        return f"Arrays(train {train}, test {test}, {len(self.classes)} classes, from {self.source})"


def load_arrays(name: str, root: str | Path | None = None, download: bool | None = None) -> Arrays:
    """Dataset `name` from the data root: `<name>.npz`, else torchvision's raw files, else downloaded
    through torchvision unless `download` is False (then DataNotFoundError). A bad file: CorruptDataError."""
    info = dataset_info(name)
    root = _root(root)
    npz = root / f"{name}.npz"
    if npz.is_symlink() and not npz.exists():
        raise DataNotFoundError(
            f"{npz} is a link to {os.readlink(npz)}, which no longer exists. "
            f"Import the file again (`d2lcnn data import DIR`) or delete the link."
        )
    if npz.is_file():
        return _checked_arrays(info, *_read_npz(npz), npz, source=npz.name)
    folder = _RAW_LAYOUT[name][1]
    missing = _missing_raw_files(name, root)
    if missing and download is False:
        raise _not_found(info, root, missing, "download=False was given")
    if missing:
        _torchvision_download(info, root, missing)
    parts = {"cifar10": _read_cifar, "stl10": _read_stl10}.get(name, _read_idx_folder)(root / folder)
    source = f"{folder} (downloaded by torchvision)" if missing else folder
    return _checked_arrays(info, parts, None, root / folder, source=source)


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
        f"Dataset {info.name!r} is not in the data root {root} (no {info.name}.npz, {raw}), and {reason}. "
        f"Either run once with internet access (d2lcnn downloads it through torchvision), or put "
        f"{info.name}.npz (keys {', '.join(_PARTS)}, optionally classes) or the raw files there, e.g. "
        f"with `d2lcnn data import DIR` (DIR holding the .npz or the four MNIST/Fashion-MNIST idx .gz "
        f"files). Pass root=... or set D2LCNN_DATA to use another data root."
    )


def describe_root(root: str | Path | None = None) -> list[str]:
    """One line per dataset saying whether the data root holds it, and as which files."""
    default = (
        "$D2LCNN_DATA" if os.environ.get("D2LCNN_DATA") else "~/.cache/d2lcnn (set D2LCNN_DATA to move it)"
    )
    lines = [f"data root: {default if root is None else root}"]
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


# ----------------------------------------------------------------------------- reading the files


def _checked_arrays(info: DatasetInfo, parts: dict, classes: Any, where: Path, source: str) -> Arrays:
    """The arrays a reader found, once they are what `info` says (else one CorruptDataError)."""
    s, c = info.image_size, info.channels
    for split in ("train", "test"):
        images, labels = parts[f"{split}_images"], parts[f"{split}_labels"]
        what = f"{where}: {split}_images"
        if images.dtype != np.uint8:
            raise CorruptDataError(f"{what} has dtype {images.dtype}; expected uint8 pixel values 0..255.")
        if images.ndim == 3 and c == 1:
            images = images[..., None]
        if images.ndim != 4 or images.shape[1:] != (s, s, c):
            nchw = images.ndim == 4 and images.shape[1:] == (c, s, s)
            hint = " It looks like NCHW; store NHWC (images.transpose(0, 2, 3, 1))." if nchw else ""
            raise CorruptDataError(
                f"{what} has shape {images.shape}; {info.name} needs (N, {s}, {s}, {c}).{hint}"
            )
        if len(images) == 0:
            raise CorruptDataError(f"{what} holds no images.")
        what = f"{where}: {split}_labels"
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            expected = "expected a 1-D array of integer class indices"
            raise CorruptDataError(f"{what} has dtype {labels.dtype} and shape {labels.shape}; {expected}.")
        if len(labels) != len(images):
            raise CorruptDataError(f"{what} has {len(labels)} labels for {len(images)} images.")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= info.num_classes:
            raise CorruptDataError(f"{what} has values {low}..{high}; expected 0..{info.num_classes - 1}.")
        parts[f"{split}_images"], parts[f"{split}_labels"] = images, labels.astype(np.int64, copy=False)
    if classes is not None and len(classes) != info.num_classes:
        raise CorruptDataError(
            f"{where}: classes lists {len(classes)} names; {info.name} has {info.num_classes}."
        )
    classes = info.classes if classes is None else classes
    names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes]
    return Arrays(**parts, classes=names, source=source)


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The four arrays of a dataset .npz, and its class names if it has them."""
    fix = "Replace it with a good copy."
    if not zipfile.is_zipfile(path):
        raise CorruptDataError(
            f"{path} is not an .npz archive (not a zip file: damaged, truncated or another format). {fix}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = npz.files
            found = {key: npz[key] for key in (*_PARTS, "classes") if key in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise CorruptDataError(f"{path} is not a readable .npz file ({err}). {fix}") from None
    missing = [key for key in _PARTS if key not in found]
    if missing:
        raise CorruptDataError(
            f"{path} lacks the key(s) {', '.join(missing)} (it has: {', '.join(keys) or 'nothing'}). "
            f"A dataset .npz needs {', '.join(_PARTS)} and optionally classes. {fix}"
        )
    return found, found.pop("classes", None)


def _read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    return {part: _read_idx(_idx_path(folder, file))[1] for part, file in _IDX_FILES.items()}


def _read_idx(path: Path) -> tuple[bytes, np.ndarray]:
    """The bytes of an idx file (the MNIST format: magic 0 0 8 ndim, big-endian sizes, uint8 data),
    decompressed if gzipped, and the array they hold."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDataError(f"Cannot read {path}: {err}. Replace it with a good copy.") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 4:
        raise CorruptDataError(
            f"{path} is not an idx file of uint8 data (its header is {data[:4].hex() or 'empty'}, "
            f"expected 000008 followed by the number of dimensions)."
        )
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise CorruptDataError(f"{path} is truncated: it ends inside its header.")
    shape = struct.unpack(f">{data[3]}I", data[4:header])
    expected, found = math.prod(shape), len(data) - header
    if found != expected:
        raise CorruptDataError(
            f"{path} {'is truncated' if found < expected else 'has trailing bytes'}: its header promises "
            f"shape {shape} ({expected} bytes) but {found} bytes follow. Replace it with a good copy."
        )
    return data, np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {  # what a CIFAR-10 batch needs: numpy arrays in a dict
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how pickle protocol 2 stores bytes
}
for _numpy in ("numpy.core", "numpy._core"):  # pickles written under numpy 1 or 2
    _PICKLE_ALLOWED[(f"{_numpy}.multiarray", "_reconstruct")] = np.zeros(1).__reduce__()[0]
    _PICKLE_ALLOWED[(f"{_numpy}.numeric", "_frombuffer")] = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a pickle cannot run code through us."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not allowed")
        return _PICKLE_ALLOWED[(module, name)]


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images (NHWC) and labels of a CIFAR-10 batch: a pickled dict of 'data' and 'labels'."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise CorruptDataError(f"{path} is not a CIFAR-10 batch file ({err}).") from None
    rows, labels = (batch.get("data"), batch.get("labels")) if isinstance(batch, dict) else (None, None)
    if (
        not isinstance(rows, np.ndarray)
        or rows.shape[1:] != (3072,)
        or labels is None
        or len(labels) != len(rows)
    ):
        raise CorruptDataError(
            f"{path} is not a CIFAR-10 batch: expected 'data' (uint8, N x 3072) and N 'labels'."
        )
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels)  # a red, green, blue plane


def _read_cifar(folder: Path) -> dict[str, np.ndarray]:
    parts = {}
    for split, files in (("train", _CIFAR_TRAIN), ("test", ("test_batch",))):
        batches = [_cifar_batch(folder / file) for file in files]
        parts[f"{split}_images"] = np.concatenate([images for images, _ in batches])
        parts[f"{split}_labels"] = np.concatenate([labels for _, labels in batches])
    return parts


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


def _read_stl10(folder: Path) -> dict[str, np.ndarray]:
    parts = {}
    for split in ("train", "test"):
        images = stl10_images(folder / f"{split}_X.bin")
        labels = np.fromfile(folder / f"{split}_y.bin", np.uint8).astype(np.int64) - 1  # stored as 1..10
        if len(labels) != len(images):
            raise CorruptDataError(
                f"{folder / split}_y.bin has {len(labels)} labels for the {len(images)} images of "
                f"{split}_X.bin: one of them is truncated."
            )
        parts[f"{split}_images"], parts[f"{split}_labels"] = images, labels
    return parts


# ----------------------------------------------------------------------------- importing files offline


def import_offline(
    sources: Sequence[str | Path], root: str | Path | None = None, *, as_name: str | None = None
) -> list[str]:
    """Bring dataset files into the data root without network access; return one line per thing done.

    A source is a `<name>.npz` (linked, or copied where links fail), or a folder of such files and/or
    of the four MNIST or Fashion-MNIST idx files (.gz or not), decompressed into the raw folder of
    `as_name`, else of "fashion" or "mnist" in the folder's path. A different file is never replaced.
    """
    if as_name is not None and as_name not in ("mnist", "fashion_mnist"):
        raise unknown_name("idx dataset", as_name, ("mnist", "fashion_mnist"))
    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    done = []
    for source in (Path(s).expanduser() for s in sources):
        if not source.exists():
            raise DataNotFoundError(f"{source} does not exist.")
        if source.is_file() and not (source.suffix == ".npz" and source.stem in DATASETS):
            raise D2LCNNError(
                f"Don't know how to import {source}: expected a file named <name>.npz with "
                f"<name> one of {', '.join(DATASETS)}, or a folder of such files or of idx files."
            )
        npz_files = [source] if source.is_file() else [source / f"{n}.npz" for n in DATASETS]
        done += [_import_npz(path, root) for path in npz_files if path.is_file()]
        if source.is_file():
            continue
        idx = {f: _idx_path(source, f) for f in _IDX_FILES.values()}
        absent = [f for f, path in idx.items() if not path.is_file()]
        if absent and len(absent) < len(idx):
            raise DataNotFoundError(
                f"{source} holds only some of the idx files: {', '.join(absent)} missing (.gz or not)."
            )
        if not absent:
            done.append(_import_idx(source, idx, root, as_name))
        elif not any(path.is_file() for path in npz_files):
            raise DataNotFoundError(
                f"Nothing to import in {source}: expected {', '.join(f'{n}.npz' for n in DATASETS)} "
                f"or the four idx files {', '.join(f'{f}.gz' for f in _IDX_FILES.values())}."
            )
    return done


def _import_npz(source: Path, root: Path) -> str:
    _checked_arrays(DATASETS[source.stem], *_read_npz(source), source, source.name)  # refuse a bad file
    target = root / source.name
    if target.is_symlink() and not target.exists():
        target.unlink()  # a dangling link from an earlier import holds nothing
    if target.exists() and filecmp.cmp(source, target, shallow=False):
        return f"{source.name}: already in the data root"
    if target.exists():
        return f"{source.name}: NOT imported, the data root has a different one (delete it to replace it)"
    try:
        os.symlink(source.resolve(), target)
        return f"{source.name}: linked into the data root"
    except OSError:  # e.g. Windows without the right to make links
        with open(source, "rb") as src:
            atomic_write(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
        return f"{source.name}: copied into the data root"


def _import_idx(source: Path, files: dict[str, Path], root: Path, as_name: str | None) -> str:
    where = str(source.resolve()).lower()
    name = as_name or ("fashion_mnist" if "fashion" in where else "mnist" if "mnist" in where else None)
    if name is None:
        raise D2LCNNError(
            f"Cannot tell whether the idx files in {source} are MNIST or Fashion-MNIST: "
            f"pass as_name='mnist' or as_name='fashion_mnist'."
        )
    folder = _RAW_LAYOUT[name][1]
    contents = {file: _read_idx(path)[0] for file, path in files.items()}  # all checked before writing
    written, same, kept = [], [], []
    for file, content in contents.items():
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
