"""Image-folder pictures as tensors: the papers' augmentations of decoded pictures (:mod:`decoding`), one description
that runs wherever the pixels are (in DataLoader workers on the CPU, or batched on the GPU after nvJPEG there).

An image's augmentation is fixed by its sample seed alone (:func:`draw`: the random numbers, made on the host),
so a picture gets the same crop, flip and colour noise whichever worker, device or resumed process makes it. The
geometry (:func:`train_box`, :func:`test_boxes`) turns those numbers into a resize and a crop once the decoded size
is known (host metadata, no device synchronisation); :func:`finish` does the rest on a whole batch: flip, [0, 1]
scaling, colour jitter, AlexNet's PCA lighting noise and the ImageNet channel normalisation (the recipe's
``normalize imagenet-mean-std``, the only one an image folder has: :func:`check_normalize`).

The augmentations of a recipe's ``augment`` list for image folders (:func:`plan_from`):

* ``scale min..max crop c`` ([R] 3.4): shorter side resized to a uniform integer in [min, max], a random c x c crop;
* ``random-resized-crop s``: GoogLeNet's crop, torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3);
* ``pad-crop p``: zero padding of p pixels, then a random crop;
* ``flip``: horizontal flip with probability 1/2;
* ``lighting``: AlexNet's PCA lighting noise, std 0.1: [R] 3.4's "standard color augmentation in [21]";
* ``color``: FAIR's fb.resnet.torch's colour augmentation (to which [I] Table 5 points for a model):
  ColorJitter(0.4, 0.4, 0.4) in a random order, then the lighting noise.

Without a cropping step the image is resized (shorter side) to the crop and center-cropped. Imports nothing from the
rest of resdsl but its data errors, :mod:`decoding`, :mod:`streams` and the recipe's words: it is shipped beside
emitted trainers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .dataerror import DataError
from .cuts import cut_batch
from .decoding import decode
from .streams import hand_over, prepared, thread_stream, to_device
from .vocabulary import FOLDER_NORMALIZE

FOLDER_AUGMENTATIONS = ("scale", "random-resized-crop", "flip", "lighting", "color", "pad-crop")

# The usual ImageNet channel statistics (RGB, images scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The principal components of ImageNet's RGB pixel values, as AlexNet's lighting noise uses them.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
JITTER = 0.4  # ColorJitter's brightness, contrast and saturation
LIGHTING_STD = 0.1
RRC_SCALE, RRC_RATIO, RRC_TRIES = (0.08, 1.0), (3 / 4, 4 / 3), 10


@dataclass(frozen=True)
class Plan:
    """A recipe's augment list for image folders: one cropping step (``crop`` kind and its settings), flip, colour
    jitter (``color`` only) and lighting noise (``lighting`` and ``color``)."""

    crop: int
    kind: str = "center"  # center | scale | random-resized-crop | pad-crop
    low: int = 0  # scale: the shorter side's range
    high: int = 0
    padding: int = 0  # pad-crop
    flip: bool = False
    jitter: bool = False
    lighting: bool = False


def check_normalize(normalize: str) -> None:
    """An image folder is normalised by ImageNet's channel statistics (what torchvision's weights expect, and
    fb.resnet.torch's stand-in for [R]'s per-pixel mean, which a crop at a random scale and place has no fixed image
    of); a recipe that asks for another normalisation is refused rather than quietly given this one."""
    if normalize != FOLDER_NORMALIZE:
        raise DataError(f"the recipe says 'normalize {normalize}', but an image-folder dataset is normalised by "
                        f"ImageNet's channel mean and std: write 'normalize {FOLDER_NORMALIZE}' in the recipe "
                        f"(`resdsl train --set normalize={FOLDER_NORMALIZE}`; in an emitted trainer's recipe.json, "
                        f'"normalize": "{FOLDER_NORMALIZE}"). The training set\'s own statistics (per-pixel-mean, '
                        "mean-std) and none are for in-memory datasets")


def plan_from(augment: list, crop: int) -> Plan:
    """The :class:`Plan` of a recipe's augment list (a DataError names an unknown or incomplete augmentation)."""
    fields: dict = {"crop": crop}
    for a in augment:
        kind = a.get("kind")
        try:
            if kind == "scale":
                fields.update(kind="scale", low=int(a["min"]), high=int(a["max"]), crop=int(a["crop"]))
                if fields["low"] < fields["crop"]:
                    raise DataError(f"scale augmentation: the shorter side's minimum {fields['low']} is smaller "
                                    f"than the crop {fields['crop']}")
            elif kind == "random-resized-crop":
                fields.update(kind="random-resized-crop", crop=int(a["size"]))
            elif kind == "pad-crop":
                fields.update(kind="pad-crop", padding=int(a["padding"]))
            elif kind in ("flip", "lighting"):
                fields[kind] = True
            elif kind == "color":
                fields.update(jitter=True, lighting=True)
            else:
                raise DataError(f"unknown augmentation '{kind}' in the recipe; an image-folder dataset supports "
                                f"{', '.join(FOLDER_AUGMENTATIONS)}")
        except KeyError as exc:
            raise DataError(f"augmentation '{kind}' in the recipe lacks its '{exc.args[0]}' setting") from None
    return Plan(**fields)


@dataclass(frozen=True)
class Draw:
    """One image's random numbers: ``u`` uniforms in [0, 1) (0: size, 1-2: crop position, 3: flip, 4-6: jitter
    factors, 7-46: RandomResizedCrop's tries), the jitter order, and the lighting noise's three normals."""

    u: tuple
    order: tuple
    alpha: tuple


def draw(seed: int) -> Draw:
    """The random numbers of the sample whose seed is ``seed`` (the same set whatever the plan uses)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(7 + 4 * RRC_TRIES, generator=gen, dtype=torch.float64)
    order = torch.randperm(3, generator=gen)
    alpha = torch.randn(3, generator=gen, dtype=torch.float64)
    return Draw(tuple(u.tolist()), tuple(order.tolist()), tuple(alpha.tolist()))


def _pick(u: float, n: int) -> int:
    """A uniform integer in [0, n) from a uniform ``u`` in [0, 1)."""
    return min(int(u * n), n - 1)


# ---------------------------------------------------------------------------------------------------
# geometry: a picture's (pad, resize, crop, resize) from its decoded size and its draw


@dataclass(frozen=True)
class Box:
    """What is done to a decoded (3, h, w) picture: zero padding, a resize of the shorter side (0: none), the crop
    (top, left, height, width) of the result, and the crop's final square size."""

    pad: int
    shorter: int
    top: int
    left: int
    height: int
    width: int
    out: int
    mirror: bool = False  # a test view of the mirrored picture


def resized(h: int, w: int, shorter: int) -> tuple[int, int]:
    """(h, w) after resizing the shorter side to ``shorter``, as torchvision's Resize(int) computes it."""
    if h <= w:
        return shorter, int(shorter * w / h)
    return int(shorter * h / w), shorter


def train_box(plan: Plan, d: Draw, h: int, w: int) -> Box:
    """The training crop of an ``h`` x ``w`` picture."""
    c = plan.crop
    if plan.kind == "scale":
        side = plan.low + _pick(d.u[0], plan.high - plan.low + 1)
        rh, rw = resized(h, w, side)
        return Box(0, side, _pick(d.u[1], rh - c + 1), _pick(d.u[2], rw - c + 1), c, c, c)
    if plan.kind == "random-resized-crop":
        return _random_resized_box(d, h, w, c)
    if plan.kind == "pad-crop":
        p = plan.padding
        if h + 2 * p < c or w + 2 * p < c:
            raise DataError(f"pad-crop: a {w}x{h} image padded by {p} is smaller than the {c}x{c} crop")
        return Box(p, 0, _pick(d.u[1], h + 2 * p - c + 1), _pick(d.u[2], w + 2 * p - c + 1), c, c, c)
    return _center(h, w, c, c)


def _center(h: int, w: int, shorter: int, crop: int) -> Box:
    rh, rw = resized(h, w, shorter)
    return Box(0, shorter, int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0)), crop, crop, crop)


def _random_resized_box(d: Draw, h: int, w: int, size: int) -> Box:
    """torchvision's RandomResizedCrop.get_params with this draw's numbers: up to ten tries of an area fraction and
    a log aspect ratio, else the whole picture clamped to the ratio range, centered."""
    area, lo, hi = h * w, math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    for k in range(RRC_TRIES):
        ua, ur, ut, ul = d.u[7 + 4 * k: 11 + 4 * k]
        target = area * (RRC_SCALE[0] + ua * (RRC_SCALE[1] - RRC_SCALE[0]))
        ratio = math.exp(lo + ur * (hi - lo))
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return Box(0, 0, _pick(ut, h - ch + 1), _pick(ul, w - cw + 1), ch, cw, size)
    ratio = w / h
    if ratio < RRC_RATIO[0]:
        cw, ch = w, int(round(w / RRC_RATIO[0]))
    elif ratio > RRC_RATIO[1]:
        ch, cw = h, int(round(h * RRC_RATIO[1]))
    else:
        cw, ch = w, h
    return Box(0, 0, (h - ch) // 2, (w - cw) // 2, ch, cw, size)


def test_boxes(h: int, w: int, crop: int, resize: int, ten_crop: bool) -> list[Box]:
    """The test views of a picture: shorter side to ``resize``, then the center crop, or (``ten_crop``) TenCrop's
    ten: the four corners and the center, then the same five of the mirrored picture."""
    center = _center(h, w, resize, crop)
    if not ten_crop:
        return [center]
    rh, rw = resized(h, w, resize)
    five = [Box(0, resize, t, left, crop, crop, crop)
            for t, left in ((0, 0), (0, rw - crop), (rh - crop, 0), (rh - crop, rw - crop))] + [center]
    # a crop at `left` of the mirrored picture is the mirror of the crop at rw - crop - left of the picture
    return five + [Box(0, resize, b.top, rw - crop - b.left, crop, crop, crop, mirror=True) for b in five]


def cut(img: torch.Tensor, box: Box) -> torch.Tensor:
    """The (3, out, out) uint8 crop of a decoded (3, h, w) uint8 picture: on the CPU torchvision's native uint8
    resize (the workers' path), elsewhere :func:`cuts.cut_batch` (torchvision's float resize of a uint8 picture,
    rounded as it rounds)."""
    if img.device.type != "cpu":
        return cut_batch([img], [(0, box)])[0]
    from torchvision.transforms.v2 import functional as TF

    if box.pad:
        img = torch.nn.functional.pad(img, (box.pad,) * 4)
    if box.shorter:
        img = TF.resize(img, [box.shorter], antialias=True)
    img = img[:, box.top:box.top + box.height, box.left:box.left + box.width]
    if (box.height, box.width) != (box.out, box.out):
        img = TF.resize(img, [box.out, box.out], antialias=True)
    return img.flip(-1) if box.mirror else img


# ---------------------------------------------------------------------------------------------------
# the batch: flip, scaling, colour, normalisation


def finish(crops: torch.Tensor, plan: Plan | None, draws: list[Draw] | None) -> torch.Tensor:
    """(B, 3, c, c) crops (uint8, or float holding :func:`cut`'s whole numbers) to the network's float input:
    flipped, jittered and lit as each image's draw says (training, ``plan`` given) or as they are (testing), scaled
    to [0, 1] and normalised by ImageNet's statistics."""
    x = crops.float().div(255.0)  # not in place: float crops are left as they are
    numbers = _numbers(draws if plan is not None and (plan.flip or plan.jitter or plan.lighting) else [], x.device)
    if plan is not None and plan.flip:
        x = torch.where(numbers.flip.bool(), x.flip(3), x)
    if plan is not None and plan.jitter:
        x = _jitter(x, numbers)
    if plan is not None and plan.lighting:
        x = _lighting(x, numbers)
    return x.sub_(numbers.mean).div_(numbers.std)


@dataclass(frozen=True)
class _Numbers:
    """A batch's per-image numbers as (B, 1, 1, 1) columns (and the channel statistics as (1, 3, 1, 1)), views
    of one table that went to the device in a single copy: ``flip`` (0 or 1), the jitter ``factors`` (brightness,
    contrast, saturation), ``orders[step][op]`` (1 where jitter op ``op`` is the image's step ``step``), the
    lighting noise ``rgb`` (B, 3, 1, 1)."""

    flip: torch.Tensor
    factors: tuple
    orders: tuple
    rgb: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def _numbers(draws: list[Draw], device) -> _Numbers:
    """One table (B rows of 16 numbers, then the mean and std) made on the host and copied once: a copy each
    (there were 16, two of them waiting for the stream) cost the thread that makes a GPU batch (issue 10)."""
    rows = [[float(d.u[3] < 0.5)] + [1 - JITTER + 2 * JITTER * d.u[4 + k] for k in range(3)]
            + [float(d.order[step] == op) for step in range(3) for op in range(3)] for d in draws]
    per_image = torch.tensor(rows, dtype=torch.float32).view(len(draws), 13)
    if draws:  # AlexNet's PCA noise: eigvec @ (alpha * eigval), alpha ~ N(0, 0.1) per image
        alpha = torch.tensor([d.alpha for d in draws], dtype=torch.float32) * LIGHTING_STD
        rgb = (alpha * torch.tensor(IMAGENET_EIGVAL)) @ torch.tensor(IMAGENET_EIGVEC).T
    else:
        rgb = torch.zeros(0, 3)
    stats = torch.tensor(IMAGENET_MEAN + IMAGENET_STD, dtype=torch.float32)
    table = to_device(torch.cat([torch.cat([per_image, rgb], 1).flatten(), stats]), device)
    b, cols = len(draws), table[:-6].view(len(draws), 16)

    def col(k):
        return cols[:, k].view(b, 1, 1, 1)

    return _Numbers(flip=col(0), factors=tuple(col(1 + k) for k in range(3)),
                    orders=tuple(tuple(col(4 + 3 * step + op) for op in range(3)) for step in range(3)),
                    rgb=cols[:, 13:].reshape(b, 3, 1, 1), mean=table[-6:-3].view(1, 3, 1, 1),
                    std=table[-3:].view(1, 3, 1, 1))


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _jitter(x: torch.Tensor, numbers: _Numbers) -> torch.Tensor:
    """ColorJitter(0.4, 0.4, 0.4): brightness, contrast and saturation factors uniform in [0.6, 1.4], applied in
    each image's own random order, each result clamped to [0, 1] as torchvision does."""
    ops = (lambda t, f: t * f,
           lambda t, f: t * f + (1 - f) * _gray(t).mean((1, 2, 3), keepdim=True),
           lambda t, f: t * f + (1 - f) * _gray(t))
    for step in range(3):
        for op in range(3):
            here = numbers.orders[step][op].bool()
            x = torch.where(here, ops[op](x, numbers.factors[op]).clamp_(0, 1), x)
    return x


def _lighting(x: torch.Tensor, numbers: _Numbers) -> torch.Tensor:
    """AlexNet's PCA noise: every pixel plus ``eigvec @ (alpha * eigval)`` (made in :func:`_numbers`)."""
    return x + numbers.rgb


# ---------------------------------------------------------------------------------------------------
# a batch made from files' bytes (decoded by decoding.py)


@dataclass(frozen=True)
class EvalView:
    """How test pictures are cut: shorter side to ``resize``, then the center ``crop`` or ten crops; or, with
    ``scales``, each whole picture at every one of those shorter sides (:mod:`views`' multi-scale test)."""

    crop: int
    resize: int
    ten_crop: bool = False
    scales: tuple = ()


def make_batch(datas: list[torch.Tensor], paths: list[str], seeds: list[int], view: Plan | EvalView,
               device, draws: list[Draw] | None = None) -> torch.Tensor:
    """The network's input from encoded files: decoded on ``device``, cut by the view (a training Plan with each
    sample's seed, or a EvalView), finished as a batch. (B, 3, c, c), or (B, 10, 3, c, c) for ten test crops, or a
    :class:`views.Views` for several scales.
    ``draws``: the seeds' :func:`draw`, when made already (by the DataLoader workers, off this thread).
    On a CUDA device the batch is made on the calling thread's data stream (:mod:`streams`), so :func:`decode`
    waits only for the previous batch's cuts, not for the training steps queued on the caller's stream."""
    x, ready = prepared(lambda: build_batch(datas, paths, seeds, view, device, draws), thread_stream(device))
    hand_over((x,), ready)
    return x


def build_batch(datas, paths, seeds, view, device, draws=None) -> torch.Tensor:
    """:func:`make_batch`'s work, on the current stream (for a thread that hands the batch over itself)."""
    pictures = decode(datas, paths, device)
    if isinstance(view, Plan):
        draws = draws if draws is not None else [draw(s) for s in seeds]
        views = [(k, _named(paths[k], train_box, view, d, p.shape[1], p.shape[2]))
                 for k, (d, p) in enumerate(zip(draws, pictures))]
        return finish(cut_views(pictures, views), view, draws)
    if view.scales:
        from .views import scaled_views  # which imports this module

        return scaled_views(pictures, view.scales)
    views = [(k, b) for k, p in enumerate(pictures)
             for b in test_boxes(p.shape[1], p.shape[2], view.crop, view.resize, view.ten_crop)]
    x = finish(cut_views(pictures, views), None, None)
    return x.view(len(pictures), 10, *x.shape[1:]) if view.ten_crop else x


def _named(path: str, fn, *args):
    """``fn(*args)``; a DataError it raises names the picture's file."""
    try:
        return fn(*args)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def cut_views(pictures: list[torch.Tensor], views: list[tuple[int, Box]]) -> torch.Tensor:
    """The crops of (picture index, box) views: one by one on the CPU, in one go on CUDA (:mod:`cuts`); on Apple's
    MPS, which has no float64 for the batched cut's table, on the CPU and then moved there."""
    device = pictures[0].device
    if device.type == "cuda":
        return cut_batch(pictures, views)
    if device.type != "cpu":
        return torch.stack([cut(pictures[k].cpu(), box) for k, box in views]).to(device)
    return torch.stack([cut(pictures[k], box) for k, box in views])
