"""How an image folder is listed (resdsl/train/folders.py): torchvision's ImageFolder order and labels, without
hidden entries, each folder read once however links lead, and every class folder holding pictures."""
import os

import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("torchvision.datasets")
from PIL import Image  # noqa: E402

from resdsl.train.data import DataError, load_dataset  # noqa: E402


def tree(root, classes=("cat", "dog"), names=("b.jpg", "a.png", "sub/c.jpg")):
    for part in ("train", "val"):
        for c in classes:
            for name in names:
                path = root / part / c / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 6), (10, 20, 30)).save(path)
    return root


def listed(root, part="train"):
    return [(os.path.relpath(p, root), label) for p, label in load_dataset(str(root))._folder(part).samples]


def test_the_order_and_labels_are_imagefolders(tmp_path):
    """Nested folders and a class folder that is a link elsewhere (data on another disk): ImageFolder's list."""
    tree(tmp_path / "elsewhere", classes=("dog",))
    root = tree(tmp_path / "data", classes=("cat", "emu"))
    for part in ("train", "val"):
        os.symlink(tmp_path / "elsewhere" / part / "dog", root / part / "dog")
    tv = datasets.ImageFolder(str(root / "train"))
    assert listed(root) == [(os.path.relpath(p, root), label) for p, label in tv.samples]
    assert [label for _, label in listed(root)] == [0] * 3 + [1] * 3 + [2] * 3


def test_hidden_files_and_folders_are_not_pictures(tmp_path):
    """macOS's ._x.JPEG beside x.JPEG (not a picture: the run would stop there, hours in) and a hidden folder in a
    class folder are left out, as hidden class folders are."""
    root = tree(tmp_path)
    (root / "train" / "cat" / "._b.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    Image.new("RGB", (8, 6)).save(root / "train" / "dog" / ".thumb.png")
    (root / "train" / "dog" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 6)).save(root / "train" / "dog" / ".ipynb_checkpoints" / "a.png")
    assert listed(root) == [("train/cat/a.png", 0), ("train/cat/b.jpg", 0), ("train/cat/sub/c.jpg", 0),
                            ("train/dog/a.png", 1), ("train/dog/b.jpg", 1), ("train/dog/sub/c.jpg", 1)]


@pytest.mark.parametrize("target, where", [("..", "val/dog/up"), (".", "train/cat/sub/loop"),
                                           ("../../cat", "train/dog/sub/cats")])
def test_a_folder_reached_twice_through_a_link_is_refused(tmp_path, target, where):
    """A link back up the tree (ImageFolder reads it without end, or until the path is too long: 41 copies of each
    picture) or into another class (its pictures under a second label) is named, not read."""
    root = tree(tmp_path)
    os.symlink(target, root / where)
    with pytest.raises(DataError, match=rf"{where}(/\w+)? is the folder .* again \(through a symbolic link\).*remove"):
        load_dataset(str(root))


def test_an_empty_class_folder_is_named(tmp_path):
    root = tree(tmp_path)
    (root / "train" / "emu").mkdir()
    (root / "val" / "emu").mkdir()
    (root / "train" / "emu" / "notes.txt").write_text("to do")
    with pytest.raises(DataError, match=r"the class folder train/emu holds no pictures \(\.jpg, .*every class"):
        load_dataset(str(root))


def test_the_link_is_named_not_the_real_folder(tmp_path):
    """A class folder linked to another class's: the message names the link, sorted first or not."""
    root = tree(tmp_path, classes=("emu",))
    os.symlink(root / "train" / "emu", root / "train" / "aaa")
    os.symlink(root / "val" / "emu", root / "val" / "aaa")
    with pytest.raises(DataError, match=r"remove the link \S*/train/aaa$"):
        load_dataset(str(root))


def test_a_link_above_the_dataset_is_not_blamed(tmp_path):
    """The dataset reached through a link of its own (a data disk): the loop's link inside it is named."""
    real = tree(tmp_path / "disk")
    os.symlink(real, tmp_path / "data")
    os.symlink(".", real / "train" / "cat" / "loop")
    with pytest.raises(DataError, match=r"remove the link \S*/data/train/cat/loop$"):
        load_dataset(str(tmp_path / "data"))
