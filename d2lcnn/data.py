"""Datasets as loaders ready to train on: `load(name)` for the chapters' datasets, `load_folder(path)`
for your own images. As in KellerJordan/cifar10-airbench, every batch is cropped, flipped, resized and
normalised on the device in a few tensor ops; `DeviceLoader` keeps the whole dataset there as uint8."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .datafiles import data_root as data_root  # re-exported: d2lcnn.data.data_root
from .datafiles import dataset_info, load_arrays, stl10_images
from .errors import ConfigError, CorruptDataError, D2LCNNError, DataNotFoundError, unknown_name
from .runtime import derived_seed, pick_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_seed(seed: int) -> None:
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}.")


def balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `per_class` examples of every class in `labels`, chosen with `seed`."""
    labels = np.asarray(labels)
    if per_class < 1:
        raise D2LCNNError(f"per_class must be at least 1, got {per_class}.")
    _check_seed(seed)
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


# ----------------------------------------------------------------------------- loaders


class _Loader:
    """What DeviceLoader and TorchLoader share: each epoch's batches of indices, sharding for torchrun,
    and the batch transform on the device (uint8 NCHW in; augmented, resized, normalised float out).
    Subclasses fetch each batch of uint8 images and int64 labels onto the device in `_batches`."""

    def __init__(
        self,
        num_items: int,
        image_shape: tuple[int, ...],
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        resize: int | None = None,
        augment: bool = False,
        flip: bool = True,
        pad: int = 4,
        pad_mode: str = "reflect",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        channels, height, width = image_shape
        if batch_size < 1:
            raise D2LCNNError(f"batch_size must be at least 1, got {batch_size}.")
        _check_seed(seed)
        if len(mean) != channels or len(std) != channels:
            raise D2LCNNError(
                f"mean and std need one value per channel ({channels}); got {len(mean)}, {len(std)}."
            )
        if min(std) <= 0:
            raise D2LCNNError(f"std values must be positive, got {tuple(std)}.")
        if resize is not None and resize < 1:
            raise D2LCNNError(f"resize must be a positive image size, got {resize}.")
        if pad_mode not in ("reflect", "constant"):
            raise unknown_name("pad mode", pad_mode, ("reflect", "constant"))
        if augment and (pad < 0 or (pad_mode == "reflect" and pad >= min(height, width))):
            raise D2LCNNError(
                f"pad={pad} does not fit {height}x{width} images (reflect needs 0 <= pad < size)."
            )
        self.device = pick_device(device)
        std_tensor = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.scale = 1 / (255 * std_tensor)  # x * scale + shift == (x / 255 - mean) / std
        self.shift = -torch.tensor(mean, device=self.device).view(1, -1, 1, 1) / std_tensor
        self.resize, self.augment, self.flip, self.pad, self.pad_mode = resize, augment, flip, pad, pad_mode
        self.dtype, self.channels_last = dtype, channels_last
        self.num_items, self.batch_size, self.train, self.seed = num_items, batch_size, train, seed
        self.epoch, self.rank, self.world_size = 0, 0, 1

    @property
    def num_examples(self) -> int:
        """Examples this loader (this shard, if sharded) covers per epoch."""
        if self.train:  # every rank gets the same count, so they stay in step
            return self.num_items // self.world_size
        return len(range(self.rank, self.num_items, self.world_size))

    def __len__(self) -> int:
        if self.train:  # never drops the only batch: a tiny subset must still train
            return max(1, self.num_examples // self.batch_size) if self.num_examples else 0
        return math.ceil(self.num_examples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (each iteration then counts up from there)."""
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> _Loader:
        """This loader's share for `rank` of `world_size`: disjoint from the other ranks' shares."""
        if self.world_size != 1:
            raise D2LCNNError("This loader is already a shard; shard the full loader instead.")
        if not (world_size >= 1 and 0 <= rank < world_size):
            raise D2LCNNError(f"Need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
        shard = copy.copy(self)  # shares the data (and the tensors on the device)
        shard.rank, shard.world_size = rank, world_size
        return shard

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.epoch += 1
        return self._transformed(self.epoch - 1)

    def _transformed(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch, 2, self.rank))
        for images, labels in self._batches(epoch):
            if self.augment:
                images = _random_crop_flip(images, self.pad, self.pad_mode, self.flip, generator)
            x = images.float()
            if self.resize is not None and x.shape[-2:] != (self.resize, self.resize):
                shrinking = self.resize < min(x.shape[-2:])
                x = F.interpolate(x, self.resize, mode="bilinear", align_corners=False, antialias=shrinking)
            x = (x * self.scale + self.shift).to(self.dtype)
            yield x.contiguous(memory_format=torch.channels_last) if self.channels_last else x, labels

    def _index_batches(self, epoch: int, device: torch.device | str = "cpu") -> list[Tensor]:
        """This rank's example indices for `epoch`, in batches: one permutation for all ranks, strided."""
        order = torch.arange(self.num_items)
        if self.train:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch, 1))
            order = torch.randperm(self.num_items, generator=generator)
            order = order[: self.num_items // self.world_size * self.world_size]
        return order[self.rank :: self.world_size].to(device).split(self.batch_size)[: len(self)]

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError


def _random_crop_flip(
    images: Tensor, pad: int, pad_mode: str, flip: bool, generator: torch.Generator
) -> Tensor:
    """Per image: a random crop of the padded image, then a random horizontal flip if `flip`. Done as
    two gathers with per-image source rows/columns: no loop over images and no padded copy. Random
    numbers come from a CPU generator, so results match on any device."""
    n, c, height, width = images.shape
    shifts = torch.randint(-pad, pad + 1, (2, n, 1), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device) + shifts[0]  # (n, height): source rows
    cols = torch.arange(width, device=images.device) + shifts[1]  # (n, width): source columns
    if flip:
        flipped = (torch.rand(n, 1, generator=generator) < 0.5).to(images.device)
        cols = torch.where(flipped, cols.flip(1), cols)
    if pad_mode == "reflect":  # mirror around the edge pixel, like F.pad(mode="reflect"): -1 -> 1, h -> h - 2
        rows = (height - 1) - ((height - 1) - rows.abs()).abs()
        cols = (width - 1) - ((width - 1) - cols.abs()).abs()
    rows_inside, cols_inside = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    out = images.gather(2, rows.clamp(0, height - 1)[:, None, :, None].expand(n, c, height, width))
    out = out.gather(3, cols.clamp(0, width - 1)[:, None, None, :].expand(n, c, height, width))
    if pad_mode == "constant":  # black where the crop reaches past the image
        out = out * (rows_inside[:, None, :, None] & cols_inside[:, None, None, :])
    return out


class DeviceLoader(_Loader):
    """The whole dataset as a uint8 NCHW tensor on the device; yields (images normalised with `mean` and
    `std`, as `dtype`, int64 labels). `train` shuffles and drops an incomplete last batch unless it is
    the only one; epoch k's order and augmentation (a random crop of the image padded by `pad` in
    `pad_mode`, a random flip if `flip`) depend only on (seed, k), so a resumed run repeats them."""

    def __init__(self, images: Tensor, labels: Tensor, **options: Any) -> None:
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
        super().__init__(len(labels), tuple(images.shape[1:]), **options)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for index in self._index_batches(epoch, self.device):
            yield self.images.index_select(0, index), self.labels.index_select(0, index)


class TorchLoader(_Loader):
    """A torch DataLoader (image folders, STL-10) behind the interface of DeviceLoader: `dataset` gives
    (uint8 CHW image of `image_shape`, label), read in `num_workers` processes; each batch is then
    moved to the device and transformed there. Options as for DeviceLoader."""

    def __init__(
        self, dataset: Dataset, image_shape: tuple, num_workers: int | None = None, **options: Any
    ) -> None:
        super().__init__(len(dataset), image_shape, **options)
        self.dataset = dataset
        self.num_workers = min(2, os.cpu_count() or 1) if num_workers is None else num_workers
        self._build()

    def _build(self) -> None:
        # DataLoader takes any iterable of index lists as batch_sampler: this list is refilled each epoch.
        self._index_lists: list[list[int]] = []
        self._loader = DataLoader(
            self.dataset,
            batch_sampler=self._index_lists,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(derived_seed(self.seed, 0, 3)),  # workers' seeds
        )

    def shard(self, rank: int, world_size: int) -> TorchLoader:
        shard = super().shard(rank, world_size)
        shard._build()  # its own DataLoader, fed its own share of the indices
        return shard

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        self._index_lists[:] = [index.tolist() for index in self._index_batches(epoch)]
        try:
            for images, labels in self._loader:
                yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        except D2LCNNError as err:
            message = str(err)
            if "DataLoader worker" in message:  # drop the worker's traceback, keep our message
                prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
                message = message.strip().splitlines()[-1].removeprefix(prefix)
            raise type(err)(message) from None


class _ArrayDataset(Dataset):
    """uint8 CHW tensors from memory-mapped NHWC images (STL-10's files: read as needed), and labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        self.images, self.labels, self.indices = images, labels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image = np.array(self.images[self.indices[i]].transpose(2, 0, 1))
        return torch.from_numpy(image), int(self.labels[i])

    def __getstate__(self) -> dict[str, Any]:  # workers started with "spawn" get the path, not the pixels
        return {**self.__dict__, "images": Path(self.images.filename)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, images=stl10_images(state["images"]))


# ----------------------------------------------------------------------------- from a name to ready loaders


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
        return (x * torch.tensor(self.std).view(shape) + torch.tensor(self.mean).view(shape)).clamp(0, 1)

    def __repr__(self) -> str:
        size = self.image_size
        return (
            f"Data({self.name}: {self.train.num_examples:,} train / {self.test.num_examples:,} "
            f"test images, {self.num_classes} classes, {self.in_channels}x{size}x{size}, "
            f"batch {self.train.batch_size}, device {self.train.device}, from {self.source})"
        )


def _class_ids(wanted: Sequence[str | int], names: list[str]) -> list[int]:
    """The indices of the classes `wanted` (names or indices) among `names`, in the order given."""
    if isinstance(wanted, (str, int)) or len(wanted) == 0:
        raise ConfigError(f"classes must be a non-empty list of class names or indices, got {wanted!r}.")
    ids = []
    for item in wanted:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(names):
                raise ConfigError(f"Class index {item} is out of range: the classes are 0..{len(names) - 1}.")
            ids.append(int(item))
        elif item in names:
            ids.append(names.index(item))
        else:
            raise unknown_name("class name", str(item), names)
    if len(set(ids)) < len(ids):
        raise ConfigError(f"classes names a class twice: {list(wanted)!r}.")
    return ids


def _split_loader(
    images: np.ndarray, labels: np.ndarray, class_ids: list[int] | None, per_class: int | None, **options: Any
) -> _Loader:
    """A loader of one split: only the classes `class_ids` if given (the k-th relabelled k), and a seeded
    subset of `per_class` examples per class if given. STL-10's memory-mapped images are too big to
    copy to the device whole: they are read from the files as needed."""
    index = np.arange(len(labels)) if class_ids is None else np.flatnonzero(np.isin(labels, class_ids))
    if per_class is not None:
        index = index[balanced_subset(labels[index], per_class, options["seed"])]
    labels = labels[index]
    if class_ids is not None:
        labels = np.array([class_ids.index(label) for label in labels], dtype=np.int64)
    if isinstance(images, np.memmap):
        image_shape = (images.shape[3], *images.shape[1:3])
        return TorchLoader(_ArrayDataset(images, labels, index), image_shape, **options)
    nchw = torch.from_numpy(images[index]).permute(0, 3, 1, 2).contiguous()
    return DeviceLoader(nchw, torch.from_numpy(labels), **options)


def load(
    name: str,
    *,
    root: str | Path | None = None,
    batch_size: int = 256,
    test_batch_size: int | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    classes: Sequence[str | int] | None = None,
    resize: int | None = None,
    augment: bool = False,
    pad: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    download: bool | None = None,
) -> Data:
    """Dataset `name` as train/test loaders on `device` (default: cuda, else mps, else cpu).

    `classes` keeps only those classes (names or indices), relabelled 0..k-1 in the order given;
    `*_per_class` keep a seeded class-balanced subset; `resize` scales images on the device;
    `augment` adds random crops (and flips where they make sense) to the training batches: shifts
    of up to `pad` pixels (default: the dataset's, 4 for CIFAR-10); `mean`/`std` replace the
    dataset's own normalisation (e.g. IMAGENET_MEAN, IMAGENET_STD).
    """
    info = dataset_info(name)
    arrays = load_arrays(name, root, download)
    class_ids = None if classes is None else _class_ids(classes, arrays.classes)
    names = arrays.classes if class_ids is None else [arrays.classes[i] for i in class_ids]
    mean = info.mean if mean is None else tuple(mean)
    std = info.std if std is None else tuple(std)
    options = dict(mean=mean, std=std, resize=resize, seed=seed, device=pick_device(device))  # picked once
    pad = info.pad if pad is None else pad
    augmentation = dict(augment=augment, flip=info.flip, pad=pad, pad_mode=info.pad_mode)
    train = _split_loader(arrays.train_images, arrays.train_labels, class_ids, train_per_class,
                          batch_size=batch_size, train=True, **augmentation, **options)  # fmt: skip
    test = _split_loader(arrays.test_images, arrays.test_labels, class_ids, test_per_class,
                         batch_size=test_batch_size or batch_size, train=False, **options)  # fmt: skip
    return Data(
        name=name if class_ids is None else f"{name} ({', '.join(names)})", train=train, test=test,
        classes=list(names), in_channels=info.channels, image_size=resize or info.image_size,
        mean=mean, std=std, source=arrays.source,
    )  # fmt: skip


# ----------------------------------------------------------------------------- your own images

_FOLDER_LAYOUT = (
    "PATH/<class name>/<image> (split into train/test here), or PATH/train/<class name>/<image> "
    "plus PATH/test/<class name>/<image> (or PATH/val/...)"
)


def _image_folder(folder: Path, size: int) -> Any:
    """torchvision's ImageFolder of `folder`: each image as uint8 CHW, resized and centre-cropped to size."""
    from PIL import Image
    from torchvision import datasets, transforms  # takes about a second to import: only folders need it

    class ImageFolder(datasets.ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            # Hidden folders such as .ipynb_checkpoints are not classes.
            classes = sorted(
                e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
            )
            if not classes:
                raise FileNotFoundError(f"no class folders in {directory}")
            return classes, {name: i for i, name in enumerate(classes)}

    def load_rgb(path: str) -> Image.Image:
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise CorruptDataError(f"Cannot read image {path}: {err}. Remove or replace it.") from None

    resize = [transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()]
    try:
        return ImageFolder(str(folder), transform=transforms.Compose(resize), loader=load_rgb)
    except FileNotFoundError as err:
        raise DataNotFoundError(
            f"No images found under {folder} ({err}). Expected layout: {_FOLDER_LAYOUT}."
        ) from None


def _folder_datasets(path: Path, size: int, test_fraction: float, seed: int) -> tuple[Any, Any, list[str]]:
    """Train and test sets of `path`: its train/ and test/ (or val/) folders if it has them, else a
    seeded split of its class folders that puts `test_fraction` of each class (at least one) in test."""
    test_dir = next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
    if (path / "train").is_dir() and test_dir is not None:
        train, test = _image_folder(path / "train", size), _image_folder(test_dir, size)
        if train.classes != test.classes:
            only_train = sorted(set(train.classes) - set(test.classes)) or "none"
            only_test = sorted(set(test.classes) - set(train.classes)) or "none"
            raise D2LCNNError(
                f"The class folders of train/ and {test_dir.name}/ differ: only in train: {only_train}; "
                f"only in {test_dir.name}: {only_test}."
            )
        return train, test, train.classes
    full = _image_folder(path / "train" if (path / "train").is_dir() else path, size)
    targets, rng = np.asarray(full.targets), np.random.default_rng(seed)
    train_index, test_index = [], []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        n_test = round(len(members) * test_fraction)
        if len(members) >= 2:  # every class with two images gets one on each side
            n_test = min(max(n_test, 1), len(members) - 1)
        test_index += members[:n_test].tolist()
        train_index += members[n_test:].tolist()
    if not train_index or not test_index:
        raise DataNotFoundError(
            f"{path} has too few images to split into train and test ({len(full)} found)."
        )
    return Subset(full, sorted(train_index)), Subset(full, sorted(test_index)), full.classes


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
    """Your own images, one folder per class, as Data with ImageNet normalisation: PATH/train and
    PATH/test (or PATH/val) if present, else a seeded, class-stratified split with `test_fraction`.
    Images are resized and centre-cropped to `image_size`; `augment` adds random crops and flips."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"{path} is not a folder. Expected layout: {_FOLDER_LAYOUT}.")
    if not 0 < test_fraction < 1:
        raise D2LCNNError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    train_set, test_set, classes = _folder_datasets(path, image_size, test_fraction, seed)
    shape, name = (3, image_size, image_size), path.resolve().name
    options = dict(batch_size=batch_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed=seed, device=device)
    augmentation = dict(augment=augment, pad=image_size // 8)  # reflect-padded by 1/8 of the image, cropped
    train = TorchLoader(train_set, shape, num_workers, train=True, **augmentation, **options)
    test = TorchLoader(test_set, shape, num_workers, train=False, **options)
    return Data(
        name=name, train=train, test=test, classes=list(classes), in_channels=3, image_size=image_size,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, source=f"{name}/ (ImageFolder)",
    )  # fmt: skip
