"""In-memory datasets and their batches: :class:`InMemoryData` (a small dataset held whole as uint8 tensors),
the seeded orders the trainer draws from (:func:`epoch_permutation` for each epoch, :func:`split_order` for a
held-out split), and :class:`BatchPipeline`, which normalises and augments batches on the data's device with no
DataLoader. Imports nothing from the rest of resdsl: it is shipped beside emitted trainers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .dataerror import DataError
from .images import IMAGENET_MEAN, IMAGENET_STD
from .streams import to_device

NORMALIZATIONS = ("per-pixel-mean", "mean-std", "imagenet-mean-std", "none")
IN_MEMORY_AUGMENTATIONS = ("pad-crop", "flip")


@dataclass
class InMemoryData:
    """A small dataset held whole: uint8 images (N, C, H, W) and int64 labels (N,); the trainer moves it to
    the GPU with :meth:`to` and makes its batches there with :class:`BatchPipeline`."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(s) for s in self.train_x.shape[1:])

    def to(self, device) -> "InMemoryData":
        """A copy with all four tensors on ``device``."""
        return replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                       test_x=self.test_x.to(device), test_y=self.test_y.to(device))


# ---------------------------------------------------------------------------------------------------
# orders and batches


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of training examples in ``epoch``: a permutation of range(n) that depends only on
    (seed, epoch), so a resumed run and every process of a distributed run see the same order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def split_order(total: int, seed: int) -> torch.Tensor:
    """The shuffled training set a split cuts: train = the first n_train, test = the last n_val."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))


def _channel_sums(x: torch.Tensor, fn, chunk: int):
    """sum over images of fn(image chunk as float64 in [0, 1]), without a float64 copy of the whole set; on the CPU
    for images on Apple's MPS, which has no float64 (the callers bring the float32 result to the images' device)."""
    total = None
    for i in range(0, x.shape[0], chunk):
        c = x[i:i + chunk]
        s = fn((c.cpu() if c.device.type == "mps" else c).double() / 255)
        total = s if total is None else total + s
    return total


class BatchPipeline:
    """Normalises and augments batches of an InMemoryData on its device, with no DataLoader.

    ``normalize``: ``"per-pixel-mean"`` subtracts the training set's mean image ([R] 4.2; no division),
    ``"mean-std"`` the per-channel mean and divides by the per-channel std of the training set,
    ``"imagenet-mean-std"`` does the same with ImageNet's (RGB images only; what an image folder uses), ``"none"``
    only scales to [0, 1]. Images are always scaled to [0, 1] first (x / 255). The statistics are computed once, in
    float64 on the data's device, and kept as float32.

    ``augment`` (in memory): ``{"kind": "pad-crop", "padding": P}`` pads P zeros on every side (after
    normalisation) and takes a random HxW crop per image; ``{"kind": "flip"}`` flips each image horizontally
    with probability 1/2. The other kinds need an image-folder dataset.
    """

    def __init__(self, data: InMemoryData, normalize: str, augment: list):
        self.data = data
        self.pad, self.flip = 0, False
        for a in augment:
            kind = a.get("kind")
            if kind == "pad-crop":
                self.pad = int(a.get("padding", 0))
                if self.pad < 0:
                    raise DataError(f"pad-crop needs a padding of 0 or more pixels, not {self.pad}")
            elif kind == "flip":
                self.flip = True
            else:
                raise DataError(f"augmentation '{kind}' needs an image-folder dataset (--data FOLDER with train/ "
                                f"and val/); {data.name} is held in memory, where only "
                                f"{', '.join(IN_MEMORY_AUGMENTATIONS)} are supported")
        x = data.train_x
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise DataError(f"{data.name}: the training images must be uint8 (N, C, H, W), not {x.dtype} "
                            f"{tuple(x.shape)}")
        t = data.test_x
        if t.dtype != torch.uint8 or t.dim() != 4 or t.shape[1:] != x.shape[1:]:  # else a meaningless test error
            raise DataError(f"{data.name}: the test images ({t.dtype} {'x'.join(map(str, t.shape[1:]))}) are not of "
                            f"the training images' kind and size (uint8 {'x'.join(map(str, x.shape[1:]))})")
        if t.shape[0] == 0:  # its error would read 0.00%
            raise DataError(f"{data.name}: the test set is empty")
        if self.pad and self.pad >= min(x.shape[2], x.shape[3]):  # a crop could then hold no pixel of the image
            raise DataError(f"pad-crop {self.pad} is not smaller than {data.name}'s {x.shape[2]}x{x.shape[3]} "
                            "images: a crop could hold nothing but padding")
        if x.shape[0] == 0 and normalize != "none":
            raise DataError(f"{data.name}: the training set is empty, so it has no mean to subtract")
        chunk = max(1, (1 << 22) // max(1, x[0].numel()))
        if normalize == "per-pixel-mean":  # [R] 4.2: "the per-pixel mean is subtracted"
            self.mean = (_channel_sums(x, lambda c: c.sum(0), chunk) / x.shape[0]).float().to(x.device)
            self.std = None
        elif normalize == "mean-std":
            per_channel = x.shape[0] * x.shape[2] * x.shape[3]
            mean = _channel_sums(x, lambda c: c.sum((0, 2, 3)), chunk) / per_channel
            m = mean.view(-1, 1, 1)
            var = _channel_sums(x, lambda c: ((c - m) ** 2).sum((0, 2, 3)), chunk) / max(1, per_channel - 1)
            self.mean = mean.float().view(-1, 1, 1).to(x.device)
            self.std = var.sqrt().float().view(-1, 1, 1).clamp_min(1e-6).to(x.device)
        elif normalize == "imagenet-mean-std":
            if x.shape[1] != 3:
                raise DataError(f"normalize imagenet-mean-std is for RGB images; {data.name} has {x.shape[1]} "
                                "channel(s): use per-pixel-mean or mean-std (the training set's own statistics)")
            self.mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
            self.std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
        elif normalize == "none":
            self.mean, self.std = None, None
        else:
            raise DataError(f"unknown normalisation '{normalize}' in the recipe; use one of "
                            f"{', '.join(NORMALIZATIONS)}")

    def stats(self) -> dict:
        """The normalisation statistics (saved in checkpoints, so evaluation normalises exactly as training)."""
        return {"mean": None if self.mean is None else self.mean.cpu(),
                "std": None if self.std is None else self.std.cpu()}

    def load_stats(self, stats: dict) -> None:
        """Use saved statistics (from :meth:`stats`) instead of this training set's; statistics of images of another
        shape (a per-pixel mean of 28x28 images for 32x32 ones) are a DataError: not the data the run trained on."""
        shape = self.data.shape
        for key in ("mean", "std"):
            saved = stats[key]
            if saved is not None and (saved.dim() != 3 or saved.shape[0] != shape[0]
                                      or tuple(saved.shape[1:]) not in ((1, 1), tuple(shape[1:]))):
                images = "x".join(map(str, saved.shape)) if saved.dim() == 3 else f"{saved.dim()}-d"
                raise DataError(f"the run's normalisation ({key}) is for {images} images and {self.data.name}'s are "
                                f"{'x'.join(map(str, shape))}: this is not the data the run was trained on; give "
                                "--data or --data-dir for that data")
        dev = self.data.train_x.device
        self.mean = None if stats["mean"] is None else stats["mean"].to(dev)
        self.std = None if stats["std"] is None else stats["std"].to(dev)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented, normalised training images at ``indices`` (float32 (B, C, H, W)) and their labels.

        All randomness comes from ``generator`` (on the CPU): the same indices and generator state give a bitwise
        identical batch."""
        dev = self.data.train_x.device
        draws = self.draw(len(indices), generator)  # pinned copies: the host does not wait for the queued steps
        return self.assemble(to_device(indices.to(torch.int64), dev), to_device(draws, dev))

    def draw(self, b: int, generator: torch.Generator) -> torch.Tensor:
        """The random numbers of one batch's augmentation, drawn from ``generator`` in a fixed order (crop rows,
        crop columns, flip mask): an int64 (3, B) tensor of row offsets, column offsets and flips (0 or 1); the
        rows of an augmentation the recipe does not have are zeros and draw nothing."""
        draws = torch.zeros(3, b, dtype=torch.int64)
        if self.pad:
            draws[0] = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
            draws[1] = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
        if self.flip:
            draws[2] = torch.rand(b, generator=generator) < 0.5
        return draws

    def assemble(self, idx: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of images ``idx`` augmented by ``draws`` (from :meth:`draw`), both on the data's device.
        Nothing here reads a value back to the host, so a CUDA graph can hold it (the trainer's fast path)."""
        dev = self.data.train_x.device
        x = self._normalise(self.data.train_x[idx])
        y = self.data.train_y[idx]
        b, c, h, w = x.shape
        if self.pad:
            p = self.pad
            padded = torch.nn.functional.pad(x, (p, p, p, p))  # zeros, after normalisation
            rows = (draws[0][:, None] + torch.arange(h, device=dev))[:, None, :, None]
            cols = (draws[1][:, None] + torch.arange(w, device=dev))[:, None, None, :]
            bi = torch.arange(b, device=dev)[:, None, None, None]
            ci = torch.arange(c, device=dev)[None, :, None, None]
            x = padded[bi, ci, rows, cols]
        if self.flip:
            x = torch.where(draws[2].bool()[:, None, None, None], x.flip(3), x)
        return x.contiguous(), y

    def test_batches(self, batch_size: int):
        """The whole test set in order, normalised, without augmentation: (float32 images, int64 labels)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        n = self.data.test_x.shape[0]
        for i in range(0, n, batch_size):
            yield self._normalise(self.data.test_x[i:i + batch_size]), self.data.test_y[i:i + batch_size]


def input_normalization(pipeline: BatchPipeline | None) -> dict:
    """How a trained model takes its input, for using it outside the trainer: images scaled to [0, 1], minus
    ``mean``, divided by ``std`` (float32 CPU tensors broadcasting over (C, H, W); None: not applied). An
    in-memory dataset's are its pipeline's (the training set's own); an image folder's (no pipeline) ImageNet's."""
    if pipeline is not None:
        return pipeline.stats()
    return {"mean": torch.tensor(IMAGENET_MEAN).view(3, 1, 1), "std": torch.tensor(IMAGENET_STD).view(3, 1, 1)}

