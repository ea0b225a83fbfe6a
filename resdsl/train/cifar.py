"""CIFAR-10 and CIFAR-100 from torchvision's on-disk form (``cifar-10-batches-py/``, ``cifar-100-python/``: pickled
batches), read without letting a file run code: each file is read once, its bytes must have the md5 sum torchvision
lists for it (a damaged, cut or replaced file is named), and only then are they unpickled, by an unpickler that
makes nothing but the dicts, lists, strings and numpy arrays the batches hold (a pickle can name any function to
call; this one calls none but numpy's array rebuilding). Imports nothing from the rest of resdsl but its data
errors and file reading: it is shipped beside emitted trainers.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle

import torch

from .dataerror import DataError, one_line
from .fileio import read_regular

# What a CIFAR batch pickle may build: numpy's arrays (numpy 1 and 2 spell the module differently; protocol 5
# pickles them from a buffer) and, in protocol 2 as Python 3 writes it, bytes (through a codec).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
_ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks to build {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def read_batches(where: str, files: list, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of the batch files ``files`` (torchvision's
    ``[name, md5]`` list) in the folder ``where``, in that order."""
    xs, ys = [], []
    for name, md5 in files:
        x, y = _batch(os.path.join(where, name), md5, classes)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _batch(path: str, md5: str, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        data = read_regular(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or one_line(exc)})") from None
    if not matches(data, md5):
        raise DataError(f"{path}: not the file the dataset's authors published (its md5 sum differs): damaged, cut "
                        "short or replaced")
    try:
        entry = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
        images, labels = entry["data"], entry["labels" if "labels" in entry else "fine_labels"]
        x = torch.from_numpy(images.reshape(-1, 3, 32, 32).copy())
        y = torch.as_tensor(labels, dtype=torch.int64)
    except Exception as exc:  # noqa: BLE001 - whatever a strange pickle raises: one clear message
        raise DataError(f"{path}: not a CIFAR batch ({one_line(exc)})") from None
    if x.dtype != torch.uint8 or y.shape != (x.shape[0],) or (y.numel() and not 0 <= int(y.min()) <= int(y.max())
                                                               < classes):
        raise DataError(f"{path}: not a CIFAR batch (uint8 images and one label in 0..{classes - 1} for each)")
    return x, y


def matches(data: bytes, md5: str) -> bool:
    """Whether ``data`` has the md5 sum ``md5`` (a test's stand-in files replace this check)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest() == md5
