"""Datasets in the ImageNet layout (``ROOT/train/<class>/*``, ``ROOT/val/<class>/*``): :class:`FolderData`, scanned
through ``torchvision.datasets.ImageFolder``; :class:`FolderImages`, its pictures as a DataLoader reads them (decoded
and cut in the worker, or as encoded bytes and each sample's draw, for :func:`images.build_batch` to decode and
cut on the GPU), and :func:`worker_errors_unwrapped` for the DataLoader that reads them. Its classes are
module-level, so that DataLoader workers can pickle the datasets under spawn. Imports nothing from the rest of resdsl:
it is shipped beside emitted trainers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .batches import split_order
from .dataerror import DataError, one_line
from .decoding import read_bytes
from .images import Plan, EvalView, draw, make_batch, plan_from


# ---------------------------------------------------------------------------------------------------
# the dataset

SUBSET_SEED = 0  # --train-subset/--test-subset of a folder: the same images for every run and seed


@dataclass
class FolderData:
    """An ImageNet-layout folder: ROOT/train/<class>/<image> and ROOT/val/<class>/<image>.

    The images stay on disk; :meth:`train_dataset` and :meth:`test_dataset` give ``torch.utils.data.Dataset``
    objects that decode and augment them (for a DataLoader). ``shape`` is (3, crop, crop), the size the network
    sees: 224 unless the caller sets it from the recipe. With ``split`` the test set is held out of train/ (as
    for the in-memory datasets) and val/ is not used; ``train_subset`` / ``test_subset`` keep N images drawn over
    every class (the first N of a split's shuffled order; without a split, a draw that is the same for every run).
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
            order = split_order(total, self.seed)
            idx = order[:n_train] if which == "train" else order[total - n_val:]
        n = self.train_subset if which == "train" else self.test_subset
        if n is not None and idx is None:  # a folder lists its images class by class: the first N would be the
            total = len(self._folder(part))  # first classes alone, so N drawn over them all (a fixed draw)
            idx = split_order(total, SUBSET_SEED)[:n].sort().values
        elif n is not None:
            idx = idx[:n]  # already in a shuffled order
        return part, idx

    def _dataset(self, which: str, view, encoded: bool) -> "FolderImages":
        part, idx = self._indices(which)
        samples = self._folder(part).samples
        if idx is not None:
            samples = [samples[i] for i in idx.tolist()]
        return FolderImages(samples, view, encoded)

    def train_dataset(self, augment: list, crop: int, encoded: bool = False) -> "FolderImages":
        """The training images with the recipe's augmentations (see :mod:`images`); item ``(index, sample seed)``
        (a plain index means seed 0). ``encoded``: the files' bytes, for :func:`images.build_batch`."""
        return self._dataset("train", plan_from(augment, crop), encoded)

    def test_dataset(self, crop: int, resize: int = 256, ten_crop: bool = False, encoded: bool = False,
                     scales: tuple = ()) -> "FolderImages":
        """The test images: shorter side resized to ``resize``, then the center ``crop`` (a (C, H, W) tensor per
        image) or, with ``ten_crop``, the four corners and the center and their mirror images ((10, C, H, W)); or,
        with ``scales``, each whole image at those shorter sides (a :class:`views.Views` per image)."""
        return self._dataset("test", EvalView(crop, resize, ten_crop, tuple(scales)), encoded)


class FolderImages(torch.utils.data.Dataset):
    """The pictures of a folder as a DataLoader reads them: item ``index`` or ``(index, sample seed)`` is
    ``(picture, label)``, decoded and cut by ``view`` in the worker, or with ``encoded`` ``(bytes, label, seed,
    path, draw)`` (the draw None for a test view), left for :func:`images.build_batch` to decode where the model
    is (:func:`collate_encoded` batches them)."""

    def __init__(self, samples: list, view: Plan | EvalView, encoded: bool = False):
        self.samples, self.view, self.encoded = samples, view, encoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, 0)
        path, label = self.samples[index]
        data = read_bytes(path)
        if self.encoded:  # the draw is made here, in a worker, off the thread that makes the batches
            return data, label, seed, path, draw(seed) if isinstance(self.view, Plan) else None
        x = make_batch([data], [path], [seed], self.view, "cpu")
        return (x if getattr(self.view, "scales", ()) else x[0]), label  # a multi-scale test's views.Views


def collate_encoded(items: list) -> tuple:
    """A batch of encoded items: (list of byte tensors, labels, seeds, paths, draws or None)."""
    datas, labels, seeds, paths, draws = zip(*items)
    return list(datas), torch.tensor(labels), list(seeds), list(paths), None if draws[0] is None else list(draws)


def crop_size(augment: list, default: int = 224) -> int:
    """The training crop an augment list produces (scale ... crop N, random-resized-crop N), else ``default``."""
    for a in augment:
        if a["kind"] == "scale":
            return a["crop"]
        if a["kind"] == "random-resized-crop":
            return a["size"]
    return default


# ---------------------------------------------------------------------------------------------------
# reading a folder


def _scan_folder(root: str, part: str):
    from torchvision import datasets

    class Folder(datasets.ImageFolder):
        """ImageFolder without hidden entries (a class folder .ipynb_checkpoints, a macOS ._x.JPEG beside x.JPEG),
        with each folder read once (a link that leads back into the tree would repeat pictures, or give them
        another class's label, without end) and every class folder holding pictures."""

        def find_classes(self, directory):
            classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
            if not classes:
                raise FileNotFoundError(f"no class folders in {directory}")
            return classes, {name: k for k, name in enumerate(classes)}

        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
            seen: dict = {}
            return [(path, class_to_idx[c]) for c in sorted(class_to_idx)
                    for path in _pictures(root, part, c, extensions, seen)]

    try:
        return Folder(os.path.join(root, part), loader=read_bytes)
    except DataError:
        raise
    except (FileNotFoundError, OSError) as exc:
        flat = _loose_images(os.path.join(root, part))
        hint = (f"; its {flat:,} images lie loose in it, as ImageNet's validation archive holds them: with "
                "ILSVRC2012_img_val.tar and the devkit ILSVRC2012_devkit_t12.tar.gz in ROOT (and the loose "
                f"{part}/ moved away), torchvision.datasets.ImageNet(ROOT, split='val') makes {part}/ with class "
                "folders") if flat else ""
        raise DataError(f"--data {root}: {part}/ holds no images in class folders ({one_line(exc)}); an "
                        f"image-folder dataset needs {part}/<class>/<image> files{hint}") from None


def _pictures(root: str, part: str, name: str, extensions, seen: dict) -> list[str]:
    """The picture files under ``part/name`` in ImageFolder's order (folders by path, files by name), following
    links but reading each folder once (``seen``: the folders read so far, by device and inode, for the part)."""
    from torchvision.datasets.folder import has_file_allowed_extension

    top, found = os.path.join(root, part, name), []
    for here, dirs, files in os.walk(top, followlinks=True, onerror=_raise):
        st = os.stat(here)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            links = [link for link in (_link_in(root, p) for p in (seen[key], here)) if link]
            raise DataError(f"--data {root}: {here} is the folder {seen[key]} again (through a symbolic link), so "
                            "its pictures would be read twice, or without end; remove the link "
                            + " or ".join(links))
        seen[key] = here
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.append((here, sorted(f for f in files if not f.startswith(".")
                                   and has_file_allowed_extension(f, extensions))))
    paths = [os.path.join(here, f) for here, files in sorted(found) for f in files]
    if not paths:
        raise DataError(f"--data {root}: the class folder {part}/{name} holds no pictures ({', '.join(extensions)}); "
                        f"every class needs its pictures in train/ and val/, or its folder removed from both")
    return paths


def _link_in(root: str, path: str) -> str | None:
    """The first symbolic link on the way from the dataset's folder ``root`` to ``path`` (what to remove to unlink
    it; links above ``root``, such as a data disk's, are not the dataset's), or None."""
    parts = os.path.relpath(path, root).split(os.sep)
    return next((os.path.join(root, *parts[:k]) for k in range(1, len(parts) + 1)
                 if os.path.islink(os.path.join(root, *parts[:k]))), None)


def _raise(exc: OSError) -> None:
    raise DataError(f"cannot read the folder {exc.filename} ({exc.strerror or one_line(exc)})")


def _loose_images(folder: str) -> int:
    """How many image files lie directly in ``folder`` (not in class folders)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        return sum(1 for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))
    except OSError:
        return 0


def worker_errors_unwrapped(batches):
    """Iterate a DataLoader; a DataError raised in a worker process comes out as its own message (DataLoader
    re-raises it in this process with the worker's traceback folded into the message), and a worker that died (a
    decoder's crash, the system's out-of-memory killer) is a DataError too, so the run keeps its work."""
    try:
        yield from batches
    except DataError as exc:  # its args hold DataLoader's text as made, the worker's traceback on its lines
        raise DataError(_message_of(exc.args[0] if exc.args else "")) from None
    except RuntimeError as exc:
        if "DataLoader worker (pid" not in str(exc):
            raise
        raise DataError(f"a process reading the pictures ended: {str(exc).splitlines()[0].rstrip('. ')} (a picture "
                        "that crashed its decoder, or the system out of memory)") from None


def _message_of(text: str) -> str:
    """The DataError's own message in the text DataLoader folds a worker's traceback into: what follows
    'DataError: ' on the traceback's last, unindented line (the message is one line: dataerror.Message)."""
    _, found, tail = text.rpartition("Traceback (most recent call last):")
    if not found:
        return text
    lines = tail.split("\n")
    at = next((k for k, line in enumerate(lines) if line[:1] not in ("", " ") and "DataError: " in line), None)
    return text if at is None else lines[at].split("DataError: ", 1)[1].rstrip()


def image_folder(root: str, split, train_subset, test_subset, seed) -> FolderData:
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
