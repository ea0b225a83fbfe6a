"""The named in-memory datasets: ``cifar10`` / ``cifar100`` in torchvision's on-disk format (downloaded by torchvision,
read by :mod:`cifar`), ``fashion-mnist`` / ``mnist`` from their IDX files (Debian's ``dataset-fashion-mnist``
package is used when present, torchvision downloads only as a last resort), and ``synthetic``, a deterministic,
learnable random dataset for smoke tests. Each loader returns an :class:`InMemoryData`; :func:`.data.load_dataset`
picks one by name. Imports nothing from the rest of resdsl: it is shipped beside emitted trainers.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .batches import InMemoryData
from .cifar import read_batches
from .dataerror import DataError, one_line
from .idx import IDX_FILES, check_partial_idx, find_idx, read_idx

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
DEFAULT_ROOT = os.path.join("~", ".cache", "resdsl", "data")

CIFAR_FILES = {"cifar10": ("CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz", 10),
          "cifar100": ("CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz", 100)}


def _root(data_dir) -> str:
    return os.path.expanduser(data_dir or DEFAULT_ROOT)


def _absent(data_dir) -> str:
    """What to say of a --data-dir that does not exist (a typo, most often): the messages below name the places
    looked in, and a missing one looks like any other."""
    if data_dir and os.path.exists(os.path.expanduser(data_dir)) and not os.path.isdir(os.path.expanduser(data_dir)):
        return f" (--data-dir {data_dir} is a file, not a folder)"
    if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
        return f" (--data-dir {data_dir} does not exist: is it mistyped?)"
    return ""


@contextlib.contextmanager
def _no_empty_folders_left(path: str):
    """A download that fails leaves none of the folders it made on the way to ``path`` behind while they are
    empty: a mistyped --data-dir, offline, made a whole tree of empty folders."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.lexists(folder):
        missing.append(folder)  # deepest first
        folder = os.path.dirname(folder)
    try:
        yield
    except BaseException:
        for made in missing:
            try:
                os.rmdir(made)
            except OSError:  # not empty (a partial download), or gone: kept as it is
                break
        raise


# CIFAR ---------------------------------------------------------------------------------------------


def load_cifar(name: str, data_dir, download: bool) -> InMemoryData:
    from torchvision import datasets

    cls_name, folder, archive, classes = CIFAR_FILES[name]
    cls = getattr(datasets, cls_name)
    root = os.path.normpath(_root(data_dir))
    if os.path.basename(root) == folder:  # --data-dir pointed at the batches folder itself: that is fine too
        root = os.path.dirname(root)
    where = os.path.join(root, folder)
    present = os.path.isdir(where)
    fix = (f"Put torchvision's '{folder}/' folder (what {archive} unpacks to) in a folder DIR and pass "
           "--data-dir DIR")
    if not present:
        if not download:
            raise DataError(f"{name} is not in {root} ({where}/ does not exist){_absent(data_dir)} and downloads "
                            f"are off. {fix}, or drop --no-download")
        try:
            with _no_empty_folders_left(root):
                cls(root=root, train=True, download=True)
        except Exception as exc:  # noqa: BLE001 - offline, a firewall, a corrupt download: one clear message
            raise DataError(f"{name} is not in {root}{_absent(data_dir)} and could not be downloaded "
                            f"({one_line(exc)}). Without internet access: {fix}") from None
    for attempt in ("read", "repaired"):
        try:
            trx, try_ = read_batches(where, cls.train_list, classes)
            tex, tey = read_batches(where, cls.test_list, classes)
            return InMemoryData(name, trx, try_, tex, tey, classes)
        except DataError as exc:
            if attempt == "repaired" or not download or not _repaired(cls, root):
                raise DataError(f"{name}: {where}/ is incomplete or corrupt: {exc}. Delete it and let resdsl "
                                f"download it again, or fix it: {fix} (--data {name} --data-dir DIR)") from None


def _repaired(cls, root: str) -> bool:
    """torchvision's download, which checks the files and fetches and unpacks the archive again where one is bad."""
    try:
        cls(root=root, train=True, download=True)
        return True
    except Exception:  # noqa: BLE001 - offline, a firewall: the folder stays as it is, and is named as it is
        return False


# MNIST and Fashion-MNIST ----------------------------------------------------------------------------------


def load_mnist(name: str, data_dir, download: bool) -> InMemoryData:
    sub = "FashionMNIST" if name == "fashion-mnist" else "MNIST"  # torchvision's layout: ROOT/<sub>/raw/
    root = _root(data_dir)
    places = [root, os.path.join(root, sub, "raw")] if data_dir else [os.path.join(root, sub, "raw")]
    if name == "fashion-mnist" and not data_dir:  # an explicit --data-dir is the only place looked at
        places.append(DEBIAN_FASHION_MNIST)
    places = list(dict.fromkeys(places))
    check_partial_idx(name, places)
    files = next((f for f in map(find_idx, places) if f), None)
    files_named = ", ".join(s + "[.gz]" for s in IDX_FILES.values())
    fix = (f"Put the four IDX files ({files_named}) in a folder DIR (or DIR/{sub}/raw/) and pass --data-dir DIR"
           + (" (on Debian: apt install dataset-fashion-mnist)" if name == "fashion-mnist" else ""))
    if files is None and download:
        from torchvision import datasets

        cls = getattr(datasets, sub)
        try:
            with _no_empty_folders_left(os.path.join(root, sub, "raw")):
                cls(root=root, train=True, download=True)
        except Exception as exc:  # noqa: BLE001 - offline etc.
            raise DataError(f"{name} is not in any of {', '.join(places)}{_absent(data_dir)} and could not be "
                            "downloaded "
                            f"({one_line(exc)}). {fix}") from None
        files = find_idx(os.path.join(root, sub, "raw"))
        if files is None:
            raise DataError(f"{name} was downloaded to {os.path.join(root, sub, 'raw')}, but its IDX files are not "
                            f"all there. {fix}")
    if files is None:
        raise DataError(f"{name} is not in any of {', '.join(places)}{_absent(data_dir)}, and downloads are off. "
                        f"{fix}, or drop "
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


def synthetic_data(shape, classes, sizes, seed) -> InMemoryData:
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
