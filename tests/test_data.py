"""Tests of d2lcnn.datafiles and d2lcnn.data: every way a dataset arrives, every way it can be broken,
and the loaders."""

from __future__ import annotations

import collections
import gzip
import os
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.mnist as tv_mnist
from PIL import Image

from d2lcnn import data, datafiles
from d2lcnn.errors import ConfigError, CorruptDataError, D2LCNNError, DataNotFoundError, UnknownNameError

SHARED = Path(os.environ.get("D2LCNN_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
FASHION_DEB = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def needs_shared(file: str):
    return pytest.mark.skipif(
        not (SHARED / file).is_file(),
        reason=f"real data {file} not found in ../shared/data (or $D2LCNN_SHARED_DATA)",
    )


# ----------------------------------------------------------------------------------------------
# Tiny datasets written in each on-disk format


def tiny_parts(name: str, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    info = datafiles.DATASETS[name]
    rng = np.random.default_rng(seed)
    shape = (info.image_size, info.image_size, info.channels)
    return {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.int64) % 10,
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": (np.arange(n_test, dtype=np.int64) * 3) % 10,
    }


def write_npz(path: Path, parts: dict[str, np.ndarray], classes=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if classes is None else {"classes": np.array(classes)}
    np.savez_compressed(path, **parts, **extra)
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_files(folder: Path, parts: dict[str, np.ndarray], gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for part, file in IDX_NAMES.items():
        array = parts[part][..., 0] if part.endswith("images") else parts[part]
        if gz:
            with gzip.open(folder / f"{file}.gz", "wb") as f:
                f.write(idx_bytes(array))
        else:
            (folder / file).write_bytes(idx_bytes(array))


def write_cifar(folder: Path, parts: dict[str, np.ndarray], classes: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)

    def rows(images: np.ndarray) -> np.ndarray:  # red plane, green plane, blue plane
        return images.transpose(0, 3, 1, 2).reshape(len(images), -1)

    train_rows, train_labels = rows(parts["train_images"]), parts["train_labels"].tolist()
    for i, chunk in enumerate(np.array_split(np.arange(len(train_labels)), 5)):
        batch = {"data": train_rows[chunk], "labels": [train_labels[j] for j in chunk]}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch, protocol=2 + i % 4))
    test = {"data": rows(parts["test_images"]), "labels": parts["test_labels"].tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}))


def write_stl10(folder: Path, parts: dict[str, np.ndarray], classes: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        # The format stores each 3x96x96 image column-major: file order (N, C, W, H).
        stored = parts[f"{split}_images"].transpose(0, 3, 2, 1)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(stored).tobytes())
        (folder / f"{split}_y.bin").write_bytes((parts[f"{split}_labels"] + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(classes) + "\n")


RAW_FOLDERS = {
    "mnist": "MNIST/raw",
    "fashion_mnist": "FashionMNIST/raw",
    "cifar10": "cifar-10-batches-py",
    "stl10": "stl10_binary",
}


def write_raw(name: str, root: Path, parts: dict[str, np.ndarray], classes: list[str]) -> None:
    folder = root / RAW_FOLDERS[name]
    if name in ("mnist", "fashion_mnist"):
        write_idx_files(folder, parts)
    elif name == "cifar10":
        write_cifar(folder, parts, classes)
    else:
        write_stl10(folder, parts, classes)


def assert_same_arrays(arrays: datafiles.Arrays, parts: dict[str, np.ndarray]) -> None:
    for key, expected in parts.items():
        got = getattr(arrays, key)
        assert got.shape == expected.shape, key
        np.testing.assert_array_equal(got, expected, err_msg=key)
    assert arrays.train_images.dtype == np.uint8
    assert arrays.train_labels.dtype == np.int64


# ----------------------------------------------------------------------------------------------
# Names, data root


def test_data_root_follows_env_and_defaults_to_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("D2LCNN_DATA", str(tmp_path / "my" / "data"))
    assert datafiles.data_root() == tmp_path / "my" / "data"
    assert (tmp_path / "my" / "data").is_dir()
    monkeypatch.delenv("D2LCNN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datafiles.data_root() == tmp_path / "home" / ".cache" / "d2lcnn"
    assert datafiles.data_root().is_dir()


def test_unknown_dataset_name_suggests_the_closest(tmp_path):
    with pytest.raises(UnknownNameError, match="cifar10"):
        datafiles.load_arrays("cifar", tmp_path)
    with pytest.raises(UnknownNameError, match="fashion_mnist"):
        data.load("fashion-mnist", root=tmp_path)


# ----------------------------------------------------------------------------------------------
# .npz files


@pytest.mark.parametrize("name", list(datafiles.DATASETS))
def test_npz_round_trip(tmp_path, name):
    parts = tiny_parts(name)
    classes = [f"class {i}" for i in range(10)]
    write_npz(tmp_path / f"{name}.npz", parts, classes)
    arrays = datafiles.load_arrays(name, tmp_path, download=False)
    assert_same_arrays(arrays, parts)
    assert arrays.classes == classes
    assert arrays.source == f"{name}.npz"


def test_npz_without_classes_gets_torchvision_names(tmp_path):
    write_npz(tmp_path / "fashion_mnist.npz", tiny_parts("fashion_mnist"))
    arrays = datafiles.load_arrays("fashion_mnist", tmp_path, download=False)
    assert arrays.classes[0] == "T-shirt/top" and arrays.classes[9] == "Ankle boot"


def test_garbage_npz_is_reported_and_kept(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(CorruptDataError, match="mnist.npz is not an .npz archive"):
        datafiles.load_arrays("mnist", tmp_path)
    assert path.read_bytes() == b"this is not a zip archive" * 10


def test_truncated_npz_is_reported(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", tiny_parts("mnist"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptDataError, match="mnist.npz"):
        datafiles.load_arrays("mnist", tmp_path)
    assert path.exists()


def test_npz_missing_key_names_it(tmp_path):
    parts = tiny_parts("cifar10")
    del parts["test_labels"]
    write_npz(tmp_path / "cifar10.npz", parts)
    with pytest.raises(CorruptDataError, match="lacks the key\\(s\\) test_labels"):
        datafiles.load_arrays("cifar10", tmp_path)


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda p: p.update(train_images=p["train_images"].astype(np.float32)), "dtype float32"),
        (lambda p: p.update(train_images=p["train_images"].transpose(0, 3, 1, 2)), "looks like NCHW"),
        (lambda p: p.update(test_images=p["test_images"][:, :16, :16]), "needs \\(N, 32, 32, 3\\)"),
        (lambda p: p.update(train_labels=p["train_labels"][:-1]), "19 labels for 20 images"),
        (lambda p: p.update(test_labels=p["test_labels"] + 5), "values 5..14; expected 0..9"),
        (lambda p: p.update(train_labels=p["train_labels"].astype(np.float64)), "integer class"),
    ],
)
def test_npz_wrong_content_is_explained(tmp_path, break_it, message):
    parts = tiny_parts("cifar10")
    break_it(parts)
    write_npz(tmp_path / "cifar10.npz", parts)
    with pytest.raises(CorruptDataError, match=message):
        datafiles.load_arrays("cifar10", tmp_path)


# ----------------------------------------------------------------------------------------------
# torchvision's raw layouts


@pytest.mark.parametrize("name", list(datafiles.DATASETS))
def test_raw_layout_round_trip(tmp_path, name):
    parts = tiny_parts(name)
    classes = list(datafiles.DATASETS[name].classes)
    write_raw(name, tmp_path, parts, classes)
    arrays = datafiles.load_arrays(name, tmp_path, download=False)
    assert_same_arrays(arrays, parts)
    assert arrays.classes == classes
    assert arrays.source == RAW_FOLDERS[name]


def test_npz_wins_over_raw_layout(tmp_path):
    write_raw("mnist", tmp_path, tiny_parts("mnist", seed=1), [])
    write_npz(tmp_path / "mnist.npz", tiny_parts("mnist", seed=2))
    arrays = datafiles.load_arrays("mnist", tmp_path)
    assert arrays.source == "mnist.npz"
    np.testing.assert_array_equal(arrays.train_images, tiny_parts("mnist", seed=2)["train_images"])


def test_gzipped_idx_files_in_raw_folder_are_read(tmp_path):
    parts = tiny_parts("fashion_mnist")
    write_idx_files(tmp_path / "FashionMNIST" / "raw", parts, gz=True)
    assert_same_arrays(datafiles.load_arrays("fashion_mnist", tmp_path, download=False), parts)


def test_truncated_idx_file_is_reported(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_idx_files(folder, tiny_parts("mnist"))
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptDataError, match="t10k-images-idx3-ubyte is truncated"):
        datafiles.load_arrays("mnist", tmp_path)
    assert path.exists()


def test_foreign_file_in_idx_place_is_reported(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_idx_files(folder, tiny_parts("mnist"))
    (folder / "train-labels-idx1-ubyte").write_bytes(b"<html>Not found</html>")
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte is not an idx file"):
        datafiles.load_arrays("mnist", tmp_path)


def test_cifar_pickle_cannot_call_other_code(tmp_path):
    parts = tiny_parts("cifar10")
    write_cifar(tmp_path / "cifar-10-batches-py", parts, list(datafiles.DATASETS["cifar10"].classes))
    hostile = {"data": np.zeros((4, 3072), np.uint8), "labels": collections.OrderedDict()}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(hostile))
    with pytest.raises(CorruptDataError, match="data_batch_3 .*collections.OrderedDict.*not allowed"):
        datafiles.load_arrays("cifar10", tmp_path)


def test_truncated_stl10_files_are_reported(tmp_path):
    parts = tiny_parts("stl10")
    folder = tmp_path / "stl10_binary"
    write_stl10(folder, parts, list(datafiles.DATASETS["stl10"].classes))
    x = folder / "train_X.bin"
    x.write_bytes(x.read_bytes()[:-1000])
    with pytest.raises(CorruptDataError, match="train_X.bin is truncated"):
        datafiles.load_arrays("stl10", tmp_path)
    x.write_bytes(x.read_bytes()[: 19 * 3 * 96 * 96])  # a whole number of images, one too few
    with pytest.raises(CorruptDataError, match="20 labels for the 19 images"):
        datafiles.load_arrays("stl10", tmp_path)


# ----------------------------------------------------------------------------------------------
# Missing data and downloads (torchvision's network function replaced: no network is used)


def test_missing_dataset_without_download_explains_both_ways(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("download=False must not download")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    with pytest.raises(DataNotFoundError) as caught:
        datafiles.load_arrays("cifar10", tmp_path, download=False)
    message = str(caught.value)
    for expected in ("cifar10.npz", "cifar-10-batches-py", str(tmp_path), "download=False",
                     "internet access", "d2lcnn data import"):  # fmt: skip
        assert expected in message


def test_partial_raw_layout_names_missing_files(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_idx_files(folder, tiny_parts("mnist"))
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFoundError, match="lacks t10k-labels-idx1-ubyte"):
        datafiles.load_arrays("mnist", tmp_path, download=False)


def test_download_through_torchvision(tmp_path, monkeypatch):
    parts = tiny_parts("fashion_mnist")
    served = {
        f"{file}.gz": idx_bytes(parts[part][..., 0] if part.endswith("images") else parts[part])
        for part, file in IDX_NAMES.items()
    }
    calls = []

    def fake_download(url, download_root, extract_root=None, filename=None, md5=None, **kwargs):
        calls.append(filename)  # what the real one leaves: the file, decompressed, in download_root
        Path(download_root, filename.removesuffix(".gz")).write_bytes(served[filename])

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download)
    arrays = datafiles.load_arrays("fashion_mnist", tmp_path)
    assert sorted(calls) == sorted(served)
    assert_same_arrays(arrays, parts)
    assert "downloaded" in arrays.source
    again = datafiles.load_arrays("fashion_mnist", tmp_path)  # now found on disk
    assert len(calls) == 4 and again.source == "FashionMNIST/raw"


@pytest.mark.parametrize("name, module", [("mnist", tv_mnist), ("cifar10", tv_cifar)])
def test_failed_download_explains_both_ways(tmp_path, monkeypatch, name, module):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(module, "download_and_extract_archive", offline)
    with pytest.raises(DataNotFoundError) as caught:
        datafiles.load_arrays(name, tmp_path)
    message = str(caught.value)
    for expected in (f"{name}.npz", str(tmp_path), "simulated: no network", "internet access",
                     "d2lcnn data import"):  # fmt: skip
        assert expected in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# ----------------------------------------------------------------------------------------------
# Offline import


def test_import_npz_links_once_and_never_overwrites(tmp_path):
    root, src, other = tmp_path / "root", tmp_path / "src", tmp_path / "other"
    parts = tiny_parts("mnist")
    write_npz(src / "mnist.npz", parts)
    write_npz(other / "mnist.npz", tiny_parts("mnist", seed=5))
    assert datafiles.import_offline([src], root) == ["mnist.npz: linked into the data root"]
    assert_same_arrays(datafiles.load_arrays("mnist", root), parts)
    assert datafiles.import_offline([src / "mnist.npz"], root) == ["mnist.npz: already in the data root"]
    (line,) = datafiles.import_offline([other], root)
    assert "NOT imported" in line and str(tmp_path) not in line
    assert_same_arrays(datafiles.load_arrays("mnist", root), parts)


def test_import_refuses_unknown_or_broken_files(tmp_path):
    write_npz(tmp_path / "imagenet.npz", tiny_parts("mnist"))
    with pytest.raises(D2LCNNError, match="Don't know how to import"):
        datafiles.import_offline([tmp_path / "imagenet.npz"], tmp_path / "root")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cifar10.npz").write_bytes(b"garbage")
    with pytest.raises(CorruptDataError, match="cifar10.npz is not an .npz archive"):
        datafiles.import_offline([tmp_path / "bad"], tmp_path / "root")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="Nothing to import"):
        datafiles.import_offline([tmp_path / "empty"], tmp_path / "root")
    assert not (tmp_path / "root" / "cifar10.npz").exists()


def test_import_idx_files_by_folder_name_or_as_name(tmp_path):
    parts = tiny_parts("mnist")
    write_idx_files(tmp_path / "zalando-fashion", parts, gz=True)
    write_idx_files(tmp_path / "digits", parts, gz=True)
    root = tmp_path / "root"
    (line,) = datafiles.import_offline([tmp_path / "zalando-fashion"], root)
    assert line == "fashion_mnist: 4 idx file(s) decompressed into FashionMNIST/raw/"
    assert_same_arrays(datafiles.load_arrays("fashion_mnist", root, download=False), parts)
    with pytest.raises(D2LCNNError, match="as_name='mnist'"):
        datafiles.import_offline([tmp_path / "digits"], root)
    datafiles.import_offline([tmp_path / "digits"], root, as_name="mnist")
    assert_same_arrays(datafiles.load_arrays("mnist", root, download=False), parts)
    assert not list(root.rglob("*.tmp"))


def test_import_idx_keeps_different_existing_files(tmp_path):
    root = tmp_path / "root"
    write_idx_files(tmp_path / "fashion", tiny_parts("fashion_mnist"), gz=True)
    datafiles.import_offline([tmp_path / "fashion"], root)
    mine = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    mine.write_bytes(idx_bytes(np.full(20, 3, np.uint8)))
    (line,) = datafiles.import_offline([tmp_path / "fashion"], root)
    assert "3 already there" in line and "NOT replaced" in line and "train-labels-idx1-ubyte" in line
    assert mine.read_bytes() == idx_bytes(np.full(20, 3, np.uint8))


def test_import_rejects_incomplete_or_truncated_idx_sets(tmp_path):
    folder = tmp_path / "fashion"
    write_idx_files(folder, tiny_parts("fashion_mnist"), gz=True)
    gz = folder / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte.gz"):
        datafiles.import_offline([folder], tmp_path / "root")
    gz.unlink()
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte missing"):
        datafiles.import_offline([folder], tmp_path / "root")


def test_describe_root_lists_what_is_there(tmp_path):
    write_npz(tmp_path / "mnist.npz", tiny_parts("mnist"))
    write_raw("cifar10", tmp_path, tiny_parts("cifar10"), list(datafiles.DATASETS["cifar10"].classes))
    lines = datafiles.describe_root(tmp_path)
    assert "mnist: mnist.npz" in lines and "cifar10: cifar-10-batches-py/" in lines
    assert any(line.startswith("stl10: not here") for line in lines)
    assert not any(str(tmp_path) in line for line in lines[1:])


# ----------------------------------------------------------------------------------------------
# Real data (small subsets)


@needs_shared("mnist.npz")
@pytest.mark.data
def test_real_mnist(tmp_path):
    datafiles.import_offline([SHARED / "mnist.npz"], tmp_path)
    arrays = datafiles.load_arrays("mnist", tmp_path, download=False)
    assert arrays.train_images.shape == (60000, 28, 28, 1)
    assert arrays.test_images.shape == (10000, 28, 28, 1)
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # shared/data/README.md
    assert np.bincount(arrays.train_labels).tolist() == counts
    assert arrays.train_images.mean() / 255 == pytest.approx(0.1307, abs=5e-4)

    d = data.load("mnist", root=tmp_path, batch_size=64, train_per_class=20, test_per_class=30,
                  device="cpu", download=False)  # fmt: skip
    assert (d.train.num_examples, d.test.num_examples, d.in_channels) == (200, 300, 1)
    images, labels = next(iter(d.train))
    assert images.shape == (64, 1, 28, 28) and labels.dtype == torch.int64
    all_test = torch.cat([x for x, _ in d.test])
    assert abs(all_test.mean().item()) < 0.2 and all_test.std().item() == pytest.approx(1, abs=0.2)
    assert repr(d).endswith("from mnist.npz)") and str(tmp_path) not in repr(d)


@needs_shared("cifar10.npz")
@pytest.mark.data
def test_real_cifar10(tmp_path):
    datafiles.import_offline([SHARED / "cifar10.npz"], tmp_path)
    d = data.load("cifar10", root=tmp_path, batch_size=50, train_per_class=10, test_per_class=10,
                  augment=True, device="cpu", download=False)  # fmt: skip
    assert d.classes[:3] == ["airplane", "automobile", "bird"] and d.image_size == 32
    labels = torch.cat([y for _, y in d.train])
    assert torch.bincount(labels).tolist() == [10] * 10
    images, _ = next(iter(d.test))
    assert images.shape == (50, 3, 32, 32)
    assert d.denormalize(images).min() >= 0 and d.denormalize(images).max() <= 1
    assert str(tmp_path) not in repr(d)


@pytest.mark.skipif(not FASHION_DEB.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_files(tmp_path):
    (line,) = datafiles.import_offline([FASHION_DEB], tmp_path)
    assert line.startswith("fashion_mnist: 4 idx file(s) decompressed")
    arrays = datafiles.load_arrays("fashion_mnist", tmp_path, download=False)
    assert np.bincount(arrays.train_labels).tolist() == [6000] * 10
    assert np.bincount(arrays.test_labels).tolist() == [1000] * 10
    assert arrays.train_images.mean() / 255 == pytest.approx(0.2860, abs=5e-4)
    assert arrays.classes[9] == "Ankle boot"


# ----------------------------------------------------------------------------------------------
# Subsets


def test_balanced_subset_counts_and_seed():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(5), [10, 20, 30, 40, 50]))
    index = data.balanced_subset(labels, 7, seed=3)
    assert len(index) == 35 and np.all(np.diff(index) > 0)
    assert np.bincount(labels[index]).tolist() == [7] * 5
    np.testing.assert_array_equal(index, data.balanced_subset(labels, 7, seed=3))
    assert not np.array_equal(index, data.balanced_subset(labels, 7, seed=4))
    with pytest.raises(D2LCNNError, match="Class 0 has only 10 examples"):
        data.balanced_subset(labels, 11)
    with pytest.raises(D2LCNNError, match="at least 1"):
        data.balanced_subset(labels, 0)


# ----------------------------------------------------------------------------------------------
# DeviceLoader


def loader(images, labels=None, **kwargs) -> data.DeviceLoader:
    labels = torch.arange(len(images)) if labels is None else labels
    channels = images.shape[1]
    options = dict(batch_size=4, mean=(0.0,) * channels, std=(1.0,) * channels, train=True, device="cpu")
    return data.DeviceLoader(images, labels, **{**options, **kwargs})


def random_images(n=16, c=3, size=8, seed=0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_device_loader_normalises_on_the_device():
    images = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (0, 255, 128)])
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    test = loader(images, torch.tensor([2, 0, 1]), batch_size=3, mean=mean, std=std, train=False)
    ((x, y),) = list(test)
    assert x.dtype == torch.float32 and x.shape == (3, 3, 4, 4)
    assert y.dtype == torch.int64 and y.tolist() == [2, 0, 1]
    for i, value in enumerate((0, 255, 128)):
        for c in range(3):
            expected = (value / 255 - mean[c]) / std[c]
            torch.testing.assert_close(x[i, c], torch.full((4, 4), expected), atol=1e-5, rtol=0)


def test_device_loader_resize_28_to_224():
    images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    images[:, :, :, :14] = 255  # left half white
    ((x, _),) = list(loader(images, batch_size=2, train=False, resize=224))
    assert x.shape == (2, 1, 224, 224)
    assert torch.all(x[..., :100] == 1) and torch.all(x[..., 124:] == 0)
    ((small, _),) = list(loader(images, batch_size=2, train=False, resize=14))
    assert small.shape == (2, 1, 14, 14)
    torch.testing.assert_close(small[..., :6], torch.ones(2, 1, 14, 6), atol=1e-5, rtol=0)


def test_device_loader_dtype_and_channels_last():
    ((x, _),) = list(loader(random_images(4), dtype=torch.bfloat16, channels_last=True))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)


def crops(image: torch.Tensor, pad: int, mode: str) -> list[torch.Tensor]:
    """Every crop of the padded image, flipped or not."""
    size = image.shape[-1]
    padded = F.pad(image[None].float(), (pad,) * 4, mode=mode)[0]
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + size, dx : dx + size]
            out += [crop, crop.flip(-1)]
    return out


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_augmentation_is_a_crop_and_flip_of_the_same_image(mode):
    images = random_images(16)
    plain = loader(images, seed=7)
    augmented = loader(images, seed=7, augment=True, pad=2, pad_mode=mode)
    changed = 0
    for (x, y), (x_aug, y_aug) in zip(plain, augmented, strict=True):
        assert torch.equal(y, y_aug)  # same order: augmentation does not move labels
        for i, label in enumerate(y.tolist()):
            out = (x_aug[i] * 255).round()
            assert torch.equal((x[i] * 255).round(), images[label].float())
            assert any(torch.equal(out, crop) for crop in crops(images[label], 2, mode))
            changed += not torch.equal(out, images[label].float())
    assert changed >= 12


def test_flips_happen_only_when_asked():
    images = random_images(32, size=6)
    ((x, y),) = list(loader(images, augment=True, flip=False, pad=0, batch_size=32))
    assert torch.equal((x * 255).round(), images[y].float())  # pad 0 and no flip: unchanged
    ((x, y),) = list(loader(images, augment=True, flip=True, pad=0, batch_size=32))
    out, original = (x * 255).round(), images[y].float()
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, original, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, original, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 6 <= sum(flipped) <= 26


def test_epoch_order_and_augmentation_depend_only_on_seed_and_epoch():
    images = random_images(30)
    first = loader(images, augment=True, seed=3)
    epochs = [list(first) for _ in range(3)]  # __iter__ counts epochs up by itself
    assert first.epoch == 3
    resumed = loader(images, augment=True, seed=3)
    resumed.set_epoch(2)
    for (x, y), (x2, y2) in zip(epochs[2], resumed, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    orders = [torch.cat([y for _, y in epoch]) for epoch in epochs]
    assert not torch.equal(orders[0], orders[1])
    other_seed = torch.cat([y for _, y in loader(images, augment=True, seed=4)])
    assert not torch.equal(orders[0], other_seed)
    fixed_order = loader(images, augment=True, train=False, batch_size=30)
    (x0, y0), (x1, y1) = next(iter(fixed_order)), next(iter(fixed_order))
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)  # new crops every epoch


def test_drop_last_and_len():
    images = random_images(10)
    train = loader(images, batch_size=4, train=True)
    assert len(train) == 2 and sum(len(y) for _, y in train) == 8
    test = loader(images, batch_size=4, train=False)
    assert len(test) == 3 and torch.cat([y for _, y in test]).tolist() == list(range(10))
    tiny = loader(images[:3], batch_size=4, train=True)  # never an empty epoch
    assert len(tiny) == 1 and sum(len(y) for _, y in tiny) == 3


@pytest.mark.parametrize("train", [True, False])
def test_shards_are_disjoint_and_cover_the_epoch(train):
    n, world, batch = 103, 3, 5
    full = loader(random_images(n, size=4), batch_size=batch, train=train, seed=1)
    epochs = []
    for epoch in (0, 4):
        per_rank = []
        for rank in range(world):
            shard = full.shard(rank, world)
            shard.set_epoch(epoch)
            labels = torch.cat([y for _, y in shard]).tolist()
            assert len(labels) == min(len(shard) * batch, shard.num_examples)
            per_rank.append(labels)
        flat = [i for labels in per_rank for i in labels]
        assert len(flat) == len(set(flat))  # disjoint
        if train:  # the same number of batches on every rank, as DDP needs
            assert [len(labels) for labels in per_rank] == [30, 30, 30]
        else:
            assert sorted(flat) == list(range(n))  # covering
        epochs.append(flat)
    assert (epochs[0] != epochs[1]) == train
    with pytest.raises(D2LCNNError, match="rank"):
        full.shard(3, 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_refused_clearly():
    with pytest.raises(ConfigError, match="device='cuda' but no CUDA GPU.*device='cpu'"):
        loader(random_images(4), device="cuda")
    with pytest.raises(UnknownNameError, match="'gpu'"):
        loader(random_images(4), device="gpu")


def test_negative_seed_is_refused():
    with pytest.raises(ConfigError, match="seed must be a whole number >= 0, got -1"):
        loader(random_images(4), seed=-1)
    with pytest.raises(ConfigError, match="got -1"):
        data.balanced_subset(np.arange(4), 1, seed=-1)


def test_device_loader_rejects_nhwc_and_float_images():
    with pytest.raises(D2LCNNError, match="permute\\(0, 3, 1, 2\\)"):
        loader(random_images(4).permute(0, 2, 3, 1))
    with pytest.raises(D2LCNNError, match="uint8"):
        loader(random_images(4).float())


# ----------------------------------------------------------------------------------------------
# load(): Data, STL-10 through TorchLoader


def test_load_tiny_npz_gives_data(tmp_path):
    parts = tiny_parts("fashion_mnist", n_train=40, n_test=20)
    write_npz(tmp_path / "fashion_mnist.npz", parts)
    d = data.load("fashion_mnist", root=tmp_path, batch_size=8, test_batch_size=20, train_per_class=2,
                  resize=32, device="cpu")  # fmt: skip
    assert (d.name, d.in_channels, d.image_size, d.num_classes) == ("fashion_mnist", 1, 32, 10)
    assert d.train.num_examples == 20 and d.test.num_examples == 20 and len(d.test) == 1
    ((x, y),) = list(d.test)
    assert x.shape == (20, 1, 32, 32) and y.tolist() == parts["test_labels"].tolist()
    back = data.load("fashion_mnist", root=tmp_path, batch_size=20, device="cpu").test
    ((x, _),) = list(back)
    restored = d.denormalize(x) * 255
    torch.testing.assert_close(restored, torch.from_numpy(parts["test_images"]).permute(0, 3, 1, 2).float(),
                               atol=1e-3, rtol=0)  # fmt: skip
    assert repr(d).startswith("Data(fashion_mnist: 20 train / 20 test images, 10 classes, 1x32x32")
    assert str(tmp_path) not in repr(d)


def test_old_names_still_work_from_d2lcnn_data():
    assert data.load_arrays is datafiles.load_arrays
    assert data.dataset_info is datafiles.dataset_info and data.data_root is datafiles.data_root


def class_data(tmp_path, name="cifar10", n_train=40, n_test=20, **kwargs) -> data.Data:
    parts = tiny_parts(name, n_train=n_train, n_test=n_test)
    write_npz(tmp_path / f"{name}.npz", parts)
    return data.load(name, root=tmp_path, batch_size=100, device="cpu", **kwargs)


def test_classes_selects_and_relabels_in_the_order_given(tmp_path):
    d = class_data(tmp_path, classes=["truck", "cat", "ship"])
    assert d.classes == ["truck", "cat", "ship"] and d.num_classes == 3
    assert d.name == "cifar10 (truck, cat, ship)"
    parts = tiny_parts("cifar10", n_train=40, n_test=20)
    everything = class_data(tmp_path / "all")
    for split, loader_ in (("train", d.train), ("test", d.test)):
        original = parts[f"{split}_labels"]
        keep = np.flatnonzero(np.isin(original, [9, 3, 8]))
        assert loader_.num_examples == len(keep)
        expected_images = everything.train.images if split == "train" else everything.test.images
        assert torch.equal(loader_.images, expected_images[torch.from_numpy(keep)])
        new = {9: 0, 3: 1, 8: 2}
        assert loader_.labels.tolist() == [new[int(label)] for label in original[keep]]
    assert sorted(torch.cat([y for _, y in d.train]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    by_index = class_data(tmp_path / "index", classes=[9, 3, 8])
    assert by_index.classes == d.classes and torch.equal(by_index.train.labels, d.train.labels)


def test_classes_compose_with_per_class_resize_and_normalisation(tmp_path):
    mean, std = data.IMAGENET_MEAN, data.IMAGENET_STD
    d = class_data(tmp_path, classes=[5, 6, 7, 8, 9], train_per_class=3, test_per_class=2, resize=48,
                   augment=True, mean=mean, std=std)  # fmt: skip
    assert (d.train.num_examples, d.test.num_examples, d.num_classes) == (15, 10, 5)
    assert d.classes == ["dog", "frog", "horse", "ship", "truck"] and (d.mean, d.std) == (mean, std)
    labels = torch.cat([y for _, y in d.train])
    assert torch.bincount(labels).tolist() == [3] * 5
    ((x, y),) = list(d.test)
    assert x.shape == (10, 3, 48, 48) and torch.bincount(y).tolist() == [2] * 5
    unresized = class_data(tmp_path, classes=[5, 6, 7, 8, 9], test_per_class=2, mean=mean, std=std)
    ((x32, _),) = list(unresized.test)
    parts = tiny_parts("cifar10", n_train=40, n_test=20)
    kept = parts["test_images"][np.isin(parts["test_labels"], [5, 6, 7, 8, 9])]
    expected = torch.from_numpy(kept).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(unresized.denormalize(x32), expected, atol=1e-5, rtol=0)
    upscaled = F.interpolate(x32, size=48, mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, upscaled, atol=1e-4, rtol=0)  # the same images, resized
    again = class_data(tmp_path, classes=[5, 6, 7, 8, 9], train_per_class=3, test_per_class=2)
    assert torch.equal(again.train.images, d.train.images)  # the subset depends only on the seed
    other = class_data(tmp_path, classes=[5, 6, 7, 8, 9], train_per_class=3, seed=1)
    assert not torch.equal(other.train.images, d.train.images)
    with pytest.raises(D2LCNNError, match="Class 3 has only 4 examples"):  # 3: cat
        class_data(tmp_path, classes=["dog", "cat"], train_per_class=5)


def test_stl10_classes_through_torch_loader(tmp_path):
    parts = tiny_parts("stl10", n_train=20, n_test=10)
    write_stl10(tmp_path / "stl10_binary", parts, list(datafiles.DATASETS["stl10"].classes))
    d = data.load("stl10", root=tmp_path, batch_size=10, classes=["monkey", "airplane"], device="cpu")
    ((x, y),) = list(d.test)
    keep = np.flatnonzero(np.isin(parts["test_labels"], [7, 0]))
    assert y.tolist() == [0 if label == 7 else 1 for label in parts["test_labels"][keep]]
    expected = torch.from_numpy(parts["test_images"][keep]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(d.denormalize(x), expected, atol=1e-5, rtol=0)


def test_bad_classes_get_one_clear_error(tmp_path):
    with pytest.raises(UnknownNameError, match="Unknown class name 'dgo'. Did you mean 'dog'"):
        class_data(tmp_path, classes=["cat", "dgo"])
    with pytest.raises(ConfigError, match="Class index 10 is out of range.*0..9"):
        class_data(tmp_path, classes=[1, 10])
    with pytest.raises(ConfigError, match="twice"):
        class_data(tmp_path, classes=["cat", 3])
    with pytest.raises(ConfigError, match="non-empty list"):
        class_data(tmp_path, classes="cat")


def test_stl10_loads_through_torch_loader(tmp_path):
    parts = tiny_parts("stl10", n_train=20, n_test=10)
    write_stl10(tmp_path / "stl10_binary", parts, list(datafiles.DATASETS["stl10"].classes))
    d = data.load("stl10", root=tmp_path, batch_size=8, test_batch_size=10, augment=True, device="cpu")
    assert isinstance(d.train, data.TorchLoader) and len(d.train) == 2 and len(d.test) == 1
    ((x, y),) = list(d.test)
    expected = torch.from_numpy(parts["test_images"]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(d.denormalize(x), expected, atol=1e-5, rtol=0)
    assert y.tolist() == parts["test_labels"].tolist()
    x, y = next(iter(d.train))
    assert x.shape == (8, 3, 96, 96) and x.dtype == torch.float32
    # Workers started with "spawn" get the dataset pickled: the memory map goes as a path.
    dataset = d.train.dataset
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 10_000 and torch.equal(copy[3][0], dataset[3][0])


def test_torch_loader_order_shards_and_epochs(tmp_path):
    parts = tiny_parts("stl10", n_train=20, n_test=10)
    write_stl10(tmp_path / "stl10_binary", parts, list(datafiles.DATASETS["stl10"].classes))
    d = data.load("stl10", root=tmp_path, batch_size=3, device="cpu", seed=5)
    train = d.train
    epoch0 = torch.cat([y for _, y in train])
    epoch1 = torch.cat([y for _, y in train])
    train.set_epoch(0)
    assert torch.equal(torch.cat([y for _, y in train]), epoch0) and not torch.equal(epoch0, epoch1)
    shards = [d.test.shard(rank, 2) for rank in range(2)]
    seen = [torch.cat([x for x, _ in shard]) for shard in shards]
    assert sum(len(s) for s in seen) == 10 and sum(s.num_examples for s in shards) == 10
    whole = torch.cat([x for x, _ in d.test])
    torch.testing.assert_close(seen[0], whole[0::2])
    torch.testing.assert_close(seen[1], whole[1::2])


# ----------------------------------------------------------------------------------------------
# ImageFolder


def write_images(folder: Path, colors: dict[str, tuple[int, int, int]], count: int, size=(30, 20)) -> None:
    for name, color in colors.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", size, color).save(folder / name / f"{i}.png")


COLORS = {"cat": (255, 0, 0), "dog": (0, 0, 255)}


def test_load_folder_splits_by_class_and_normalises(tmp_path):
    write_images(tmp_path / "pets", COLORS, 5)
    (tmp_path / "pets" / ".ipynb_checkpoints").mkdir()  # not a class
    d = data.load_folder(tmp_path / "pets", image_size=16, batch_size=4, augment=False, num_workers=0,
                         device="cpu")  # fmt: skip
    assert d.classes == ["cat", "dog"] and d.in_channels == 3 and d.image_size == 16
    assert (d.train.num_examples, d.test.num_examples) == (8, 2)
    assert not set(d.train.dataset.indices) & set(d.test.dataset.indices)
    x, y = next(iter(d.test))
    assert x.shape == (2, 3, 16, 16) and sorted(y.tolist()) == [0, 1]
    for image, label in zip(d.denormalize(x), y.tolist(), strict=True):
        color = torch.tensor(COLORS[d.classes[label]], dtype=torch.float32) / 255
        torch.testing.assert_close(image, color.view(3, 1, 1).expand(3, 16, 16), atol=1e-5, rtol=0)
    assert repr(d).endswith("from pets/ (ImageFolder))") and str(tmp_path) not in repr(d)


def test_load_folder_uses_train_and_val_folders(tmp_path):
    write_images(tmp_path / "set" / "train", COLORS, 3)
    write_images(tmp_path / "set" / "val", COLORS, 1)
    d = data.load_folder(tmp_path / "set", image_size=8, batch_size=4, num_workers=0, device="cpu")
    assert (d.train.num_examples, d.test.num_examples) == (6, 2)
    x, y = next(iter(d.train))  # augmented on the device: a crop of the reflect-padded image, a flip
    assert x.shape == (4, 3, 8, 8)
    for image, label in zip(d.denormalize(x), y.tolist(), strict=True):  # one colour: any crop keeps it
        color = torch.tensor(COLORS[d.classes[label]], dtype=torch.float32).view(3, 1, 1) / 255
        torch.testing.assert_close(image, color.expand(3, 8, 8), atol=1e-5, rtol=0)
    write_images(tmp_path / "set" / "val", {"bird": (0, 255, 0)}, 1)
    with pytest.raises(D2LCNNError, match="only in val: \\['bird'\\]"):
        data.load_folder(tmp_path / "set", num_workers=0, device="cpu")


def test_load_folder_missing_or_empty(tmp_path):
    with pytest.raises(DataNotFoundError, match="Expected layout"):
        data.load_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="Expected layout"):
        data.load_folder(tmp_path / "empty")
    (tmp_path / "classes" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="No images found"):
        data.load_folder(tmp_path / "classes")


def test_unreadable_image_gives_one_clear_error_from_a_worker(tmp_path):
    write_images(tmp_path / "pets", COLORS, 2)
    (tmp_path / "pets" / "cat" / "1.png").write_bytes(b"not a png")
    d = data.load_folder(tmp_path / "pets", image_size=8, batch_size=4, test_fraction=0.5, num_workers=1,
                         device="cpu")  # fmt: skip
    with pytest.raises(CorruptDataError) as caught:
        for _ in d.train:
            pass
        for _ in d.test:
            pass
    message = str(caught.value)
    assert "1.png" in message and "Traceback" not in message and "\n" not in message
