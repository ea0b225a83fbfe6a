"""Datasets for the trainer, and a fast in-memory batch pipeline for the small ones.

* ``cifar10`` / ``cifar100`` come through torchvision's own loaders (and on-disk format);
* ``fashion-mnist`` / ``mnist`` are read from their IDX files by a small parser here (Debian's
  ``dataset-fashion-mnist`` package is used when present), downloading through torchvision only as a last resort;
* ``synthetic`` is a deterministic, learnable random dataset for smoke tests;
* any existing folder in the ImageNet layout (``ROOT/train/<class>/*``, ``ROOT/val/<class>/*``) becomes a
  :class:`FolderData`, read through ``torchvision.datasets.ImageFolder`` with the papers' augmentations.

Small datasets are held whole as uint8 tensors (:class:`InMemoryData`); the trainer moves them to the GPU and
makes batches there with :class:`BatchPipeline`, with no DataLoader.

This module imports nothing from the rest of resdsl: it is shipped beside emitted trainers.
"""
from __future__ import annotations

import copy
import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field, replace

import torch

from .vocabulary import DATASETS, FOLDER_DATASETS

MAX_IDX_BYTES = 2**31  # default of RESDSL_MAX_IDX_BYTES; a 60,000-image MNIST set is 47 MB
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
DEFAULT_ROOT = os.path.join("~", ".cache", "resdsl", "data")
NORMALIZATIONS = ("per-pixel-mean", "mean-std", "none")
IN_MEMORY_AUGMENTATIONS = ("pad-crop", "flip")
FOLDER_AUGMENTATIONS = ("scale", "random-resized-crop", "flip", "color", "pad-crop")

# The usual ImageNet channel statistics (RGB, images scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The principal components of ImageNet's RGB pixel values, as AlexNet's lighting noise uses them.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))

_CIFAR = {"cifar10": ("CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz", 10),
          "cifar100": ("CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz", 100)}
_IDX = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float",
              0x0E: "double"}


class DataError(Exception):
    """A data problem the user must fix: a missing folder, no internet and no local copy, an unknown dataset,
    a corrupt file. ``str(err)`` is a complete, actionable one-paragraph message that names the ``--data`` /
    ``--data-dir`` flags where they are the fix."""


def _reason(exc: BaseException) -> str:
    """An exception as one short line (torchvision's download errors span several)."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# the two kinds of dataset


@dataclass
class InMemoryData:
    """A small dataset held whole: uint8 images (N, C, H, W) and int64 labels (N,); the trainer moves it to
    the GPU with :meth:`to` and makes its batches there with :class:`BatchPipeline`."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(s) for s in self.train_x.shape[1:])

    def to(self, device) -> "InMemoryData":
        """A copy with all four tensors on ``device``."""
        return replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                       test_x=self.test_x.to(device), test_y=self.test_y.to(device))


@dataclass
class FolderData:
    """An ImageNet-layout folder: ROOT/train/<class>/<image> and ROOT/val/<class>/<image>.

    The images stay on disk; :meth:`train_dataset` and :meth:`test_dataset` give ``torch.utils.data.Dataset``
    objects that decode and augment them (for a DataLoader). ``shape`` is (3, crop, crop), the size the network
    sees: 224 unless the caller sets it from the recipe. With ``split`` the test set is held out of train/ (as
    for the in-memory datasets) and val/ is not used; ``train_subset`` / ``test_subset`` keep the first N.
    """

    name: str
    root: str
    classes: list
    num_classes: int
    train_size: int
    test_size: int
    shape: tuple = (3, 224, 224)
    train_subset: int | None = None
    test_subset: int | None = None
    split: tuple | None = None
    seed: int = 0
    _scanned: dict = field(default_factory=dict, repr=False, compare=False)

    def _folder(self, part: str):
        """The ImageFolder of ROOT/<part>, without transforms (scanned once: ImageNet's train/ is 1.28M files)."""
        if part not in self._scanned:
            self._scanned[part] = _scan_folder(self.root, part)
        return self._scanned[part]

    def _indices(self, which: str):
        """(part, indices or None for all of it) of the train or test set."""
        if self.split is None:
            part = "train" if which == "train" else "val"
            idx = None
        else:
            part = "train"
            n_train, n_val = self.split
            total = len(self._folder("train"))
            order = _split_order(total, self.seed)
            idx = order[:n_train] if which == "train" else order[total - n_val:]
        n = self.train_subset if which == "train" else self.test_subset
        if n is not None:
            idx = torch.arange(n) if idx is None else idx[:n]
        return part, idx

    def _dataset(self, which: str, transform):
        part, idx = self._indices(which)
        ds = copy.copy(self._folder(part))  # shares the scanned file list; only the transform differs
        ds.transform = transform
        return ds if idx is None else torch.utils.data.Subset(ds, idx.tolist())

    def train_dataset(self, augment: list, crop: int) -> torch.utils.data.Dataset:
        """The training images with the recipe's augmentations (see :func:`train_transform`)."""
        return self._dataset("train", train_transform(augment, crop))

    def test_dataset(self, crop: int, resize: int = 256, ten_crop: bool = False) -> torch.utils.data.Dataset:
        """The test images: shorter side resized to ``resize``, then the center ``crop`` (a (C, H, W) tensor per
        image) or, with ``ten_crop``, the four corners and the center and their mirror images ((10, C, H, W))."""
        from torchvision import transforms as T

        if ten_crop:
            tf = T.Compose([T.Resize(resize), _TenCropTensors(crop)])
        else:
            tf = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(),
                            T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        return self._dataset("test", tf)


# ---------------------------------------------------------------------------------------------------
# image-folder transforms (module-level classes, so that DataLoader workers can pickle them under spawn)


class _Lighting:
    """AlexNet-style PCA colour noise ([R] 3.4: "the standard color augmentation in [21]"): adds
    ``eigvec @ (alpha * eigval)`` with alpha ~ N(0, std) to every pixel of a [0, 1] tensor image."""

    def __init__(self, std: float = 0.1):
        self.std = std
        self.eigval = torch.tensor(IMAGENET_EIGVAL)
        self.eigvec = torch.tensor(IMAGENET_EIGVEC)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = (self.eigvec * (alpha * self.eigval)).sum(1)
        return img + rgb.view(3, 1, 1).to(img.dtype)


class _RandomShorterSide:
    """[R] 3.4 scale augmentation: resize so that the shorter side is uniform in [lo, hi]."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def __call__(self, img):
        from torchvision.transforms import functional as TF

        size = int(torch.randint(self.lo, self.hi + 1, ()).item())
        return TF.resize(img, size)


class _TenCropTensors:
    """TenCrop, each crop to a normalised tensor, stacked to (10, C, H, W)."""

    def __init__(self, crop: int):
        self.crop = crop

    def __call__(self, img) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        return torch.stack([TF.normalize(TF.to_tensor(c), IMAGENET_MEAN, IMAGENET_STD)
                            for c in TF.ten_crop(img, self.crop)])


def crop_size(augment: list, default: int = 224) -> int:
    """The training crop an augment list produces (scale ... crop N, random-resized-crop N), else ``default``."""
    for a in augment:
        if a["kind"] == "scale":
            return a["crop"]
        if a["kind"] == "random-resized-crop":
            return a["size"]
    return default


def train_transform(augment: list, crop: int):
    """torchvision transforms for an image folder from a recipe's augment list:

    * ``{"kind": "scale", "min": a, "max": b, "crop": c}``: shorter side resized to a random size in [a, b],
      then a random c x c crop ([R] 3.4);
    * ``{"kind": "random-resized-crop", "size": s}``: torchvision's RandomResizedCrop (GoogLeNet-style);
    * ``{"kind": "flip"}``: random horizontal flip;
    * ``{"kind": "color"}``: ColorJitter(0.4, 0.4, 0.4) and AlexNet's PCA lighting noise (std 0.1);
    * ``{"kind": "pad-crop", "padding": p}``: a random ``crop`` x ``crop`` crop with p pixels of zero padding.

    Without a cropping step the image is resized and center-cropped to ``crop``. Then ToTensor and the ImageNet
    channel mean/std: the per-pixel mean subtraction of [R] 3.4 / AlexNet is approximated by these channel
    means (the mean image of ImageNet is nearly constant across pixels), as is usual in modern reimplementations.
    """
    from torchvision import transforms as T

    tfs, post = [], []
    cropped = False
    for a in augment:
        kind = a.get("kind")
        try:
            if kind == "scale":
                tfs += [_RandomShorterSide(int(a["min"]), int(a["max"])), T.RandomCrop(int(a["crop"]))]
                cropped = True
            elif kind == "random-resized-crop":
                tfs.append(T.RandomResizedCrop(int(a["size"])))
                cropped = True
            elif kind == "flip":
                tfs.append(T.RandomHorizontalFlip())
            elif kind == "color":
                tfs.append(T.ColorJitter(0.4, 0.4, 0.4))
                post.append(_Lighting(0.1))
            elif kind == "pad-crop":
                tfs.append(T.RandomCrop(crop, padding=int(a["padding"])))
                cropped = True
            else:
                raise DataError(f"unknown augmentation '{kind}' in the recipe; an image-folder dataset supports "
                                f"{', '.join(FOLDER_AUGMENTATIONS)}")
        except KeyError as exc:
            raise DataError(f"augmentation '{kind}' in the recipe lacks its '{exc.args[0]}' setting") from None
    if not cropped:
        tfs = [T.Resize(crop), T.CenterCrop(crop), *tfs]
    return T.Compose([*tfs, T.ToTensor(), *post, T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


# ---------------------------------------------------------------------------------------------------
# loading


def load_dataset(name_or_path: str, data_dir: str | None = None, *, download: bool = True,
                 split: tuple[int, int] | None = None, train_subset: int | None = None,
                 test_subset: int | None = None, synthetic_shape=(3, 32, 32), synthetic_classes=10,
                 synthetic_size=(1024, 256), seed: int = 0) -> InMemoryData | FolderData:
    """Load a dataset by name (one of :data:`DATASETS`) or the path of an ImageNet-layout folder.

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
    if name in _CIFAR:
        data = _cifar(name, data_dir, download)
    elif name in ("fashion-mnist", "mnist"):
        data = _mnist(name, data_dir, download)
    elif name == "synthetic":
        data = _synthetic(synthetic_shape, synthetic_classes, synthetic_size, seed)
    elif os.path.isdir(os.path.expanduser(name)):
        return _folder(os.path.expanduser(name), split, train_subset, test_subset, seed)
    elif name in FOLDER_DATASETS:
        raise DataError(f"the recipe trains on {name}, which is an image folder resdsl cannot download: pass "
                        f"--data /path/to/{name} (a folder with train/<class>/<image> and val/<class>/<image> "
                        "inside, as torchvision's ImageFolder reads it)")
    elif os.path.exists(os.path.expanduser(name)):
        raise DataError(f"--data {name}: this is a file, not a folder; an image-folder dataset is a folder with "
                        "train/<class>/ and val/<class>/ inside")
    elif "/" in name or os.sep in name or name.startswith((".", "~")):
        raise DataError(f"--data {name}: no such folder. An image-folder dataset is a folder with train/<class>/ "
                        f"and val/<class>/ inside; or use one of the named datasets: {', '.join(DATASETS)}")
    else:
        raise DataError(f"unknown dataset '{name}': pass --data with one of {', '.join(DATASETS)}, or with the "
                        "path of an ImageNet-layout folder (train/<class>/ and val/<class>/ inside)")
    if split is not None:
        n_train, n_val = split
        total = data.train_x.shape[0]
        if n_train + n_val > total:
            raise DataError(f"the split {n_train}/{n_val} needs {n_train + n_val} training images, but {name} has "
                            f"only {total}; use a smaller split")
        order = _split_order(total, seed)
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


def _split_order(total: int, seed: int) -> torch.Tensor:
    """The shuffled training set a split cuts: train = the first n_train, test = the last n_val."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))


def _root(data_dir) -> str:
    return os.path.expanduser(data_dir or DEFAULT_ROOT)


# CIFAR ---------------------------------------------------------------------------------------------


def _cifar(name: str, data_dir, download: bool) -> InMemoryData:
    from torchvision import datasets

    cls_name, folder, archive, classes = _CIFAR[name]
    cls = getattr(datasets, cls_name)
    root = os.path.normpath(_root(data_dir))
    if os.path.basename(root) == folder:  # --data-dir pointed at the batches folder itself: that is fine too
        root = os.path.dirname(root)
    where = os.path.join(root, folder)
    present = os.path.isdir(where)
    fix = (f"Put torchvision's '{folder}/' folder (what {archive} unpacks to) in a folder DIR and pass "
           "--data-dir DIR")
    try:
        train = cls(root=root, train=True, download=download)
        test = cls(root=root, train=False, download=False)
    except Exception as exc:  # noqa: BLE001 - offline, a firewall, a corrupt file: one clear message
        if present:
            raise DataError(f"{name}: {where}/ is incomplete or corrupt ({_reason(exc)}). Delete it and let "
                            f"resdsl download it again, or fix it: {fix} (--data {name} --data-dir DIR)") from None
        if download:
            raise DataError(f"{name} is not in {root} and could not be downloaded ({_reason(exc)}). Without "
                            f"internet access: {fix}") from None
        raise DataError(f"{name} is not in {root} ({where}/ does not exist) and downloads are off. {fix}, or "
                        "drop --no-download") from None

    def tensors(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    (trx, try_), (tex, tey) = tensors(train), tensors(test)
    return InMemoryData(name, trx, try_, tex, tey, classes)


# MNIST and Fashion-MNIST: IDX files --------------------------------------------------------------------


def read_idx(path: str) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzip-compressed or raw): the format of MNIST and Fashion-MNIST.

    The header is a magic number (0, 0, type code 0x08, number of dimensions) and the dimensions as
    big-endian 32-bit integers; the data follows, row-major. Raises :class:`DataError` on anything else.
    """
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as fh:
            data = _read_idx_bytes(fh, path)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; point --data-dir at the folder holding the IDX files") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path} ({_reason(exc)}): the file is truncated or corrupt. Delete it and "
                        "download it again, or point --data-dir at a good copy") from None
    bad = (f"{path} is truncated or corrupt: not an IDX file of unsigned bytes (bad magic number). Delete it and "
           "download it again, or point --data-dir at a good copy")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(bad)
    if data[2] != 0x08:
        kind = _IDX_TYPES.get(data[2])
        if kind is None:
            raise DataError(bad)
        raise DataError(f"{path} is an IDX file of {kind}s; only unsigned bytes (type 0x08, as in MNIST) are "
                        "read (bad magic number for this purpose)")
    ndim = data[3]
    if not 1 <= ndim <= 4:
        raise DataError(f"{path} is truncated or corrupt: an IDX file with {ndim} dimensions (bad magic number)")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DataError(f"{path} is truncated or corrupt: the file ends inside its header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", bytes(data[4:start]))
    count = 1
    for d in dims:
        count *= d
    have = len(data) - start
    if have != count:
        what = "is truncated" if have < count else f"has {have - count} bytes too many"
        raise DataError(f"{path} is truncated or corrupt: its header says {'x'.join(map(str, dims))} = {count} "
                        f"bytes of data, but it {what} ({have} bytes). Delete it and download it again, or point "
                        "--data-dir at a good copy")
    if count == 0:
        return torch.empty(dims, dtype=torch.uint8)
    return torch.frombuffer(data, dtype=torch.uint8, offset=start, count=count).reshape(dims)


def _read_idx_bytes(fh, path: str) -> bytearray:
    """The header, then only as many bytes as the header promises (checked against :data:`MAX_IDX_BYTES` first),
    so that a small compressed file that inflates to gigabytes is refused before it is inflated."""
    data = bytearray(fh.read(4))
    if len(data) == 4 and data[0] == data[1] == 0 and 1 <= data[3] <= 4:
        data += fh.read(4 * data[3])
        if len(data) == 4 + 4 * data[3]:
            count = 1
            for d in struct.unpack(f">{data[3]}I", bytes(data[4:])):
                count *= d
            limit = _max_idx_bytes()
            if count > limit:
                raise DataError(f"{path}: its header promises {count:,} bytes of images, more than the limit of "
                                f"{limit:,.0f} (set RESDSL_MAX_IDX_BYTES to raise it, inf for none); is it really an "
                                "IDX file?")
            data += fh.read(count)
            extra = 0  # count what lies beyond the promised data without keeping it (a bomb's tail is large)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                extra += len(chunk)
                if extra > 1 << 26:
                    break
            data += bytes(min(extra, 1 << 26))
    return data


def _max_idx_bytes() -> float:
    raw = os.environ.get("RESDSL_MAX_IDX_BYTES", "").strip()
    try:
        return float(raw) if raw else MAX_IDX_BYTES
    except ValueError:
        raise DataError(f"RESDSL_MAX_IDX_BYTES={raw!r} is not a number of bytes (or inf)") from None


def _find_idx(folder: str) -> dict | None:
    """The four IDX files in ``folder`` (each .gz or uncompressed), or None unless all four are there."""
    found = {}
    for key, stem in _IDX.items():
        for cand in (stem + ".gz", stem):
            if os.path.isfile(os.path.join(folder, cand)):
                found[key] = os.path.join(folder, cand)
                break
    return found if len(found) == 4 else None


def _check_partial_idx(name: str, places: list[str]) -> None:
    """A folder with some but not all four IDX files is a mistake to report, not a reason to look elsewhere."""
    for folder in places:
        have = [stem for stem in _IDX.values() if any(os.path.isfile(os.path.join(folder, stem + ext))
                                                      for ext in (".gz", ""))]
        if 0 < len(have) < len(_IDX):
            missing = [stem + "[.gz]" for stem in _IDX.values() if stem not in have]
            raise DataError(f"{name}: {folder} holds {len(have)} of the 4 IDX files; {', '.join(missing)} "
                            "is missing. Complete the folder or point --data-dir at a complete copy")


def _mnist(name: str, data_dir, download: bool) -> InMemoryData:
    sub = "FashionMNIST" if name == "fashion-mnist" else "MNIST"  # torchvision's layout: ROOT/<sub>/raw/
    root = _root(data_dir)
    places = [root, os.path.join(root, sub, "raw")] if data_dir else [os.path.join(root, sub, "raw")]
    if name == "fashion-mnist" and not data_dir:  # an explicit --data-dir is the only place looked at
        places.append(DEBIAN_FASHION_MNIST)
    places = list(dict.fromkeys(places))
    _check_partial_idx(name, places)
    files = next((f for f in map(_find_idx, places) if f), None)
    files_named = ", ".join(s + "[.gz]" for s in _IDX.values())
    fix = (f"Put the four IDX files ({files_named}) in a folder DIR (or DIR/{sub}/raw/) and pass --data-dir DIR"
           + (" (on Debian: apt install dataset-fashion-mnist)" if name == "fashion-mnist" else ""))
    if files is None and download:
        from torchvision import datasets

        cls = getattr(datasets, sub)
        try:
            cls(root=root, train=True, download=True)
        except Exception as exc:  # noqa: BLE001 - offline etc.
            raise DataError(f"{name} is not in any of {', '.join(places)} and could not be downloaded "
                            f"({_reason(exc)}). {fix}") from None
        files = _find_idx(os.path.join(root, sub, "raw"))
        if files is None:
            raise DataError(f"{name} was downloaded to {os.path.join(root, sub, 'raw')}, but its IDX files are not "
                            f"all there. {fix}")
    if files is None:
        raise DataError(f"{name} is not in any of {', '.join(places)}, and downloads are off. {fix}, or drop "
                        "--no-download")
    t = {k: read_idx(p) for k, p in files.items()}
    for part in ("train", "test"):
        x, y = t[f"{part}_x"], t[f"{part}_y"]
        if x.dim() != 3 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise DataError(f"{name}: the {part} images {files[part + '_x']} ({'x'.join(map(str, x.shape))}) and "
                            f"labels {files[part + '_y']} ({'x'.join(map(str, y.shape))}) do not match (N images "
                            f"of HxW and N labels). {fix}")
        if y.numel() and int(y.max()) >= 10:
            raise DataError(f"{name}: {files[part + '_y']} has label {int(y.max())}; {name} has 10 classes (0-9). "
                            f"{fix}")
    return InMemoryData(name, t["train_x"][:, None], t["train_y"].long(), t["test_x"][:, None],
                        t["test_y"].long(), 10)


# synthetic ---------------------------------------------------------------------------------------


def _synthetic(shape, classes, sizes, seed) -> InMemoryData:
    """Learnable random uint8 images, deterministic in ``seed``: each class has its own random brightness
    pattern (uniform in [48, 208] per pixel), and every image is its class's pattern plus N(0, 40) noise."""
    try:
        c, h, w = (int(s) for s in shape)
        n_train, n_test = (int(s) for s in sizes)
        classes = int(classes)
    except (TypeError, ValueError):
        raise DataError(f"synthetic data needs a (C, H, W) shape and (train, test) sizes, not {shape!r} and "
                        f"{sizes!r}") from None
    if min(c, h, w, classes, n_train, n_test) < 1:
        raise DataError(f"synthetic data needs positive sizes: shape {shape}, {classes} classes, sizes {sizes}")
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(classes, c, h, w, generator=g) * 160 + 48

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        noise = torch.randn(n, c, h, w, generator=g) * 40
        return (patterns[y] + noise).clamp(0, 255).to(torch.uint8), y

    (trx, try_), (tex, tey) = make(n_train), make(n_test)
    return InMemoryData("synthetic", trx, try_, tex, tey, classes)


# image folders -------------------------------------------------------------------------------------


def _scan_folder(root: str, part: str):
    from torchvision import datasets

    try:
        return datasets.ImageFolder(os.path.join(root, part), loader=load_image)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"--data {root}: {part}/ holds no images in class folders ({_reason(exc)}); an "
                        f"image-folder dataset needs {part}/<class>/<image> files") from None


def load_image(path: str):
    """An image file as an RGB PIL image; a file PIL cannot decode is a DataError that names it."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            img = Image.open(fh)
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode the image {path} ({_reason(exc)}); remove or replace the file") from None


def worker_errors_unwrapped(batches):
    """Iterate a DataLoader; a DataError raised in a worker process comes out as its own message (DataLoader
    re-raises it in this process with the worker's traceback folded into the message)."""
    try:
        yield from batches
    except DataError as exc:
        text = str(exc)
        if "Traceback" in text:
            text = text.rstrip().splitlines()[-1].split("DataError: ", 1)[-1]
        raise DataError(text) from None


def _folder(root: str, split, train_subset, test_subset, seed) -> FolderData:
    for part in ("train", "val"):
        if not os.path.isdir(os.path.join(root, part)):
            raise DataError(f"--data {root}: the folder has no {part}/ folder; an ImageNet-layout dataset needs "
                            "train/<class>/<image> and val/<class>/<image> inside (the same class folder names "
                            "in both)")
    train, val = _scan_folder(root, "train"), _scan_folder(root, "val")
    if train.classes != val.classes:
        only_t = sorted(set(train.classes) - set(val.classes))
        only_v = sorted(set(val.classes) - set(train.classes))
        raise DataError(f"--data {root}: train/ and val/ have different class folders (only in train/: "
                        f"{', '.join(only_t[:5]) or '-'}{' ...' if len(only_t) > 5 else ''}; only in val/: "
                        f"{', '.join(only_v[:5]) or '-'}{' ...' if len(only_v) > 5 else ''}); both need the same")
    if split is not None:
        n_train, n_val = split
        if n_train + n_val > len(train):
            raise DataError(f"the split {n_train}/{n_val} needs {n_train + n_val} training images, but {root}/train "
                            f"has only {len(train)}; use a smaller split")
        sizes = {"train": n_train, "test": n_val}
    else:
        sizes = {"train": len(train), "test": len(val)}
    for n, which in ((train_subset, "train"), (test_subset, "test")):
        if n is not None:
            if n > sizes[which]:
                raise DataError(f"--{which}-subset {n} is larger than the {which} set of {root} ({sizes[which]} "
                                "images); pass a smaller number")
            sizes[which] = n
    name = os.path.basename(os.path.normpath(root)) or root
    return FolderData(name, root, list(train.classes), len(train.classes), sizes["train"], sizes["test"],
                      (3, 224, 224), train_subset, test_subset, split, seed, {"train": train, "val": val})


# ---------------------------------------------------------------------------------------------------
# in-memory batches


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of training examples in ``epoch``: a permutation of range(n) that depends only on
    (seed, epoch), so a resumed run and every process of a distributed run see the same order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _channel_sums(x: torch.Tensor, fn, chunk: int):
    """sum over images of fn(image chunk as float64 in [0, 1]), without a float64 copy of the whole set."""
    total = None
    for i in range(0, x.shape[0], chunk):
        s = fn(x[i:i + chunk].double() / 255)
        total = s if total is None else total + s
    return total


class BatchPipeline:
    """Normalises and augments batches of an InMemoryData on its device, with no DataLoader.

    ``normalize``: ``"per-pixel-mean"`` subtracts the training set's mean image ([R] 4.2; no division),
    ``"mean-std"`` the per-channel mean and divides by the per-channel std of the training set, ``"none"`` only
    scales to [0, 1]. Images are always scaled to [0, 1] first (x / 255). The statistics are computed once, in
    float64 on the data's device, and kept as float32.

    ``augment`` (in memory): ``{"kind": "pad-crop", "padding": P}`` pads P zeros on every side (after
    normalisation) and takes a random HxW crop per image; ``{"kind": "flip"}`` flips each image horizontally
    with probability 1/2. The other kinds need an image-folder dataset.
    """

    def __init__(self, data: InMemoryData, normalize: str, augment: list):
        self.data = data
        self.pad, self.flip = 0, False
        for a in augment:
            kind = a.get("kind")
            if kind == "pad-crop":
                self.pad = int(a.get("padding", 0))
                if self.pad < 0:
                    raise DataError(f"pad-crop needs a padding of 0 or more pixels, not {self.pad}")
            elif kind == "flip":
                self.flip = True
            else:
                raise DataError(f"augmentation '{kind}' needs an image-folder dataset (--data FOLDER with train/ "
                                f"and val/); {data.name} is held in memory, where only "
                                f"{', '.join(IN_MEMORY_AUGMENTATIONS)} are supported")
        x = data.train_x
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise DataError(f"{data.name}: the training images must be uint8 (N, C, H, W), not {x.dtype} "
                            f"{tuple(x.shape)}")
        if x.shape[0] == 0 and normalize != "none":
            raise DataError(f"{data.name}: the training set is empty, so it has no mean to subtract")
        chunk = max(1, (1 << 22) // max(1, x[0].numel()))
        if normalize == "per-pixel-mean":  # [R] 4.2: "the per-pixel mean is subtracted"
            self.mean = (_channel_sums(x, lambda c: c.sum(0), chunk) / x.shape[0]).float()
            self.std = None
        elif normalize == "mean-std":
            per_channel = x.shape[0] * x.shape[2] * x.shape[3]
            mean = _channel_sums(x, lambda c: c.sum((0, 2, 3)), chunk) / per_channel
            m = mean.view(-1, 1, 1)
            var = _channel_sums(x, lambda c: ((c - m) ** 2).sum((0, 2, 3)), chunk) / max(1, per_channel - 1)
            self.mean = mean.float().view(-1, 1, 1)
            self.std = var.sqrt().float().view(-1, 1, 1).clamp_min(1e-6)
        elif normalize == "none":
            self.mean, self.std = None, None
        else:
            raise DataError(f"unknown normalisation '{normalize}' in the recipe; use one of "
                            f"{', '.join(NORMALIZATIONS)}")

    def stats(self) -> dict:
        """The normalisation statistics (saved in checkpoints, so evaluation normalises exactly as training)."""
        return {"mean": None if self.mean is None else self.mean.cpu(),
                "std": None if self.std is None else self.std.cpu()}

    def load_stats(self, stats: dict) -> None:
        """Use saved statistics (from :meth:`stats`) instead of this training set's."""
        dev = self.data.train_x.device
        self.mean = None if stats["mean"] is None else stats["mean"].to(dev)
        self.std = None if stats["std"] is None else stats["std"].to(dev)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented, normalised training images at ``indices`` (float32 (B, C, H, W)) and their labels.

        All randomness comes from ``generator`` (on the CPU), drawn in a fixed order (crop rows, crop columns,
        flip mask) and then moved to the data's device: the same indices and generator state give a bitwise
        identical batch."""
        dev = self.data.train_x.device
        idx = indices.to(device=dev, dtype=torch.int64)
        x = self._normalise(self.data.train_x[idx])
        y = self.data.train_y[idx]
        b, c, h, w = x.shape
        if self.pad:
            p = self.pad
            padded = torch.nn.functional.pad(x, (p, p, p, p))  # zeros, after normalisation
            oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(dev)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(dev)
            rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
            bi = torch.arange(b, device=dev)[:, None, None, None]
            ci = torch.arange(c, device=dev)[None, :, None, None]
            x = padded[bi, ci, rows, cols]
        if self.flip:
            mask = (torch.rand(b, generator=generator) < 0.5).to(dev)
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x.contiguous(), y

    def test_batches(self, batch_size: int):
        """The whole test set in order, normalised, without augmentation: (float32 images, int64 labels)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        n = self.data.test_x.shape[0]
        for i in range(0, n, batch_size):
            yield self._normalise(self.data.test_x[i:i + batch_size]), self.data.test_y[i:i + batch_size]
