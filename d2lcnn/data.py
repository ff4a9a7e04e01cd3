"""Datasets as loaders ready to train on: `load(name)` for the chapters' datasets (read by
d2lcnn.datafiles), `load_folder(path)` for your own images, one folder per class.

`DeviceLoader` follows KellerJordan/cifar10-airbench: the dataset lives on the device as uint8,
and each batch is cropped, flipped, resized and normalised there, in a few vectorised tensor ops.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .datafiles import data_root, dataset_info, load_arrays, stl10_images
from .errors import ConfigError, CorruptDataError, D2LCNNError, DataNotFoundError, unknown_name
from .runtime import derived_seed, pick_device

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Data",
    "DeviceLoader",
    "TorchLoader",
    "balanced_subset",
    "data_root",
    "dataset_info",
    "load",
    "load_arrays",
    "load_folder",
]

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


# ----------------------------------------------------------------------------------------------
# Augmentation and normalisation, on the device


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
        rows_inside, cols_inside = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
        inside = rows_inside[:, None, :, None] & cols_inside[:, None, None, :]
        rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    out = images.gather(2, rows[:, None, :, None].expand(n, c, height, width))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, height, width))
    if pad_mode == "constant":
        out = out * inside
    return out


# ----------------------------------------------------------------------------------------------
# Loaders


class _EpochBatches:
    """What DeviceLoader and TorchLoader share: each epoch's batches of example indices, the epoch
    count, and sharding across the processes of a torchrun launch. Subclasses yield the batches of
    images and labels in `_batches(epoch)`.
    """

    def __init__(
        self,
        num_items: int,
        *,
        batch_size: int,
        train: bool,
        drop_last: bool | None,
        seed: int,
        device: str | torch.device | None,
    ) -> None:
        if batch_size < 1:
            raise D2LCNNError(f"batch_size must be at least 1, got {batch_size}.")
        _check_seed(seed)
        self._num_items = num_items
        self.batch_size = batch_size
        self.train = train
        self.drop_last = train if drop_last is None else drop_last
        self.seed = seed
        self.device = pick_device(device)
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    @property
    def num_examples(self) -> int:
        """Examples this loader (this shard, if sharded) covers per epoch."""
        if self.drop_last:  # every rank gets the same count, so they stay in step
            return self._num_items // self.world_size
        return len(range(self.rank, self._num_items, self.world_size))

    def __len__(self) -> int:
        n = self.num_examples
        if self.drop_last:  # never drops the only batch: a tiny subset must still train
            return max(1, n // self.batch_size) if n else 0
        return math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (each iteration then counts up from there)."""
        self.epoch = epoch

    def shard(self, rank: int, world_size: int) -> _EpochBatches:
        """This loader's share for `rank` of `world_size`: disjoint from the other ranks' shares."""
        if self.world_size != 1:
            raise D2LCNNError("This loader is already a shard; shard the full loader instead.")
        if not (world_size >= 1 and 0 <= rank < world_size):
            raise D2LCNNError(f"Need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
        shard = copy.copy(self)  # shares the data (and the tensors on the device)
        shard.rank, shard.world_size = rank, world_size
        return shard

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        return self._batches(epoch)

    def _index_batches(self, epoch: int, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
        """This rank's example indices for `epoch`, in batches: one permutation for all ranks, strided."""
        n = self._num_items
        if self.train:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch, 1))
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.drop_last:
            order = order[: n // self.world_size * self.world_size]
        order = order[self.rank :: self.world_size].to(device)
        return order.split(self.batch_size)[: len(self)]

    def _augment_generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(self.seed, epoch, 2, self.rank))


class DeviceLoader(_EpochBatches):
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
        super().__init__(
            len(labels), batch_size=batch_size, train=train, drop_last=drop_last, seed=seed, device=device
        )
        self.transform = _BatchTransform(
            mean, std, channels=images.shape[1], image_hw=tuple(images.shape[2:]),
            device=self.device, resize=resize, augment=augment, flip=flip, pad=pad,
            pad_mode=pad_mode, dtype=dtype, channels_last=channels_last,
        )  # fmt: skip
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = self._augment_generator(epoch)
        for index in self._index_batches(epoch, self.device):
            images = self.images.index_select(0, index)
            yield self.transform(images, generator), self.labels.index_select(0, index)


class TorchLoader(_EpochBatches):
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
        super().__init__(
            len(dataset), batch_size=batch_size, train=train, drop_last=drop_last, seed=seed, device=device
        )
        self.dataset = dataset
        self.num_workers = min(2, os.cpu_count() or 1) if num_workers is None else num_workers
        self.batch_transform = batch_transform
        self._build()

    def _build(self) -> None:
        # DataLoader takes any iterable of index lists as batch_sampler: this list is refilled each epoch.
        self._index_lists: list[list[int]] = []
        self._loader = torch.utils.data.DataLoader(
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
        generator = self._augment_generator(epoch)
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
                message = message.strip().splitlines()[-1].removeprefix(prefix)
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
            state["images"] = stl10_images(state["images"])
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


def _selection(
    labels: np.ndarray, class_ids: list[int] | None, per_class: int | None, seed: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """The indices of the examples to keep (None: all) and the labels, with class_ids[k] relabelled k."""
    index = None if class_ids is None else np.flatnonzero(np.isin(labels, class_ids))
    if per_class is not None:
        chosen = balanced_subset(labels if index is None else labels[index], per_class, seed)
        index = chosen if index is None else index[chosen]
    if class_ids is None:
        return index, labels
    relabelled = np.full_like(labels, -1)
    for new, old in enumerate(class_ids):
        relabelled[labels == old] = new
    return index, relabelled


def _nchw_tensor(images: np.ndarray, index: np.ndarray | None) -> Tensor:
    chosen = images if index is None else images[index]
    if not chosen.flags.writeable:
        chosen = chosen.copy()
    return torch.from_numpy(chosen).permute(0, 3, 1, 2).contiguous()


def _loader(
    images: np.ndarray,
    labels: np.ndarray,
    index: np.ndarray | None,
    *,
    memory_mapped: bool,
    transform: dict[str, Any],
    **options: Any,
) -> DeviceLoader | TorchLoader:
    """A loader of the examples `index` (None: all); `transform` are _BatchTransform's options."""
    if memory_mapped:  # STL-10 is too big to copy to the device whole: read the files as needed
        batch_transform = _BatchTransform(
            channels=images.shape[3], image_hw=images.shape[1:3], device=options["device"], **transform
        )
        return TorchLoader(_ArrayDataset(images, labels, index), batch_transform=batch_transform, **options)
    kept = torch.from_numpy(labels if index is None else labels[index])
    return DeviceLoader(_nchw_tensor(images, index), kept, **transform, **options)


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
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    download: bool | None = None,
    channels_last: bool = False,
) -> Data:
    """Dataset `name` as train/test loaders on `device` (default: cuda, else mps, else cpu).

    `classes` keeps only those classes (names or indices), relabelled 0..k-1 in the order given;
    `*_per_class` keep a seeded class-balanced subset; `resize` scales images on the device;
    `augment` adds random crops (and flips where they make sense) to the training batches;
    `mean`/`std` replace the dataset's own normalisation (e.g. IMAGENET_MEAN, IMAGENET_STD).
    """
    info = dataset_info(name)
    arrays = load_arrays(name, root, download)
    device = pick_device(device)
    class_ids = None if classes is None else _class_ids(classes, arrays.classes)
    names = arrays.classes if class_ids is None else [arrays.classes[i] for i in class_ids]
    mean = info.mean if mean is None else tuple(mean)
    std = info.std if std is None else tuple(std)
    style = dict(mean=mean, std=std, resize=resize, channels_last=channels_last)
    augmentation = dict(augment=augment, flip=info.flip, pad=info.pad, pad_mode=info.pad_mode)
    common = dict(memory_mapped=name == "stl10", seed=seed, device=device)
    train_index, train_labels = _selection(arrays.train_labels, class_ids, train_per_class, seed)
    test_index, test_labels = _selection(arrays.test_labels, class_ids, test_per_class, seed)
    train = _loader(arrays.train_images, train_labels, train_index, batch_size=batch_size, train=True,
                    transform={**style, **augmentation}, **common)  # fmt: skip
    test = _loader(arrays.test_images, test_labels, test_index, batch_size=test_batch_size or batch_size,
                   train=False, transform=style, **common)  # fmt: skip
    return Data(
        name=name if class_ids is None else f"{name} ({', '.join(names)})", train=train, test=test,
        classes=list(names), in_channels=info.channels, image_size=resize or info.image_size,
        mean=mean, std=std, source=arrays.source,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Your own images


_FOLDER_LAYOUT = (
    "PATH/<class name>/<image> (split into train/test here), or PATH/train/<class name>/<image> "
    "plus PATH/test/<class name>/<image> (or PATH/val/...)"
)


def _load_rgb(path: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptDataError(f"Cannot read image {path}: {err}. Remove or replace it.") from None


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


def _folder_datasets(
    path: Path, train_transform: Callable, test_transform: Callable, test_fraction: float, seed: int
) -> tuple[Any, Any, list[str]]:
    """Train set, test set and class names of `path`: its train/ and test/ (or val/) folders if it has
    them, else a seeded, class-stratified split of its class folders."""
    from torch.utils.data import Subset

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
        return train_set, test_set, train_set.classes
    full = _image_folder(base, train_transform)
    full_test = copy.copy(full)
    full_test.transform = test_transform
    train_index, test_index = _stratified_split(full.targets, test_fraction, seed)
    if not train_index or not test_index:
        raise DataNotFoundError(
            f"{base} has too few images to split into train and test ({len(full)} found)."
        )
    return Subset(full, train_index), Subset(full_test, test_index), full.classes


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
    from torchvision import transforms  # takes about a second to import: only folders need it

    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"{path} is not a folder. Expected layout: {_FOLDER_LAYOUT}.")
    if not 0 < test_fraction < 1:
        raise D2LCNNError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    normalize = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    center = [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    random = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
    train_set, test_set, classes = _folder_datasets(
        path, transforms.Compose((random if augment else center) + normalize),
        transforms.Compose(center + normalize), test_fraction, seed,
    )  # fmt: skip
    loader = dict(batch_size=batch_size, seed=seed, device=device, num_workers=num_workers)
    name = path.resolve().name
    return Data(
        name=name, train=TorchLoader(train_set, train=True, **loader),
        test=TorchLoader(test_set, train=False, **loader), classes=list(classes), in_channels=3,
        image_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, source=f"{name}/ (ImageFolder)",
    )  # fmt: skip
