"""Image-folder pictures (resdsl/train/images.py): the augmentations against torchvision's own transforms and
formulas, the worker path against the on-device path (decode_jpeg in batches), and files that cannot be decoded."""
import io
import math
import warnings

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

from reference import torchvision_cut  # noqa: E402
from resdsl.train import cuts, decoding, images  # noqa: E402
from resdsl.train.data import DataError, load_dataset  # noqa: E402
from resdsl.train.images import (IMAGENET_EIGVAL, IMAGENET_EIGVEC, IMAGENET_MEAN, IMAGENET_STD, Plan,  # noqa: E402
                                 EvalView, draw, make_batch, plan_from, train_box)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29 points at TorchCodec

CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))]


def encode(array: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> torch.Tensor:
    buf = io.BytesIO()
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(buf, format=fmt, quality=90)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def picture(h=30, w=40, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.integers(-8, 9, (h, w, 3)), axis=1)  # JPEG-friendly: not white noise
    return np.clip(smooth + 128, 0, 255).astype(np.uint8)


def normalised(x: torch.Tensor) -> torch.Tensor:
    return TF.normalize(x.float() / 255, IMAGENET_MEAN, IMAGENET_STD)


def test_test_views_are_torchvisions_resize_center_crop_and_ten_crop():
    data = encode(picture(), "PNG")
    img = decoding.decode([data], ["p.png"], "cpu")[0]
    assert img.shape == (3, 30, 40) and img.dtype == torch.uint8
    single = make_batch([data], ["p.png"], [0], EvalView(crop=24, resize=28), "cpu")
    reference = normalised(TF.center_crop(TF.resize(img, [28], antialias=True), [24]))
    assert torch.equal(single[0], reference)
    ten = make_batch([data, data], ["p.png"] * 2, [0, 0], EvalView(crop=24, resize=28, ten_crop=True), "cpu")
    views = TF.ten_crop(TF.resize(img, [28], antialias=True), [24])
    assert ten.shape == (2, 10, 3, 24, 24)
    for k, view in enumerate(views):
        assert torch.allclose(ten[1, k], normalised(view), atol=1e-6), k


def test_scale_augmentation_covers_its_range_and_crops_inside():
    plan = plan_from([{"kind": "scale", "min": 32, "max": 40, "crop": 24}, {"kind": "flip"}], crop=99)
    assert plan == Plan(crop=24, kind="scale", low=32, high=40, flip=True)
    sides, flips = set(), 0
    for seed in range(400):
        d = draw(seed)
        box = train_box(plan, d, 30, 40)
        rh, rw = images.resized(30, 40, box.shorter)
        assert min(rh, rw) == box.shorter and 0 <= box.top <= rh - 24 and 0 <= box.left <= rw - 24
        sides.add(box.shorter)
        flips += d.u[3] < 0.5
    assert sides == set(range(32, 41))  # every shorter side of [min, max], both ends included
    assert 150 < flips < 250
    with pytest.raises(DataError, match="smaller than the crop"):
        plan_from([{"kind": "scale", "min": 20, "max": 40, "crop": 24}], crop=24)


def test_a_picture_too_small_for_pad_crop_is_named():
    plan = plan_from([{"kind": "pad-crop", "padding": 2}], crop=24)
    data = encode(picture(10, 12))
    with pytest.raises(DataError, match=r"x/small.png: pad-crop: a 12x10 image padded by 2 is smaller than the 24x24"):
        make_batch([data], ["x/small.png"], [0], plan, "cpu")


def test_random_resized_crop_keeps_torchvisions_ranges():
    plan = plan_from([{"kind": "random-resized-crop", "size": 20}], crop=24)
    for seed in range(200):
        box = train_box(plan, draw(seed), 30, 40)
        assert box.out == 20 and box.top + box.height <= 30 and box.left + box.width <= 40
        area = box.height * box.width / (30 * 40)
        assert 0.06 <= area <= 1.0 and 3 / 4 - 0.15 <= box.width / box.height <= 4 / 3 + 0.15


def test_colour_jitter_and_lighting_are_torchvisions_and_alexnets():
    """The batched jitter, per image in its own drawn order, against torchvision's adjust_* functions; the lighting
    against AlexNet's formula eigvec @ (alpha * eigval)."""
    plan = Plan(crop=16, jitter=True, lighting=True)
    crops = torch.stack([torch.from_numpy(picture(16, 16, s)).permute(2, 0, 1) for s in range(6)])
    draws = [draw(100 + s) for s in range(6)]
    out = images.finish(crops, plan, draws)
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    assert {d.order for d in draws} != {draws[0].order}  # the orders differ between images
    for k, d in enumerate(draws):
        x = crops[k].float() / 255
        for op in d.order:
            x = adjust[op](x, 1 - 0.4 + 0.8 * d.u[4 + op])
        alpha = torch.tensor(d.alpha, dtype=torch.float32) * 0.1
        rgb = (torch.tensor(IMAGENET_EIGVEC) * (alpha * torch.tensor(IMAGENET_EIGVAL))).sum(1)
        expected = TF.normalize(x + rgb.view(3, 1, 1), IMAGENET_MEAN, IMAGENET_STD)
        assert torch.allclose(out[k], expected, atol=1e-5), k


def test_lighting_is_alexnets_noise_alone_and_color_adds_the_jitter():
    """`lighting` is [R] 3.4's "standard color augmentation in [21]" (AlexNet's PCA noise, no jitter); `color` is
    fb.resnet.torch's jitter and then that noise."""
    assert plan_from([{"kind": "lighting"}], 16) == Plan(crop=16, lighting=True)
    assert plan_from([{"kind": "color"}], 16) == Plan(crop=16, jitter=True, lighting=True)
    crops = torch.stack([torch.from_numpy(picture(16, 16, s)).permute(2, 0, 1) for s in range(4)])
    draws = [draw(200 + s) for s in range(4)]
    out = images.finish(crops, Plan(crop=16, lighting=True), draws)
    for k, d in enumerate(draws):
        alpha = torch.tensor(d.alpha, dtype=torch.float32) * 0.1
        rgb = torch.tensor(IMAGENET_EIGVEC) @ (alpha * torch.tensor(IMAGENET_EIGVAL))
        expected = TF.normalize(crops[k].float() / 255 + rgb.view(3, 1, 1), IMAGENET_MEAN, IMAGENET_STD)
        assert torch.allclose(out[k], expected, atol=1e-6), k


def test_a_folder_run_refuses_a_normalisation_it_does_not_make(tmp_path):
    """An image folder is normalised by ImageNet's channel statistics only: a recipe asking for the training set's
    own (or none) is refused before the folder is read, not quietly given those."""
    from resdsl.train.images import check_normalize
    from resdsl.train.session import RunOptions, prepare

    check_normalize("imagenet-mean-std")
    make_jpeg_folder(tmp_path)
    import resdsl
    from conftest import ROOT

    spec = resdsl.compile_spec(str(ROOT / "tests" / "specs" / "tiny_folder.res"))
    recipe = dict(spec.recipe, dataset=str(tmp_path), batch=2)
    for normalize in ("per-pixel-mean", "mean-std", "none"):
        with pytest.raises(DataError, match=f"'normalize {normalize}'.*write 'normalize imagenet-mean-std'"):
            prepare(lambda shape, k: torch.nn.Linear(1, k), dict(recipe, normalize=normalize),
                    RunOptions(device="cpu"))
        # a run an older resdsl started recorded what folders ignored (they always had ImageNet's statistics): it
        # resumes as it trained
        resumed = prepare(lambda shape, k: torch.nn.Linear(1, k), dict(recipe, normalize=normalize),
                          RunOptions(device="cpu", resume=str(tmp_path), seed=0))
        assert resumed.n_train == 8


def test_a_batch_goes_to_the_device_in_one_copy(monkeypatch):
    """finish() sends a batch's per-image numbers and the channel statistics in one host-to-device copy (each copy
    costs the thread that makes GPU batches; a pageable one also waits for the stream), for training and test."""
    copies = []
    real = images.to_device
    monkeypatch.setattr(images, "to_device", lambda t, device: copies.append(t.shape) or real(t, device))
    crops = torch.stack([torch.from_numpy(picture(16, 16, s)).permute(2, 0, 1) for s in range(5)])
    train = images.finish(crops, Plan(crop=16, flip=True, jitter=True, lighting=True), [draw(s) for s in range(5)])
    test = images.finish(crops, None, None)
    assert copies == [(5 * 16 + 6,), (6,)]
    assert train.shape == test.shape == (5, 3, 16, 16) and not torch.equal(train, test)
    assert torch.equal(test, normalised(crops))


def test_unknown_or_incomplete_augmentations_are_named():
    with pytest.raises(DataError, match="unknown augmentation 'jitter'"):
        plan_from([{"kind": "jitter"}], crop=24)
    with pytest.raises(DataError, match="lacks its 'padding'"):
        plan_from([{"kind": "pad-crop"}], crop=24)


def make_jpeg_folder(root, per_class=4):
    for part in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            (root / part / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(picture(30 + 4 * i, 40, seed=10 * c + i)).save(root / part / name / f"{i}.jpg")


AUGMENT = [{"kind": "scale", "min": 24, "max": 32, "crop": 20}, {"kind": "flip"}, {"kind": "color"}]


def test_workers_and_the_device_path_make_the_same_batches(tmp_path):
    """The same pictures, decoded and cut one by one in a worker or as a batch where the model is (here the CPU;
    on a GPU, nvJPEG), from the same sample seeds: the same tensors, to float rounding."""
    make_jpeg_folder(tmp_path)
    d = load_dataset(str(tmp_path))
    items = [(i, 1000 + i) for i in range(8)]
    one_by_one = d.train_dataset(AUGMENT, crop=20)
    encoded = d.train_dataset(AUGMENT, crop=20, encoded=True)
    x = torch.stack([one_by_one[item][0] for item in items])
    datas, _, seeds, paths, draws = zip(*(encoded[item] for item in items))
    assert list(draws) == [draw(seed) for seed in seeds]  # made in the worker: the seed's own
    # the same arithmetic, one picture or a batch at a time: vectorised kernels may round the last bit differently
    batch = make_batch(list(datas), list(paths), list(seeds), encoded.view, "cpu")
    assert torch.allclose(batch, x, atol=1e-5)
    assert torch.equal(make_batch(list(datas), list(paths), list(seeds), encoded.view, "cpu", list(draws)), batch)
    assert torch.equal(one_by_one[items[3]][0], x[3]) and not torch.equal(one_by_one[(3, 7)][0], x[3])


@pytest.mark.parametrize("device", CUDA)
def test_gpu_decoding_matches_the_cpu(tmp_path, device):
    make_jpeg_folder(tmp_path)
    encoded = load_dataset(str(tmp_path)).train_dataset(AUGMENT, crop=20, encoded=True)
    datas, _, seeds, paths, _ = zip(*(encoded[(i, i)] for i in range(8)))
    on_cpu = make_batch(list(datas), list(paths), list(seeds), encoded.view, "cpu")
    on_gpu = make_batch(list(datas), list(paths), list(seeds), encoded.view, device)
    assert on_gpu.device.type == "cuda" and (on_gpu.cpu() - on_cpu).abs().mean() < 0.05  # nvJPEG's IDCT differs


def queued_sums_while_decoding(decode, device, rounds=20):
    """Free blocks whose sums are still queued behind ~30 ms of GPU work, decode pictures of the same size, and
    return the rounds whose sums came out wrong (the decoder was handed a block before the sums read it)."""
    data, n, wrong = encode(picture(375, 500)), 3 * 375 * 500, []
    for r in range(rounds):
        blocks = [torch.full((n,), k, dtype=torch.uint8, device=device) for k in range(1, 9)]
        torch.cuda._sleep(50_000_000)
        sums = [b.sum() for b in blocks]
        del blocks
        decode([data] * 8, ["x.jpg"] * 8, device)
        if [int(s) for s in sums] != [k * n for k in range(1, 9)]:
            wrong.append(r)
    return wrong


@pytest.mark.parametrize("device", CUDA)
def test_decoding_leaves_queued_work_alone(device):
    """nvJPEG writes its outputs before the work queued on its stream has run (pytorch/vision#9606): decode waits
    for that work, so memory freed while kernels still read it is never overwritten under them."""
    assert queued_sums_while_decoding(decoding.decode, device) == []


@pytest.mark.parametrize("device", ["cpu"] + CUDA)
def test_grey_cmyk_and_png_pictures_come_out_rgb(device):
    rgb = picture()
    datas = [encode(rgb, "JPEG", "L"), encode(rgb, "JPEG", "CMYK"), encode(rgb, "PNG"), encode(rgb, "PNG", "P")]
    for img in decoding.decode(datas, ["g.jpg", "c.jpg", "p.png", "pal.png"], device):
        assert img.shape == (3, 30, 40) and img.dtype == torch.uint8 and img.device.type == device


@pytest.mark.parametrize("device", ["cpu"] + CUDA)
def test_a_broken_file_is_named(device):
    good = encode(picture())
    broken = good[: len(good) // 3].clone()
    with pytest.raises(DataError, match="cannot decode the image x/broken.jpg"):
        decoding.decode([good, broken], ["x/good.jpg", "x/broken.jpg"], device)
    with pytest.raises(DataError, match=r"cannot decode the image x/text.jpg \(not an image file, or a kind PIL"):
        decoding.decode([torch.frombuffer(bytearray(b"not an image"), dtype=torch.uint8)], ["x/text.jpg"], device)


def test_only_whole_jpegs_go_to_nvjpeg():
    """nvJPEG may decode a truncated JPEG without an error: only a file from its start marker to its end marker is
    batched for it; the CPU decodes (and names, if broken) the others."""
    good = encode(picture())
    assert decoding._is_whole_jpeg(good)
    assert not decoding._is_whole_jpeg(good[: len(good) // 3].clone())  # cut short
    assert not decoding._is_whole_jpeg(torch.cat([good, torch.zeros(4, dtype=torch.uint8)]))  # bytes after it


def test_an_empty_file_is_named(tmp_path):
    (tmp_path / "empty.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read the image .*empty.JPEG \(the file is empty\)"):
        decoding.read_bytes(str(tmp_path / "empty.JPEG"))


@pytest.mark.parametrize("device", ["cpu"] + CUDA)
def test_a_16_bit_png_keeps_its_8_high_bits(device):
    """torchvision decodes a 16-bit PNG to uint16 (0-65535); as uint8 it must be scaled, not taken as 0-255
    levels (inputs of ~1,000 after normalisation) nor clipped to 255 (as PIL's convert("RGB") does)."""
    levels = np.random.default_rng(0).integers(0, 65536, (30, 40), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(levels).save(buf, format="PNG")
    (img,) = decoding.decode([torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)], ["x.png"], device)
    assert img.dtype == torch.uint8 and img.shape == (3, 30, 40)
    assert torch.equal(img[0].cpu(), torch.from_numpy((levels >> 8).astype(np.uint8)))


def test_the_draw_is_the_seeds_alone():
    assert draw(5) == draw(5) and draw(5) != draw(6)
    assert len(draw(0).u) == 47 and sorted(draw(0).order) == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(math.isfinite(a) for a in draw(1).alpha)


def _batch_views():
    """Five pictures of several sizes and their views: every kind of training crop and every test view."""
    pictures = [torch.from_numpy(picture(30 + 3 * k, 40 - 4 * k, seed=k)).permute(2, 0, 1).contiguous()
                for k in range(5)]
    augments = ([{"kind": "scale", "min": 24, "max": 36, "crop": 20}], [{"kind": "random-resized-crop", "size": 20}],
                [{"kind": "pad-crop", "padding": 3}], [])
    views = [(k, train_box(plan_from(a, crop=20), draw(10 * k + seed), *p.shape[1:]))
             for k, p in enumerate(pictures) for seed in range(6) for a in augments]
    views += [(k, b) for k, p in enumerate(pictures) for b in images.test_boxes(*p.shape[1:], 20, 26, True)]
    boxes = [b for _, b in views]
    assert any(b.pad for b in boxes) and any(b.mirror for b in boxes) and any(b.height != b.out for b in boxes)
    return pictures, views


def _assert_near_torchvision(crops, pictures, views):
    assert crops.dtype == torch.uint8 and crops.shape == (len(views), 3, 20, 20)
    reference = torch.stack([torchvision_cut(pictures[k], b) for k, b in views])
    off = (crops.cpu().int() - reference.int()).abs()
    assert off.max() <= 1 and (off > 0).float().mean() < 1e-3


@pytest.mark.parametrize("device", ["cpu"] + CUDA)
def test_the_batched_cut_is_torchvisions_float_resize(device, monkeypatch):
    """Off the CPU a batch's crops are cut in one go (resdsl/train/cuts.py): torchvision's float resize of each
    uint8 picture, rounded as it rounds, up to float summation order (a pixel whose exact value is a half may land
    a level off). Checked for every kind of crop and test view, pictures of several sizes, and a batch cut in
    chunks."""
    pictures, views = _batch_views()
    on_device = [p.to(device) for p in pictures]
    crops = cuts.cut_batch(on_device, views)
    _assert_near_torchvision(crops, pictures, views)
    monkeypatch.setattr(cuts, "CHUNK_PIXELS", 3 * 30 * 30 * 7)  # several chunks, each cut in its own order
    assert len(cuts._chunks(*[[30] * len(views)] * 2)) > 10
    assert torch.equal(cuts.cut_batch(on_device, views), crops)
    assert torch.equal(images.finish(crops[:4], None, None), images.finish(crops[:4].float(), None, None))
    with pytest.raises(ValueError, match=r"not \(3, h, w\) uint8"):
        cuts.cut_batch([on_device[0].float()], views[:1])


@pytest.mark.parametrize("device", ["cpu"] + CUDA)
def test_the_batched_cut_keeps_its_precision_under_autocast_and_tf32(device):
    """A caller's bf16 autocast, or TF32 matmuls on a GPU (set_float32_matmul_precision("high")), would move a
    quarter or 3% of the pixels a level or two; the cut takes neither."""
    pictures, views = _batch_views()
    on_device = [p.to(device) for p in pictures]
    with torch.autocast(device, dtype=torch.bfloat16):
        _assert_near_torchvision(cuts.cut_batch(on_device, views), pictures, views)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        _assert_near_torchvision(cuts.cut_batch(on_device, views), pictures, views)
    finally:
        torch.set_float32_matmul_precision(before)
