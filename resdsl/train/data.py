"""Datasets through torchvision's loaders and formats, and a fast in-memory batch pipeline for small ones."""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, replace

import torch

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "mnist", "synthetic")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
DEFAULT_ROOT = os.path.join("~", ".cache", "resdsl", "data")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(Exception):
    """A data problem the user must fix (missing files, offline, unknown dataset, corrupt file)."""


@dataclass
class InMemoryData:
    """A small dataset held as uint8 tensors (N, C, H, W); the trainer moves it to the GPU."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def to(self, device) -> "InMemoryData":
        return replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                       test_x=self.test_x.to(device), test_y=self.test_y.to(device))


@dataclass
class FolderData:
    """An ImageNet-layout folder: ROOT/train/<class>/<image> and ROOT/val/<class>/<image>."""

    name: str
    root: str
    classes: list
    num_classes: int
    train_size: int
    test_size: int
    shape: tuple = (3, 224, 224)
    train_subset: int | None = None
    test_subset: int | None = None

    def _subset(self, ds, n):
        return torch.utils.data.Subset(ds, range(n)) if n else ds

    def train_dataset(self, augment: list, crop: int):
        from torchvision import datasets

        ds = datasets.ImageFolder(os.path.join(self.root, "train"), transform=train_transform(augment, crop))
        return self._subset(ds, self.train_subset)

    def test_dataset(self, crop: int, resize: int = 256, ten_crop: bool = False):
        from torchvision import datasets, transforms as T

        norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        if ten_crop:
            tf = T.Compose([T.Resize(resize), T.TenCrop(crop),
                            T.Lambda(lambda crops: torch.stack([norm(T.functional.to_tensor(c)) for c in crops]))])
        else:
            tf = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), norm])
        return self._subset(datasets.ImageFolder(os.path.join(self.root, "val"), transform=tf), self.test_subset)


class _Lighting:
    """AlexNet-style PCA colour noise ([R] 3.4: "the standard color augmentation in [21]")."""

    eigval = torch.tensor([0.2175, 0.0188, 0.0045])
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])

    def __init__(self, std: float = 0.1):
        self.std = std

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = (self.eigvec * alpha * self.eigval).sum(1)
        return img + rgb.view(3, 1, 1)


class _RandomShorterSide:
    """[R] 3.4 scale augmentation: resize so the shorter side is uniform in [min, max]."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def __call__(self, img):
        from torchvision.transforms import functional as TF

        size = int(torch.randint(self.lo, self.hi + 1, ()).item())
        return TF.resize(img, size)


def crop_size(augment: list, default: int = 224) -> int:
    """The training crop an augment list produces (scale ... crop N, random-resized-crop N), else ``default``."""
    for a in augment:
        if a["kind"] == "scale":
            return a["crop"]
        if a["kind"] == "random-resized-crop":
            return a["size"]
    return default


def train_transform(augment: list, crop: int):
    """torchvision transforms for an image folder from a recipe's augment list."""
    from torchvision import transforms as T

    tfs, post = [], []
    kinds = {a["kind"] for a in augment}
    for a in augment:
        if a["kind"] == "scale":
            tfs += [_RandomShorterSide(a["min"], a["max"]), T.RandomCrop(a["crop"])]
        elif a["kind"] == "random-resized-crop":
            tfs.append(T.RandomResizedCrop(a["size"]))
        elif a["kind"] == "flip":
            tfs.append(T.RandomHorizontalFlip())
        elif a["kind"] == "color":
            tfs.append(T.ColorJitter(0.4, 0.4, 0.4))
            post.append(_Lighting(0.1))
        elif a["kind"] == "pad-crop":
            tfs.append(T.RandomCrop(crop, padding=a["padding"]))
    if not kinds & {"scale", "random-resized-crop", "pad-crop"}:
        tfs += [T.Resize(crop), T.CenterCrop(crop)]
    # per-pixel mean subtraction over ImageNet is approximated by the usual channel mean/std
    return T.Compose([*tfs, T.ToTensor(), *post, T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


# ---------------------------------------------------------------------------------------------------
# loading


def load_dataset(name_or_path: str, data_dir: str | None = None, *, download: bool = True,
                 split: tuple | None = None, train_subset: int | None = None, test_subset: int | None = None,
                 synthetic_shape=(3, 32, 32), synthetic_classes=10, synthetic_size=(1024, 256),
                 seed: int = 0):
    """Load a dataset by name (see DATASETS) or an ImageNet-layout folder path."""
    name = name_or_path
    if name in ("cifar10", "cifar100"):
        data = _cifar(name, data_dir, download)
    elif name in ("fashion-mnist", "mnist"):
        data = _mnist(name, data_dir, download)
    elif name == "synthetic":
        data = _synthetic(synthetic_shape, synthetic_classes, synthetic_size, seed)
    elif os.path.isdir(os.path.expanduser(name)):
        return _folder(os.path.expanduser(name), train_subset, test_subset)
    elif "/" in name or os.sep in name:
        raise DataError(f"--data {name}: no such folder (an ImageNet-layout folder needs train/ and val/ inside)")
    else:
        raise DataError(f"unknown dataset '{name}': use one of {', '.join(DATASETS)} or the path of an "
                        "ImageNet-layout folder (with train/ and val/)")
    if split:
        n_train, n_val = split
        total = data.train_x.shape[0]
        if n_train + n_val > total:
            raise DataError(f"split {n_train}/{n_val} needs {n_train + n_val} training images; {name} has {total}")
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        tr, va = order[:n_train], order[total - n_val:]
        data = replace(data, train_x=data.train_x[tr], train_y=data.train_y[tr], test_x=data.train_x[va],
                       test_y=data.train_y[va])
    for n, which in ((train_subset, "train"), (test_subset, "test")):
        if n is not None:
            have = getattr(data, f"{which}_x").shape[0]
            if n > have:
                raise DataError(f"--{which}-subset {n} is larger than the {which} set ({have} images)")
            data = replace(data, **{f"{which}_x": getattr(data, f"{which}_x")[:n],
                                    f"{which}_y": getattr(data, f"{which}_y")[:n]})
    return data


def _root(data_dir):
    return os.path.expanduser(data_dir or DEFAULT_ROOT)


def _cifar(name, data_dir, download):
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    root = _root(data_dir)
    try:
        train = cls(root=root, train=True, download=download)
        test = cls(root=root, train=False, download=False)
    except Exception as exc:  # noqa: BLE001 - offline, corrupt or missing: one clear message
        how = "could not be downloaded" if download else "is not there (downloads are off)"
        raise DataError(f"{name} was not found in {root} and {how} ({type(exc).__name__}: {exc}). Put "
                        f"'{folder}/' (torchvision's format) in a folder and pass --data-dir FOLDER") from None
    def tensors(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    (trx, try_), (tex, tey) = tensors(train), tensors(test)
    return InMemoryData(name, trx, try_, tex, tey, 10 if name == "cifar10" else 100)


def read_idx(path: str) -> torch.Tensor:
    """Read an IDX file (gzip or raw): the format of MNIST and Fashion-MNIST."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated (header)")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    body = data[4 + 4 * ndim:]
    if len(body) != count:
        raise DataError(f"{path} is truncated or corrupt: {len(body)} bytes of data for shape {dims}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


_IDX = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def _find_idx(folder: str) -> dict | None:
    found = {}
    for key, stem in _IDX.items():
        for cand in (stem + ".gz", stem):
            if os.path.exists(os.path.join(folder, cand)):
                found[key] = os.path.join(folder, cand)
                break
    return found if len(found) == 4 else None


def _mnist(name, data_dir, download):
    sub = "FashionMNIST" if name == "fashion-mnist" else "MNIST"
    places = []
    if data_dir:
        d = os.path.expanduser(data_dir)
        places += [d, os.path.join(d, sub, "raw")]
    root = _root(data_dir)
    places.append(os.path.join(root, sub, "raw"))
    if name == "fashion-mnist":
        places.append(DEBIAN_FASHION_MNIST)
    files = next((f for f in map(_find_idx, places) if f), None)
    if files is None and download:
        from torchvision import datasets

        cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
        try:
            cls(root=root, train=True, download=True)
            cls(root=root, train=False, download=True)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{name} is not in any of {', '.join(places)} and could not be downloaded "
                            f"({type(exc).__name__}: {exc}); pass --data-dir with the four IDX files") from None
        files = _find_idx(os.path.join(root, sub, "raw"))
    if files is None:
        hint = " (Debian: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
        raise DataError(f"{name} is not in any of {', '.join(places)}{hint}; pass --data-dir with the four IDX "
                        "files")
    t = {k: read_idx(p) for k, p in files.items()}
    for part in ("train", "test"):
        if t[f"{part}_x"].dim() != 3 or t[f"{part}_x"].shape[0] != t[f"{part}_y"].shape[0]:
            raise DataError(f"{name}: {part} images and labels disagree ({files[part + '_x']})")
    return InMemoryData(name, t["train_x"][:, None], t["train_y"].long(), t["test_x"][:, None], t["test_y"].long(), 10)


def _synthetic(shape, classes, sizes, seed):
    """Learnable random images: each class has its own brightness pattern, plus noise."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    patterns = torch.rand(classes, c, h, w, generator=g) * 160 + 48

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        noise = torch.randn(n, c, h, w, generator=g) * 40
        return (patterns[y] + noise).clamp(0, 255).to(torch.uint8), y

    (trx, try_), (tex, tey) = make(sizes[0]), make(sizes[1])
    return InMemoryData("synthetic", trx, try_, tex, tey, classes)


def _folder(root, train_subset, test_subset) -> FolderData:
    from torchvision import datasets

    for part in ("train", "val"):
        if not os.path.isdir(os.path.join(root, part)):
            raise DataError(f"{root} has no {part}/ folder; an ImageNet-layout dataset needs train/<class>/ and "
                            "val/<class>/")
    try:
        train = datasets.ImageFolder(os.path.join(root, "train"))
        val = datasets.ImageFolder(os.path.join(root, "val"))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{root}: {exc}") from None
    if train.classes != val.classes:
        raise DataError(f"{root}: train/ and val/ have different class folders")
    for n, have, which in ((train_subset, len(train), "train"), (test_subset, len(val), "test")):
        if n is not None and n > have:
            raise DataError(f"--{which}-subset {n} is larger than the {which} set ({have} images)")
    return FolderData(os.path.basename(root.rstrip("/")), root, list(train.classes), len(train.classes),
                      train_subset or len(train), test_subset or len(val), (3, 224, 224), train_subset, test_subset)


# ---------------------------------------------------------------------------------------------------
# in-memory batches


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of training examples in ``epoch``; depends only on (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class BatchPipeline:
    """Normalises and augments batches of an InMemoryData on its own device, with no DataLoader."""

    def __init__(self, data: InMemoryData, normalize: str, augment: list):
        self.data = data
        self.pad, self.flip = 0, False
        for a in augment:
            if a["kind"] == "pad-crop":
                self.pad = a["padding"]
            elif a["kind"] == "flip":
                self.flip = True
            else:
                raise DataError(f"augmentation '{a['kind']}' needs an image-folder dataset; {data.name} is held "
                                "in memory (supported there: pad-crop, flip)")
        x = data.train_x
        if normalize == "per-pixel-mean":  # [R] 4.2: subtract the per-pixel mean of the training set
            self.mean = (x.double().mean(0) / 255).float()
            self.std = None
        elif normalize == "mean-std":
            xs = x.double() / 255
            self.mean = xs.mean((0, 2, 3)).float().view(-1, 1, 1)
            self.std = xs.std((0, 2, 3)).float().view(-1, 1, 1).clamp_min(1e-6)
        elif normalize == "none":
            self.mean, self.std = None, None
        else:
            raise DataError(f"unknown normalisation '{normalize}'")

    def stats(self) -> dict:
        """The normalisation statistics (saved in checkpoints, so evaluation normalises exactly as training)."""
        return {"mean": None if self.mean is None else self.mean.cpu(), "std": None if self.std is None else
                self.std.cpu()}

    def load_stats(self, stats: dict) -> None:
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

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator):
        """Augmented, normalised batch; all randomness comes from ``generator`` (CPU), in a fixed order."""
        dev = self.data.train_x.device
        idx = indices.to(dev)
        x = self._normalise(self.data.train_x[idx])
        y = self.data.train_y[idx]
        b, _, h, w = x.shape
        if self.pad:
            p = self.pad
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(dev)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(dev)
            rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
            bi = torch.arange(b, device=dev)[:, None, None, None]
            ci = torch.arange(x.shape[1], device=dev)[None, :, None, None]
            x = padded[bi, ci, rows, cols]
        if self.flip:
            mask = (torch.rand(b, generator=generator) < 0.5).to(dev)
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x.contiguous(), y

    def test_batches(self, batch_size: int):
        """The whole test set in order, normalised, no augmentation."""
        n = self.data.test_x.shape[0]
        for i in range(0, n, batch_size):
            yield self._normalise(self.data.test_x[i:i + batch_size]), self.data.test_y[i:i + batch_size]
