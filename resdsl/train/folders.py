"""Datasets in the ImageNet layout (``ROOT/train/<class>/*``, ``ROOT/val/<class>/*``): :class:`FolderData`, read
through ``torchvision.datasets.ImageFolder`` with the papers' augmentations (:func:`train_transform`,
:func:`crop_size` and the transform classes), decoded by :func:`load_image`, and :func:`worker_errors_unwrapped`
for the DataLoader that reads them. Its classes are module-level, so that DataLoader workers can pickle the
datasets and transforms under spawn. Imports nothing from the rest of resdsl: it is shipped beside emitted
trainers.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch

from .batches import _split_order
from .dataerror import DataError, _reason

FOLDER_AUGMENTATIONS = ("scale", "random-resized-crop", "flip", "color", "pad-crop")

# The usual ImageNet channel statistics (RGB, images scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The principal components of ImageNet's RGB pixel values, as AlexNet's lighting noise uses them.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


# ---------------------------------------------------------------------------------------------------
# the dataset


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
# reading a folder


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
