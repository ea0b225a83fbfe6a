"""Dataset loaders on small files in the real on-disk formats (IDX, CIFAR, ImageNet-layout folders), synthetic data,
splits, subsets and epoch order. The in-memory batch pipeline is tested in test_train_pipeline.py."""
from __future__ import annotations

import gzip
import os
import pickle
import struct

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
pytest.importorskip("torchvision")

from resdsl.train.data import (DEBIAN_FASHION_MNIST, DataError, FolderData, InMemoryData,  # noqa: E402
                               epoch_permutation, load_dataset, read_idx)
from resdsl.train.vocabulary import IN_MEMORY_DATASETS  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)


def write_idx(path, array: np.ndarray, compress=True):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as fh:
        fh.write(data)


def make_mnist(folder, n_train=20, n_test=8, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if compress else ""
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 255, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,)),
              "t10k-images-idx3-ubyte": rng.integers(0, 255, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,))}
    for name, a in arrays.items():
        write_idx(folder / f"{name}{ext}", a, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files(tmp_path, compress):
    arrays = make_mnist(tmp_path, compress=compress)
    d = load_dataset("mnist", str(tmp_path), download=False)
    assert isinstance(d, InMemoryData) and d.name == "mnist"
    assert d.train_x.shape == (20, 1, 28, 28) and d.test_x.shape == (8, 1, 28, 28) and d.test_y.shape == (8,)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.num_classes == 10 and d.shape == (1, 28, 28)
    # the values, byte for byte, in the right order (big-endian dims, row-major data)
    assert torch.equal(d.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert d.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_read_idx_dims_and_shapes(tmp_path):
    a = np.arange(2 * 3 * 300, dtype=np.int64).reshape(2, 3, 300) % 256  # a dim > 255 checks 32-bit big-endian
    write_idx(tmp_path / "a.idx", a, compress=False)
    t = read_idx(str(tmp_path / "a.idx"))
    assert t.shape == (2, 3, 300) and t.dtype == torch.uint8 and torch.equal(t, torch.from_numpy(a.astype(np.uint8)))
    write_idx(tmp_path / "empty.idx.gz", np.zeros((0, 28, 28)))
    assert read_idx(str(tmp_path / "empty.idx.gz")).shape == (0, 28, 28)


def test_torchvision_layout_is_found(tmp_path):
    """data_dir/MNIST/raw (torchvision's layout) and data_dir/FashionMNIST/raw are looked in, too."""
    make_mnist(tmp_path / "MNIST" / "raw", n_train=5, n_test=3)
    make_mnist(tmp_path / "FashionMNIST" / "raw", n_train=7, n_test=2, compress=False)
    assert load_dataset("mnist", str(tmp_path), download=False).train_x.shape[0] == 5
    f = load_dataset("fashion-mnist", str(tmp_path), download=False)
    assert f.name == "fashion-mnist" and f.train_x.shape[0] == 7  # the data_dir copy wins over Debian's


def test_truncated_idx_is_a_clear_error(tmp_path):
    make_mnist(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("mnist", str(tmp_path), download=False)
    p.write_bytes(gzip.compress(raw + b"xx"))
    with pytest.raises(DataError, match="2 bytes too many"):
        read_idx(str(p))
    p.write_bytes(gzip.compress(raw)[:-30])  # a cut-off gzip stream
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        read_idx(str(p))
    assert "--data-dir" in str(info.value)
    p.write_bytes(b"\x1f\x8b" + b"\x00" * 40)  # a gzip header and garbage
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(str(p))
    p.write_bytes(b"not an idx file at all")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(str(p))
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")  # ends inside the dimensions
    with pytest.raises(DataError, match="header"):
        read_idx(str(p))
    p.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01" + b"\x00" * 4)  # an IDX file of floats
    with pytest.raises(DataError, match="float"):
        read_idx(str(p))


def test_mismatched_idx_files(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7))  # 8 images, 7 labels
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", str(tmp_path), download=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(8, 12))
    with pytest.raises(DataError, match="label 12"):
        load_dataset("mnist", str(tmp_path), download=False)


def test_mnist_missing_offline(tmp_path):
    with pytest.raises(DataError, match="--data-dir") as info:
        load_dataset("mnist", str(tmp_path), download=False)
    msg = str(info.value)
    assert str(tmp_path) in msg and os.path.join(str(tmp_path), "MNIST", "raw") in msg  # the places looked at
    assert "\n" not in msg


def test_mnist_download_failure(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.mnist as mnist_mod

    def offline(*a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(mnist_mod, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="could not be downloaded") as info:
        load_dataset("mnist", str(tmp_path / "typo" / "data"), download=True)
    assert "--data-dir" in str(info.value) and "\n" not in str(info.value)
    assert f"--data-dir {tmp_path / 'typo' / 'data'} does not exist: is it mistyped?" in str(info.value)
    assert os.listdir(tmp_path) == []  # not typo/data/MNIST/raw/, empty, made on the way to a failed download


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
def test_a_data_dir_that_does_not_exist_is_named(tmp_path, name):
    """A mistyped --data-dir was reported as one more place the data is not in."""
    with pytest.raises(DataError, match="does not exist: is it mistyped") as info:
        load_dataset(name, str(tmp_path / "fashion_mnist"), download=False)
    assert f"--data-dir {tmp_path / 'fashion_mnist'} does not exist" in str(info.value)
    with pytest.raises(DataError) as info:
        load_dataset(name, str(tmp_path), download=False)  # there, but without the data: no such words
    assert "does not exist: is it" not in str(info.value)
    (tmp_path / "afile").write_text("")
    with pytest.raises(DataError, match=f"--data-dir {tmp_path / 'afile'} is a file, not a folder"):
        load_dataset(name, str(tmp_path / "afile"), download=False)


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST), reason="Debian's dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    d = load_dataset("fashion-mnist", None, download=False)
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_y.shape == (60000,) and d.test_y.shape == (10000,)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64 and d.num_classes == 10
    assert int(d.train_y.min()) == 0 and int(d.train_y.max()) == 9
    assert torch.bincount(d.train_y).tolist() == [6000] * 10
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    assert int(d.train_x.max()) == 255 and int(d.train_x.min()) == 0
    raw = read_idx(os.path.join(DEBIAN_FASHION_MNIST, "t10k-labels-idx1-ubyte.gz"))
    assert raw.shape == (10000,) and torch.equal(raw.long(), d.test_y)


# ---------------------------------------------------------------------------------------------------
# ImageNet-layout folders


def make_folder(root, classes=("cat", "dog"), per_class=3, size=(40, 30), parts=("train", "val")):
    from PIL import Image

    rng = np.random.default_rng(2)
    for part in parts:
        for c in classes:
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
                img.save(root / part / c / f"{i}.{'jpg' if i % 2 else 'png'}")


def test_imagenet_layout_folder(tmp_path):
    make_folder(tmp_path)
    d = load_dataset(str(tmp_path))
    assert isinstance(d, FolderData) and d.classes == ["cat", "dog"] and d.num_classes == 2
    assert d.train_size == 6 and d.test_size == 6 and d.shape == (3, 224, 224) and d.name == tmp_path.name
    train = d.train_dataset([{"kind": "scale", "min": 32, "max": 48, "crop": 24}, {"kind": "flip"},
                             {"kind": "color"}], crop=24)
    assert len(train) == 6
    x, y = train[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and y == 0 and train[5][1] == 1
    x, _ = d.train_dataset([{"kind": "random-resized-crop", "size": 20}], crop=20)[3]
    assert x.shape == (3, 20, 20)
    x, _ = d.train_dataset([], crop=16)[1]  # no cropping step: resize and center crop
    assert x.shape == (3, 16, 16)
    ten = d.test_dataset(crop=24, resize=28, ten_crop=True)
    views, label = ten[4]
    assert views.shape == (10, 3, 24, 24) and label == 1
    single = d.test_dataset(crop=24, resize=28)
    assert single[5][0].shape == (3, 24, 24) and len(single) == 6
    assert torch.allclose(views[4], single[4][0])  # TenCrop's fifth view is the center crop
    # ... and its tenth is that, mirrored (exactly so when the margins are even: 40x30 images, 24x24 crops)
    views = d.test_dataset(crop=24, resize=30, ten_crop=True)[2][0]
    assert torch.allclose(views[9], d.test_dataset(crop=24, resize=30)[2][0].flip(2))
    with pytest.raises(DataError, match="unknown augmentation 'jitter'"):
        d.train_dataset([{"kind": "jitter"}], crop=24)


def test_folder_datasets_pickle_for_workers(tmp_path):
    """DataLoader workers started with spawn pickle the dataset: no lambdas in the transforms."""
    make_folder(tmp_path, per_class=1)
    d = load_dataset(str(tmp_path))
    for ds in (d.test_dataset(crop=16, resize=20, ten_crop=True),
               d.train_dataset([{"kind": "scale", "min": 20, "max": 24, "crop": 16}, {"kind": "color"}], 16)):
        assert pickle.loads(pickle.dumps(ds))[0][0].shape[-2:] == (16, 16)


def test_folder_subsets_and_split(tmp_path):
    make_folder(tmp_path)
    d = load_dataset(str(tmp_path), train_subset=4, test_subset=2)
    assert d.train_size == 4 and d.test_size == 2
    train = d.train_dataset([{"kind": "flip"}], crop=16)
    everything = load_dataset(str(tmp_path)).train_dataset([], crop=16).samples
    # a folder lists its images class by class: the subset is drawn over the classes, the same for every run
    assert len(everything) == 6 and len(train.samples) == 4 and set(train.samples) <= set(everything)
    assert train.samples == load_dataset(str(tmp_path), train_subset=4, seed=9).train_dataset([], 16).samples
    assert {label for _, label in train.samples} == {0, 1} and len(d.test_dataset(crop=16, resize=20)) == 2
    assert {label for _, label in d.test_dataset(crop=16, resize=20).samples} == {0, 1}  # not the first class alone
    with pytest.raises(DataError, match="larger than"):
        load_dataset(str(tmp_path), test_subset=7)
    s = load_dataset(str(tmp_path), split=(4, 2), seed=3)
    assert s.train_size == 4 and s.test_size == 2
    tr, te = s.train_dataset([], crop=16), s.test_dataset(crop=16, resize=16)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(3)).tolist()
    assert tr.samples == [everything[i] for i in order[:4]]
    assert te.samples == [everything[i] for i in order[4:]]  # held out of train/, val/ untouched
    with pytest.raises(DataError, match="needs 8"):
        load_dataset(str(tmp_path), split=(4, 4))


def test_bad_folders(tmp_path):
    with pytest.raises(DataError, match="no such folder") as info:
        load_dataset(str(tmp_path / "missing") + "/")
    assert "--data" in str(info.value)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no val/ folder"):
        load_dataset(str(tmp_path))
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="holds no images") as info:  # empty train/
        load_dataset(str(tmp_path))
    assert "lie loose" not in str(info.value)
    make_folder(tmp_path / "flat", parts=("train",))
    for i in range(3):  # ImageNet's validation archive: the images without class folders
        (tmp_path / "flat" / "val").mkdir(exist_ok=True)
        (tmp_path / "flat" / "val" / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match="its 3 images lie loose in it.*torchvision.datasets.ImageNet"):
        load_dataset(str(tmp_path / "flat"))
    with pytest.raises(DataError, match="unknown dataset 'imagenette'") as info:
        load_dataset("imagenette")
    assert all(n in str(info.value) for n in IN_MEMORY_DATASETS) and "--data" in str(info.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(str(tmp_path / "file.txt"))


def test_folder_class_mismatch(tmp_path):
    make_folder(tmp_path, per_class=1, parts=("train",))
    make_folder(tmp_path, classes=("cat", "cow"), per_class=1, parts=("val",))
    with pytest.raises(DataError, match="different class folders") as info:
        load_dataset(str(tmp_path))
    assert "dog" in str(info.value) and "cow" in str(info.value)


# ---------------------------------------------------------------------------------------------------
# synthetic data, splits, subsets, epoch order


def test_synthetic_is_deterministic_and_learnable():
    a = load_dataset("synthetic", synthetic_shape=(3, 8, 8), synthetic_classes=4, synthetic_size=(400, 100))
    b = load_dataset("synthetic", synthetic_shape=(3, 8, 8), synthetic_classes=4, synthetic_size=(400, 100))
    c = load_dataset("synthetic", synthetic_shape=(3, 8, 8), synthetic_classes=4, synthetic_size=(400, 100),
                     seed=1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.train_x.shape == (400, 3, 8, 8) and a.test_x.shape == (100, 3, 8, 8) and a.shape == (3, 8, 8)
    assert a.train_x.dtype == torch.uint8 and a.train_y.dtype == torch.int64 and a.num_classes == 4
    assert set(a.train_y.tolist()) == {0, 1, 2, 3}
    # learnable: the nearest class mean of the training set classifies the test set
    means = torch.stack([a.train_x[a.train_y == k].float().mean(0) for k in range(4)]).flatten(1)
    pred = torch.cdist(a.test_x.float().flatten(1), means).argmin(1)
    assert (pred == a.test_y).float().mean() > 0.9


def test_split_subsets_and_permutation():
    full = load_dataset("synthetic")
    d = load_dataset("synthetic", split=(700, 200))
    order = torch.randperm(1024, generator=torch.Generator().manual_seed(0))
    assert torch.equal(d.train_x, full.train_x[order[:700]]) and torch.equal(d.test_x, full.train_x[order[-200:]])
    assert torch.equal(d.test_y, full.train_y[order[-200:]])
    d = load_dataset("synthetic", split=(700, 200), train_subset=100, test_subset=50)
    assert d.train_x.shape[0] == 100 and d.test_x.shape[0] == 50
    assert torch.equal(d.train_x, full.train_x[order[:100]]) and torch.equal(d.test_x, full.train_x[order[-200:-150]])
    assert torch.equal(load_dataset("synthetic", test_subset=10).test_x, full.test_x[:10])
    with pytest.raises(DataError, match="needs 2000"):
        load_dataset("synthetic", split=(1000, 1000))
    with pytest.raises(DataError, match="larger than"):
        load_dataset("synthetic", train_subset=5000)
    with pytest.raises(DataError, match="--test-subset"):
        load_dataset("synthetic", test_subset=0)
    assert torch.equal(epoch_permutation(100, 1, 2), epoch_permutation(100, 1, 2))
    assert not torch.equal(epoch_permutation(100, 1, 2), epoch_permutation(100, 1, 3))
    assert not torch.equal(epoch_permutation(100, 1, 2), epoch_permutation(100, 2, 2))
    assert sorted(epoch_permutation(100, 1, 2).tolist()) == list(range(100))
    assert epoch_permutation(100, 1, 2).dtype == torch.int64


def test_the_recipe_words_are_the_ones_the_trainer_takes():
    """The compiler never imports the trainer (torch), so the normalisation and augmentation words are listed in
    grammar.lark and in the trainer both: every word a recipe may say is one the trainer handles, and none else."""
    import re

    from resdsl.train.data import FOLDER_AUGMENTATIONS, IN_MEMORY_AUGMENTATIONS, NORMALIZATIONS
    from conftest import ROOT

    grammar = (ROOT / "resdsl" / "grammar.lark").read_text()
    normalize = re.search(r"^NORMALIZE: (.*)$", grammar, re.M).group(1)
    assert set(re.findall(r'"([^"]+)"', normalize)) == set(NORMALIZATIONS)
    rules = re.search(r"^augmentation: (.*)$", grammar, re.M).group(1).split(" | ")
    words = {re.search(rf'^{rule}: "([^"]+)"', grammar, re.M).group(1) for rule in rules}
    assert words == set(IN_MEMORY_AUGMENTATIONS) | set(FOLDER_AUGMENTATIONS)
