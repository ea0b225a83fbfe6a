"""CIFAR-10 and CIFAR-100 in torchvision's on-disk form (resdsl/train/cifar.py): the images, labels and order of
the pickled batches; a file that is not the published one (damaged, cut, replaced, hostile) named, and never able to
run code; downloads that fail offline."""
from __future__ import annotations

import os
import pickle

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
pytest.importorskip("torchvision")

from resdsl.train.data import DataError, load_dataset  # noqa: E402


def make_cifar(root, n=10, hundred=False, protocol=2):
    """A tiny CIFAR-10 (or -100) in torchvision's on-disk format: cifar-10-batches-py/ with pickled batches
    (cifar-100-python/ with train, test, meta)."""
    rng = np.random.default_rng(1)
    if hundred:
        folder = root / "cifar-100-python"
        files = {"train": 5 * n, "test": n}
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
        key, k = "fine_labels", 100
    else:
        folder = root / "cifar-10-batches-py"
        files = {**{f"data_batch_{i}": n for i in range(1, 6)}, "test_batch": n}
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
        key, k = "labels", 10
    folder.mkdir(parents=True)
    for name, count in files.items():
        batch = {"data": rng.integers(0, 255, (count, 3 * 32 * 32), dtype=np.uint8),
                 key: rng.integers(0, k, count).tolist(), "batch_label": name}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)  # 2: the published files' (Python 2's cPickle)
    with open(folder / meta[0], "wb") as fh:
        pickle.dump(meta[1], fh)
    return folder


@pytest.fixture
def no_md5(monkeypatch):
    """resdsl checks each CIFAR file's md5 against torchvision's list (resdsl.train.cifar.matches). Our small
    stand-ins cannot match those sums, so that one check is bypassed; the file names and the pickle layout are
    torchvision's."""
    from resdsl.train import cifar

    monkeypatch.setattr(cifar, "matches", lambda data, md5: True)


def test_cifar_from_torchvision_format(tmp_path, no_md5):
    folder = make_cifar(tmp_path)
    d = load_dataset("cifar10", str(tmp_path), download=False)
    assert d.train_x.shape == (50, 3, 32, 32) and d.test_x.shape == (10, 3, 32, 32) and d.num_classes == 10
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64 and d.train_x.is_contiguous()
    with open(folder / "data_batch_1", "rb") as fh:
        batch = pickle.load(fh)
    assert torch.equal(d.train_x[0], torch.from_numpy(batch["data"][0].reshape(3, 32, 32)))  # CHW, not HWC
    assert d.train_y[:10].tolist() == batch["labels"]
    # --data-dir may also name the batches folder itself
    assert torch.equal(load_dataset("cifar10", str(folder), download=False).test_x, d.test_x)


def test_cifar100_from_torchvision_format(tmp_path, no_md5):
    make_cifar(tmp_path, n=4, hundred=True)
    d = load_dataset("cifar100", str(tmp_path), download=False)
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32) and d.num_classes == 100


def test_cifar_offline_names_data_dir(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar as cifar_mod

    calls = []

    def offline(*a, **k):  # instead of the network: fail at once, as an offline machine would
        calls.append(a)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(cifar_mod, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", str(tmp_path / "empty"), download=True)
    msg = str(info.value)
    assert calls and "could not be downloaded" in msg and "--data-dir" in msg and "cifar-10-batches-py" in msg
    with pytest.raises(DataError, match="cifar-100-python") as info:
        load_dataset("cifar100", str(tmp_path / "empty"), download=True)
    with pytest.raises(DataError, match="downloads are off") as info:  # never tries the network
        load_dataset("cifar10", str(tmp_path / "empty"), download=False)
    assert len(calls) == 2 and "--data-dir" in str(info.value)
    assert not (tmp_path / "empty").exists()  # the folders made for the failed downloads are gone


def test_corrupt_cifar(tmp_path):
    make_cifar(tmp_path)  # the md5 check is real here: the stand-ins fail it
    with pytest.raises(DataError, match="incomplete or corrupt") as info:
        load_dataset("cifar10", str(tmp_path), download=False)
    assert "--data-dir" in str(info.value)


class Hostile:
    """A pickle that, unpickled by pickle.load, runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_the_batches_read_as_pickle_reads_them(tmp_path, no_md5, protocol):
    """Both spellings of numpy's array pickles (the published files are Python 2's protocol 2)."""
    folder = make_cifar(tmp_path, protocol=protocol)
    d = load_dataset("cifar10", str(tmp_path), download=False)
    want = [pickle.load(open(folder / f"data_batch_{i}", "rb")) for i in range(1, 6)]
    assert torch.equal(d.train_x, torch.from_numpy(np.concatenate([b["data"] for b in want]).reshape(-1, 3, 32, 32)))
    assert d.train_y.tolist() == sum((b["labels"] for b in want), [])


def test_a_hostile_batch_runs_nothing_even_past_the_md5_check(tmp_path, no_md5):
    folder = make_cifar(tmp_path)
    marker = tmp_path / "PWNED"
    with open(folder / "data_batch_2", "wb") as fh:
        pickle.dump({"data": Hostile(marker), "labels": []}, fh)
    with pytest.raises(DataError, match=r"data_batch_2: not a CIFAR batch \(UnpicklingError: it asks to build "
                                        r"(posix|os)\.system"):
        load_dataset("cifar10", str(tmp_path), download=False)
    assert not marker.exists()


def test_the_file_that_is_not_the_published_one_is_named(tmp_path, monkeypatch):
    folder = make_cifar(tmp_path)
    with pytest.raises(DataError, match=r"data_batch_1: not the file the dataset's authors published \(its md5"):
        load_dataset("cifar10", str(tmp_path), download=False)
    from resdsl.train import cifar

    monkeypatch.setattr(cifar, "matches", lambda data, md5: True)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"incomplete or corrupt: .*data_batch_3: cannot be read \(No such file"):
        load_dataset("cifar10", str(tmp_path), download=False)
    batch = make_cifar(tmp_path / "labels") / "test_batch"
    with open(batch, "wb") as fh:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [3, 10]}, fh)
    with pytest.raises(DataError, match=r"test_batch: not a CIFAR batch \(uint8 images and one label in 0\.\.9"):
        load_dataset("cifar10", str(tmp_path / "labels"), download=False)


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def test_numpy_is_never_handed_a_pickles_own_types_or_buffers(tmp_path, no_md5):
    """numpy.ndarray called on the file's bytes as an array of objects (pointers read from the file) crashed Python
    under an allow-list of numpy's own functions; here numpy only ever gets checked number types and copies."""
    folder = make_cifar(tmp_path)
    objects = (_global("numpy", "ndarray") + b"(K\x01\x85" + _global("numpy", "dtype")
               + b"(X\x01\x00\x00\x00OK\x00K\x01tRC\x08AAAAAAAAtR")
    (folder / "data_batch_1").write_bytes(b"\x80\x02(X\x04\x00\x00\x00data" + objects + b"X\x06\x00\x00\x00labels"
                                          b"]u.")
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR batch"):
        load_dataset("cifar10", str(tmp_path), download=False)


def test_a_damaged_folder_is_fetched_again_when_downloads_are_on(tmp_path, no_md5, monkeypatch):
    """As torchvision's own loader did: a bad or missing batch file, downloads on, has torchvision check the
    files and fetch and unpack the archive again; with downloads off the folder is named as it is."""
    import shutil

    import torchvision.datasets.cifar as cifar_mod

    folder = make_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: cannot be read"):
        load_dataset("cifar10", str(tmp_path), download=False)
    fetched = []

    def fetch(url, download_root, **kw):  # the archive, unpacked: a whole folder again
        fetched.append(url)
        shutil.rmtree(folder)
        make_cifar(tmp_path)

    monkeypatch.setattr(cifar_mod, "download_and_extract_archive", fetch)
    monkeypatch.setattr(cifar_mod, "check_integrity", lambda *a, **k: bool(fetched))  # bad until fetched
    assert load_dataset("cifar10", str(tmp_path), download=True).train_x.shape[0] == 50 and len(fetched) == 1
