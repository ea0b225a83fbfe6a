"""The recipe's words that the trainer acts on, defined once: the spec resolver validates recipes against these
and the trainer implements them. Imports nothing but os (compiling a spec never imports torch)."""
import os

IN_MEMORY_DATASETS = ("cifar10", "cifar100", "fashion-mnist", "mnist", "synthetic")
FOLDER_DATASETS = ("imagenet",)  # named in recipes, read from a folder the user gives with --data
RECIPE_DATASETS = IN_MEMORY_DATASETS + FOLDER_DATASETS
FOLDER_NORMALIZE = "imagenet-mean-std"  # the only normalisation an image folder has (images.check_normalize)


def written_as_path(name: str) -> bool:
    """Whether a --data is written as a path (a folder's, there or not), not as a dataset's name."""
    return "/" in name or os.sep in name or name.startswith((".", "~"))


def names_a_folder(name: str) -> bool:
    """Whether a dataset name (``--data``, a recipe's ``dataset``) is read as an image folder: a name the trainer
    knows in memory never is; any other is where a folder of that name is (``imagenet`` read from ./imagenet)."""
    return name not in IN_MEMORY_DATASETS and os.path.isdir(os.path.expanduser(name))
