"""The in-memory batch pipeline (BatchPipeline over InMemoryData): determinism, the pad-crop and flip augmentations,
normalisation and its statistics, and test batches. The dataset loaders are tested in test_train_data.py."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numpy")
pytest.importorskip("torchvision")

from resdsl.train.data import BatchPipeline, DataError, InMemoryData  # noqa: E402


def small(n=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return InMemoryData("t", x, torch.arange(n) % 10, x[:4].clone(), torch.arange(4), 10)


def test_in_memory_data_to_and_shape():
    d = small()
    assert d.shape == (3, 8, 8) and all(type(s) is int for s in d.shape)
    e = d.to("cpu")
    assert e is not d and torch.equal(e.train_x, d.train_x) and e.name == "t"


def test_pipeline_determinism_and_augmentation():
    p = BatchPipeline(small(), "per-pixel-mean", [{"kind": "pad-crop", "padding": 2}, {"kind": "flip"}])
    idx = torch.arange(16)
    a, ya = p.train_batch(idx, torch.Generator().manual_seed(1))
    b, _ = p.train_batch(idx, torch.Generator().manual_seed(1))
    c, _ = p.train_batch(idx, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (16, 3, 8, 8)
    assert a.dtype == torch.float32 and ya.dtype == torch.int64
    # the generator is the only source of randomness: the global RNG does not matter
    torch.manual_seed(123)
    d, _ = p.train_batch(idx, torch.Generator().manual_seed(1))
    assert torch.equal(a, d)
    # labels follow the indices
    _, y = p.train_batch(torch.tensor([3, 12, 5]), torch.Generator())
    assert y.tolist() == [3, 2, 5]


def test_pad_crop_shifts_and_flip_flips():
    data = small()
    plain = BatchPipeline(data, "none", [])
    x0, _ = plain.train_batch(torch.arange(16), torch.Generator())
    assert torch.allclose(x0, data.train_x.float() / 255)
    flip = BatchPipeline(data, "none", [{"kind": "flip"}])
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(16, generator=torch.Generator().manual_seed(3)) < 0.5
    xf, _ = flip.train_batch(torch.arange(16), g)
    assert 0 < int(mask.sum()) < 16
    assert torch.equal(xf[mask], x0[mask].flip(3)) and torch.equal(xf[~mask], x0[~mask])
    crop = BatchPipeline(data, "none", [{"kind": "pad-crop", "padding": 2}])
    xc, _ = crop.train_batch(torch.arange(16), torch.Generator().manual_seed(4))
    assert xc.shape == x0.shape
    shifted = 0
    for i in range(16):  # every crop is the image shifted by some (dy, dx) in [-2, 2], zeros outside
        padded = torch.nn.functional.pad(x0[i], (2, 2, 2, 2))
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[:, dy:dy + 8, dx:dx + 8], xc[i])]
        assert hits, i
        shifted += hits[0] != (2, 2)
    assert shifted > 8


def test_padding_is_zero_after_normalisation():
    data = small(32)
    p = BatchPipeline(data, "per-pixel-mean", [{"kind": "pad-crop", "padding": 4}])
    x, _ = p.train_batch(torch.arange(32), torch.Generator().manual_seed(0))
    norm = data.train_x.float() / 255 - p.mean
    # where the crop starts at row 0 of the padded image, its top 4 rows are the padding: exact zeros, not -mean
    oy = torch.randint(0, 9, (32,), generator=torch.Generator().manual_seed(0))  # drawn first, as the pipeline does
    top = (oy == 0).nonzero().flatten().tolist()
    assert top
    for i in top:
        assert torch.all(x[i, :, :4] == 0) and not torch.all(norm[i, :, :4] == 0)


def test_per_pixel_mean_and_stats_roundtrip():
    data = small(64)
    p = BatchPipeline(data, "per-pixel-mean", [])
    assert p.mean.shape == (3, 8, 8) and p.mean.dtype == torch.float32 and p.std is None
    x, _ = p.train_batch(torch.arange(64), torch.Generator())
    assert x.mean(0).abs().max() < 1e-5
    ref = (data.train_x.double() / 255).mean(0).float()
    assert torch.allclose(p.mean, ref, atol=1e-7)
    q = BatchPipeline(small(8), "per-pixel-mean", [])
    q.load_stats(p.stats())
    assert torch.equal(q.mean, p.mean)
    with pytest.raises(DataError, match="image-folder"):
        BatchPipeline(data, "none", [{"kind": "color"}])
    with pytest.raises(DataError, match="image-folder"):
        BatchPipeline(data, "none", [{"kind": "scale", "min": 256, "max": 480, "crop": 224}])
    with pytest.raises(DataError, match="unknown normalisation 'zca'"):
        BatchPipeline(data, "zca", [])
    # test images of another size broadcast against the mean image (1x1) or fail at the first evaluation (5x5);
    # an empty test set would read 0.00% error
    for test in (torch.zeros(4, 3, 1, 1, dtype=torch.uint8), torch.zeros(4, 3, 5, 5, dtype=torch.uint8)):
        with pytest.raises(DataError, match=r"t: the test images \(torch.uint8 3x\dx\d\) are not of the training "
                                            r"images' kind and size \(uint8 3x8x8\)"):
            BatchPipeline(InMemoryData("t", data.train_x, data.train_y, test, torch.arange(4), 10), "none", [])
    with pytest.raises(DataError, match="t: the test set is empty"):
        BatchPipeline(InMemoryData("t", data.train_x, data.train_y, data.test_x[:0], data.test_y[:0], 10), "none", [])
    # a padding as wide as the 8x8 images: some crops would be all padding (and a huge one fills the memory)
    BatchPipeline(data, "none", [{"kind": "pad-crop", "padding": 7}])
    with pytest.raises(DataError, match="pad-crop 8 is not smaller than t's 8x8 images"):
        BatchPipeline(data, "none", [{"kind": "pad-crop", "padding": 8}])


def test_imagenet_mean_std_normalisation_in_memory():
    """`normalize imagenet-mean-std` (an image folder's) also serves RGB images held in memory; grey ones are told
    to use their own statistics."""
    from resdsl.train.images import IMAGENET_MEAN, IMAGENET_STD

    data = small(16)
    x, _ = next(BatchPipeline(data, "imagenet-mean-std", []).test_batches(16))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x, (data.test_x.float() / 255 - mean) / std, atol=1e-6)
    grey = InMemoryData("grey", data.train_x[:, :1], data.train_y, data.test_x[:, :1], data.test_y, 10)
    with pytest.raises(DataError, match="for RGB images; grey has 1 channel"):
        BatchPipeline(grey, "imagenet-mean-std", [])


def test_mean_std_normalisation():
    data = small(64)
    p = BatchPipeline(data, "mean-std", [])
    x, _ = p.train_batch(torch.arange(64), torch.Generator())
    assert p.mean.shape == (3, 1, 1) and p.std.shape == (3, 1, 1)
    assert x.mean((0, 2, 3)).abs().max() < 1e-5 and (x.std((0, 2, 3)) - 1).abs().max() < 1e-4


def test_test_batches_in_order_without_augmentation():
    data = small(16)
    data.test_x, data.test_y = data.train_x[:10].clone(), torch.arange(10)
    p = BatchPipeline(data, "per-pixel-mean", [{"kind": "pad-crop", "padding": 2}, {"kind": "flip"}])
    batches = list(p.test_batches(4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(10))
    assert torch.allclose(x, data.test_x.float() / 255 - p.mean)
