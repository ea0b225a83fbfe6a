"""The data an experiment's runs train on: its shape for the plan, how it departs from the paper's, and what every
run would find wrong with it, found once before any run starts."""
from __future__ import annotations

import functools
import os

from .model import Experiment
from .runner import ExperimentRunError

# (channels, size, classes, training images) of the datasets a recipe names, for the estimate before any data
# is read; an image folder (--data DIR) is taken as ImageNet
SHAPES = {"cifar10": (3, 32, 10, 50000), "cifar100": (3, 32, 100, 50000), "fashion-mnist": (1, 28, 10, 60000),
          "mnist": (1, 28, 10, 60000), "synthetic": (3, 32, 10, 50000), "imagenet": (3, 224, 1000, 1281167)}
IMAGENET_SLACK = 0.01  # a copy of ImageNet's training set missing a few pictures is still ImageNet


def dataset_of(exp: Experiment, options: dict) -> str:
    data = options.get("data") or exp.dataset
    return data if data in SHAPES else "imagenet"


def training_images(exp: Experiment, options: dict) -> int:
    """How many training images a run reads: a named dataset's, an image folder's own count (the trainer's epochs
    are the folder's, not ImageNet's), ImageNet's where no folder is given yet (a dry run)."""
    data = options.get("data")
    if dataset_of(exp, options) == "imagenet" and data and os.path.isdir(os.path.join(data, "train")):
        return _folder_images(os.path.abspath(os.path.join(data, "train")))[1] or SHAPES["imagenet"][3]
    return SHAPES[dataset_of(exp, options)][3]


@functools.lru_cache(maxsize=8)
def _folder_images(train: str) -> tuple[int, int]:
    """(class folders, images) in ``train``, counted as torchvision's ImageFolder finds them (every file with an
    image extension under a class folder that is not hidden)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = count = 0
    try:  # a folder that cannot be read is counted as none here: the trainer says what is wrong with it
        for entry in os.scandir(train):
            if entry.is_dir() and not entry.name.startswith("."):
                classes += 1
                for _, _, files in os.walk(entry.path, followlinks=True):
                    count += sum(1 for f in files if f.lower().endswith(IMG_EXTENSIONS))
    except OSError:
        return 0, 0
    return classes, count


def data_departure(exp: Experiment, options: dict) -> str | None:
    """How the data departs from the paper's: another dataset, or an image folder that is not ImageNet's 1000
    classes and 1,281,167 training images (any folder was taken for ImageNet, and set against [R]'s figures)."""
    data = options.get("data")
    if not data:
        return None
    if dataset_of(exp, options) != exp.dataset:
        return f"on {data}, not {exp.dataset}"
    if exp.dataset == "imagenet":
        _, _, paper_classes, paper_images = SHAPES["imagenet"]
        if not os.path.isdir(os.path.join(data, "train")):  # moved since its runs finished: not known to be ImageNet
            return f"on {data}, whose train/ is not there now to tell that it is ImageNet's"
        classes, images = _folder_images(os.path.abspath(os.path.join(data, "train")))
        if classes != paper_classes or abs(images - paper_images) > IMAGENET_SLACK * paper_images:
            return (f"on {data}: {classes:,} class{'' if classes == 1 else 'es'}, {images:,} training images, not "
                    f"ImageNet's {paper_classes:,} and {paper_images:,}")
    return None


def check_data(exp: Experiment, options: dict, load: bool = True) -> None:
    """What each run would stop at, one after another, said once before any starts: a recipe's augmentation
    that images held in memory cannot have (a scale augmentation on Fashion-MNIST), a name that is no dataset, data
    that is not there, a subset larger than the data. With ``load``, the data is read (and downloaded, where
    allowed) here, once, not by every run at the same time."""
    from resdsl.train.data import load_dataset
    from resdsl.train.dataerror import DataError
    from resdsl.train.vocabulary import IN_MEMORY_DATASETS, names_a_folder

    data = options.get("data") or exp.dataset
    check_augmentations(exp, options)
    known = data in IN_MEMORY_DATASETS or names_a_folder(data)
    if data == "synthetic" or (known and not load) or (data == exp.dataset and not known):
        return  # synthetic data is made by each run; ImageNet with no folder is refused but for a dry run
    # (a name that is no dataset, a folder that is not there: said at once, without reading anything)
    try:
        load_dataset(data, options.get("data_dir"), download=not options.get("no_download"),
                     train_subset=options.get("train_subset"), test_subset=options.get("test_subset"))
    except DataError as exc:
        raise ExperimentRunError(f"{exc} (found before any run started: each would stop there)") from None


def check_augmentations(exp: Experiment, options: dict) -> None:
    """Rows whose recipe augments in a way images held in memory cannot (the trainer refuses them at its start)."""
    from resdsl.train.batches import IN_MEMORY_AUGMENTATIONS
    from resdsl.train.vocabulary import IN_MEMORY_DATASETS

    from .reproduce import recipe_of

    data = options.get("data") or exp.dataset
    if data not in IN_MEMORY_DATASETS:
        return
    wrong = {}
    for row in exp.rows:
        kinds = [a.get("kind") for a in (recipe_of(exp, row) or {}).get("augment", [])]
        for kind in kinds:
            if kind not in IN_MEMORY_AUGMENTATIONS:
                wrong.setdefault(kind, []).append(row.label)
    if wrong:
        said = " and ".join(f"'{kind}' ({', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''})"
                            for kind, labels in wrong.items())
        raise ExperimentRunError(f"{data} is held in memory, where a recipe augments with "
                                 f"{' and '.join(IN_MEMORY_AUGMENTATIONS)} alone; these rows' recipes augment with "
                                 f"{said}, which an image-folder dataset has (--data FOLDER with train/ and val/)")


def check_folder_normalize(exp: Experiment, options: dict) -> None:
    """Runs on an image folder are normalised by ImageNet's channel statistics only (the trainer refuses any other
    recipe): rows whose recipe says another are refused before anything runs, with the fix an experiment has."""
    from resdsl.train.vocabulary import FOLDER_NORMALIZE, names_a_folder

    from .reproduce import recipe_of

    data = options.get("data") or exp.dataset
    if not names_a_folder(data):
        return
    wrong = []
    for row in exp.rows:
        recipe = recipe_of(exp, row)
        if recipe is not None and recipe.get("normalize", "none") != FOLDER_NORMALIZE:
            wrong.append(f"{row.label!r} (normalize {recipe.get('normalize', 'none')})")
    if wrong:
        raise ExperimentRunError(f"{data} is an image folder, which is normalised by ImageNet's channel mean and std "
                                 f"({FOLDER_NORMALIZE}), but these rows' recipes say otherwise: {', '.join(wrong)}. "
                                 f"Give them set \"normalize={FOLDER_NORMALIZE}\" in a copy of the experiment file, or "
                                 "train on the paper's dataset")
