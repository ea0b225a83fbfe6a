"""CIFAR-10 and CIFAR-100 from torchvision's on-disk form (``cifar-10-batches-py/``, ``cifar-100-python/``: pickled
batches), read without letting a file run code: each file is read once, its bytes must have the md5 sum torchvision
lists for it (a damaged, cut or replaced file is named), and only then are they unpickled, by an unpickler that
makes nothing but the dicts, lists, strings and number arrays the batches hold (a pickle can name any function to
call; this one calls none of numpy's: an array is built here from its bytes once its type is checked). Imports
nothing from the rest of resdsl but its data errors and file reading: it is shipped beside emitted trainers.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import pickle

import numpy as np
import torch

from .dataerror import DataError, one_line
from .fileio import read_regular

_NUMBERS = frozenset("|u1 u1 <u1 >u1 <i8 <i4 <f4 <f8 i8 i4 f4 f8".split())  # the dtypes a batch's arrays may hold


class _DType:
    """numpy.dtype as a batch pickle calls it, kept as words until :func:`_dtype` checks them: a pickled dtype's
    state could otherwise give a byte type object fields (an array of pointers read from the file)."""

    def __init__(self, spec, align=False, copy=True):
        self.spec, self.state = spec, None

    def __setstate__(self, state):
        self.state = state


class _Array:
    """An ndarray that numpy's _reconstruct would make, kept as its pickled state until :func:`_array` builds it."""

    def __setstate__(self, state):
        self.state = state


_NDARRAY = object()  # numpy.ndarray, which a pickle may only hand to _reconstruct (called, it would take any buffer)


def _reconstruct(cls, shape, dtype):
    if cls is not _NDARRAY:
        raise pickle.UnpicklingError("numpy's _reconstruct is asked for something other than an ndarray")
    return _Array()


def _dtype(d) -> np.dtype:
    """The number type a pickled dtype names; its pickled state (fields, flags) is checked, never applied."""
    if not isinstance(d, _DType) or not isinstance(d.spec, str) or d.spec not in _NUMBERS or not (
            d.state is None or (len(d.state) >= 8 and d.state[1] in "<>|=" and d.state[2:7] == (None,) * 3 + (-1, -1))):
        raise pickle.UnpicklingError("an array's type is not a plain number type")
    return np.dtype(d.spec)


def _array(a) -> np.ndarray:
    """The numbers an _Array's state holds (version, shape, dtype, Fortran order, bytes), copied out of them."""
    if not isinstance(a, _Array) or not isinstance(getattr(a, "state", None), tuple) or len(a.state) != 5:
        raise pickle.UnpicklingError("the images are not a pickled array")
    _, shape, dtype, fortran, raw = a.state
    return _from_bytes(raw.encode("latin1") if isinstance(raw, str) else raw, _dtype(dtype), shape,
                       "F" if fortran else "C")


def _from_bytes(raw, dtype: np.dtype, shape, order: str) -> np.ndarray:
    data = bytes(memoryview(raw))
    shape = tuple(int(n) for n in shape)
    if math.prod(shape) * dtype.itemsize != len(data):
        raise pickle.UnpicklingError("an array's bytes do not fill its shape")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy()


def _frombuffer(buf, dtype, shape, order):  # protocol 5's spelling of an array
    return _from_bytes(buf, _dtype(dtype), shape, order)


def _latin1(text, encoding):  # protocol 2's bytes, as Python 3 pickles them; a codec by name could be any module's
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"it asks for the codec {encoding!r}, which a CIFAR batch never uses")
    return text.encode("latin1")


# What a CIFAR batch pickle may build, and what stands for each (numpy 1 and 2 spell the modules differently;
# protocol 2 as Python 3 writes it makes bytes through a codec). Nothing else: a pickle can name any function.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy.core.numeric", "_frombuffer"): _frombuffer, ("numpy._core.numeric", "_frombuffer"): _frombuffer,
            ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _DType, ("_codecs", "encode"): _latin1}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks to build {module}.{name}, which a CIFAR batch never holds")
        return _ALLOWED[(module, name)]


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
        images = images if isinstance(images, np.ndarray) else _array(images)
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
