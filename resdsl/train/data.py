"""Datasets for the trainer, and a fast in-memory batch pipeline for the small ones: where the trainer's front
door (session.py) gets its data.

* ``cifar10`` / ``cifar100`` come through torchvision's own loaders (and on-disk format);
* ``fashion-mnist`` / ``mnist`` are read from their IDX files by a small parser (``idx.py``; Debian's
  ``dataset-fashion-mnist`` package is used when present), downloading through torchvision only as a last resort;
* ``synthetic`` is a deterministic, learnable random dataset for smoke tests;
* any existing folder in the ImageNet layout (``ROOT/train/<class>/*``, ``ROOT/val/<class>/*``) becomes a
  :class:`FolderData`, scanned by ``torchvision.datasets.ImageFolder``, with the papers' augmentations
  (``images.py``: decoded and cut in DataLoader workers, or decoded on the GPU in batches).

Small datasets are held whole as uint8 tensors (:class:`InMemoryData`); the trainer moves them to the GPU and
makes batches there with :class:`BatchPipeline`, with no DataLoader.

This module holds :func:`load_dataset`, which picks and checks a dataset, and re-exports the rest, which lives in
``dataerror.py`` (:class:`DataError`), ``batches.py`` (in-memory data, orders, batches), ``idx.py`` (the IDX
format), ``named.py`` (the named datasets), ``folders.py`` (image folders), ``decoding.py`` (their decoding) and
``images.py`` (their augmentations). None of them imports anything from the rest of resdsl: they are shipped
beside emitted trainers.
"""
from __future__ import annotations

import os
from dataclasses import replace

from .batches import IN_MEMORY_AUGMENTATIONS, NORMALIZATIONS, BatchPipeline, InMemoryData, epoch_permutation
from .batches import split_order
from .dataerror import DataError
from .folders import FolderData, FolderImages, collate_encoded, crop_size, worker_errors_unwrapped
from .folders import image_folder
from .images import FOLDER_AUGMENTATIONS, IMAGENET_EIGVAL, IMAGENET_EIGVEC, IMAGENET_MEAN, IMAGENET_STD
from .idx import MAX_IDX_BYTES, read_idx
from .named import DEBIAN_FASHION_MNIST, DEFAULT_ROOT, CIFAR_FILES, load_cifar, load_mnist, synthetic_data
from .vocabulary import FOLDER_DATASETS, IN_MEMORY_DATASETS, names_a_folder, written_as_path

__all__ = ["DEBIAN_FASHION_MNIST", "DEFAULT_ROOT", "FOLDER_AUGMENTATIONS", "FOLDER_DATASETS",
           "IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "IMAGENET_MEAN", "IMAGENET_STD", "IN_MEMORY_AUGMENTATIONS",
           "MAX_IDX_BYTES", "NORMALIZATIONS", "BatchPipeline", "DataError", "FolderData", "FolderImages",
           "InMemoryData", "collate_encoded", "crop_size", "epoch_permutation", "load_dataset", "read_idx",
           "worker_errors_unwrapped"]


def load_dataset(name_or_path: str, data_dir: str | None = None, *, download: bool = True,
                 split: tuple[int, int] | None = None, train_subset: int | None = None,
                 test_subset: int | None = None, synthetic_shape=(3, 32, 32), synthetic_classes=10,
                 synthetic_size=(1024, 256), seed: int = 0) -> InMemoryData | FolderData:
    """Load a dataset by name (one of :data:`IN_MEMORY_DATASETS`) or the path of an ImageNet-layout folder.

    ``data_dir`` is where the named datasets are looked for and downloaded to (default ~/.cache/resdsl/data);
    ``download=False`` never touches the network. ``split=(n_train, n_val)`` holds out the last ``n_val``
    images of the training set, shuffled with ``seed``, as the test set (the first ``n_train`` are trained on).
    ``train_subset`` / ``test_subset`` then keep the first N of each. Raises :class:`DataError`.
    """
    name = str(name_or_path)
    if split is not None:
        split = _check_split(split)
    for n, which in ((train_subset, "train"), (test_subset, "test")):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise DataError(f"--{which}-subset must be a positive whole number of images, not {n!r}")
    if name in CIFAR_FILES:
        data = load_cifar(name, data_dir, download)
    elif name in ("fashion-mnist", "mnist"):
        data = load_mnist(name, data_dir, download)
    elif name == "synthetic":
        data = synthetic_data(synthetic_shape, synthetic_classes, synthetic_size, seed)
    elif names_a_folder(name):
        return image_folder(os.path.expanduser(name), split, train_subset, test_subset, seed)
    elif name in FOLDER_DATASETS:
        raise DataError(f"the recipe trains on {name}, which is an image folder resdsl cannot download: pass "
                        f"--data /path/to/{name} (a folder with train/<class>/<image> and val/<class>/<image> "
                        "inside, as torchvision's ImageFolder reads it)")
    elif os.path.exists(os.path.expanduser(name)):
        raise DataError(f"--data {name}: this is a file, not a folder; an image-folder dataset is a folder with "
                        "train/<class>/ and val/<class>/ inside")
    elif written_as_path(name):
        raise DataError(f"--data {name}: no such folder. An image-folder dataset is a folder with train/<class>/ "
                        f"and val/<class>/ inside; or use one of the named datasets: {', '.join(IN_MEMORY_DATASETS)}")
    else:
        named = ", ".join(IN_MEMORY_DATASETS)
        raise DataError(f"unknown dataset '{name}': pass --data with one of {named}, or with the "
                        "path of an ImageNet-layout folder (train/<class>/ and val/<class>/ inside)")
    if split is not None:
        n_train, n_val = split
        total = data.train_x.shape[0]
        if n_train + n_val > total:
            raise DataError(f"the split {n_train}/{n_val} needs {n_train + n_val} training images, but {name} has "
                            f"only {total}; use a smaller split")
        order = split_order(total, seed)
        tr, va = order[:n_train], order[total - n_val:]
        data = replace(data, train_x=data.train_x[tr], train_y=data.train_y[tr], test_x=data.train_x[va],
                       test_y=data.train_y[va])
    for n, which in ((train_subset, "train"), (test_subset, "test")):
        if n is not None:
            x, y = getattr(data, f"{which}_x"), getattr(data, f"{which}_y")
            if n > x.shape[0]:
                raise DataError(f"--{which}-subset {n} is larger than the {which} set of {name} ({x.shape[0]} "
                                "images); pass a smaller number")
            data = replace(data, **{f"{which}_x": x[:n], f"{which}_y": y[:n]})
    return data


def _check_split(split) -> tuple[int, int]:
    try:
        n_train, n_val = (int(v) for v in split)
    except (TypeError, ValueError):
        raise DataError(f"a split is two numbers of images (train, held-out), not {split!r}") from None
    if n_train < 1 or n_val < 1:
        raise DataError(f"the split {n_train}/{n_val} must keep at least one image on each side")
    return n_train, n_val

