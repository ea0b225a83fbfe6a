"""How a trained network is tested on an image folder: the recipe's ``test`` and ``resdsl eval --test``.

The papers' views ([R] 3.4, [I] Table 5):

* ``single-view``: the center ``crop`` of the picture resized to shorter side ``scale``; by default the network's
  input side (224) of 256, and [I] Table 5's "single 320x320 crop from s = 320" is ``single-view scale 320 crop 320``;
* ``10-crop``: "the standard 10-crop testing" of [R] Tables 2 and 3 (the four corners and the center, and their
  mirror images; the softmax scores averaged), of the same sizes;
* ``multi-scale``: [R] Table 4's "fully-convolutional form ... average the scores at multiple scales (images are
  resized such that the shorter side is in {224, 256, 384, 480, 640})": each whole picture at each scale, no crop.
  The network's global average pool makes it fully convolutional (pooling, then the fc layer, is the fc layer as a
  1x1 convolution, then pooling). [R] names no mirrored views, so none are added.

A recipe's view without sizes is its name (``"10-crop"``), as it always was (so a spec's recipe, and its hash, are
those of earlier versions); one with sizes is a table: ``{"view": "single-view", "scale": 320, "crop": 320}``,
``{"view": "multi-scale", "scales": [224, 256, 384, 480, 640]}``.

A multi-scale batch is a :class:`Views`: its pictures at every scale, those of one size stacked together, and each
picture's scores are averaged over its views by :meth:`Views.scores`. Imports nothing from the rest of resdsl but
:mod:`images` and its data errors: it is shipped beside emitted trainers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .dataerror import DataError
from .images import EvalView, finish, resized

KINDS = ("single-view", "10-crop", "multi-scale")
PAPER_SCALES = (224, 256, 384, 480, 640)  # [R] 3.4, the shorter sides of its multi-scale test
ASPECT = 4 / 3  # most ImageNet pictures' (500x375): a whole picture at shorter side s holds s * s * 4 / 3 pixels


def view_of(value) -> dict:
    """The recipe's ``test`` (a name, or a table with sizes; None: the default) as a table with every key."""
    table = {"view": value} if isinstance(value, str) else dict(value or {"view": "single-view"})
    if table.get("view") not in KINDS:
        raise DataError(f"unknown test view {table.get('view')!r}; the views are {', '.join(KINDS)}")
    return {"view": table["view"], "scale": table.get("scale"), "crop": table.get("crop"),
            "scales": tuple(int(s) for s in table.get("scales") or ())}


def named(kind: str, recipe_test) -> dict:
    """``resdsl eval --test KIND``: the recipe's own view where it is of that kind (with its sizes), else KIND's
    defaults."""
    own = view_of(recipe_test)
    return own if own["view"] == kind else view_of(kind)


def eval_view(test: dict, side: int) -> EvalView:
    """The :class:`images.EvalView` of a :func:`view_of` table for a network whose input is ``side`` pixels."""
    crop = test["crop"] or side
    scale = test["scale"] or round(crop * 256 / 224)
    if crop > scale:
        raise DataError(f"the test crop {crop} is larger than the shorter side {scale} it is cut from")
    return EvalView(crop, scale, test["view"] == "10-crop", scales_of(test, side))


def scales_of(test: dict, side: int) -> tuple:
    """A multi-scale test's shorter sides: its own, else [R]'s for a 224-pixel input, scaled to ``side`` (32, 37,
    55, 69, 91 for a 32-pixel one); () for the other views."""
    if test["view"] != "multi-scale":
        return ()
    # each once: a tiny input's scaled sides may meet (Views.scores adds one view of a picture per size)
    return tuple(dict.fromkeys(test["scales"] or (max(1, round(s * side / 224)) for s in PAPER_SCALES)))


def words(test: dict, side: int) -> str:
    """How a test view is said: ``10-crop, 224x224 of shorter side 256``, ``multi-scale, fully convolutional, ...``."""
    v = eval_view(test, side)
    if v.scales:
        return f"multi-scale, fully convolutional, shorter side {', '.join(map(str, v.scales))}"
    return f"{'10-crop' if v.ten_crop else 'single view'}, {v.crop}x{v.crop} of shorter side {v.resize}"


def batch_pictures(test: dict, batch_size: int, side: int) -> int:
    """Pictures per test batch of ``batch_size`` crops' worth of pixels, for a network whose input is ``side``
    pixels: fewer for ten crops, or a whole picture at several scales (about 24 crops' worth at [R]'s)."""
    v = eval_view(test, side)
    if v.scales:
        share = sum(s * s * ASPECT for s in v.scales) / (v.crop * v.crop)
    else:
        share = (10 if v.ten_crop else 1) * v.crop * v.crop / (side * side)
    return max(1, int(batch_size / share))


# ---------------------------------------------------------------------------------------------------
# a multi-scale batch


@dataclass
class Views:
    """A batch of pictures each seen at several sizes: ``groups`` of (picture indices, their views stacked as one
    (n, 3, h, w) float tensor), ``pictures`` in all, ``per_picture`` views each. Moves like a tensor (``to``,
    ``pin_memory``, ``record_stream``), so DataLoaders and the batches made ahead carry it."""

    groups: list
    pictures: int
    per_picture: int

    @property
    def device(self) -> torch.device:
        return self.groups[0][1].device

    def to(self, device, non_blocking: bool = False) -> "Views":
        return Views([(i.to(device, non_blocking=non_blocking), x.to(device, non_blocking=non_blocking))
                      for i, x in self.groups], self.pictures, self.per_picture)

    def pin_memory(self) -> "Views":
        return Views([(i.pin_memory(), x.pin_memory()) for i, x in self.groups], self.pictures, self.per_picture)

    def record_stream(self, stream) -> None:
        for i, x in self.groups:
            i.record_stream(stream)
            x.record_stream(stream)

    def scores(self, forward) -> torch.Tensor:
        """Each picture's log of its views' mean softmax scores, (pictures, classes); ``forward(x)`` gives a
        group's logits."""
        total = None  # the log of the summed scores (in log space: a score that underflows would make the loss inf)
        for index, x in self.groups:  # a group holds one view of each of its pictures (a size per scale)
            p = forward(x).float().log_softmax(-1)
            total = torch.full((self.pictures, p.shape[1]), -math.inf, device=p.device) if total is None else total
            total[index] = torch.logaddexp(total[index], p)  # not index_add_: CUDA's is nondeterministic
        return total - math.log(self.per_picture)


def scaled_views(pictures: list[torch.Tensor], scales: tuple) -> Views:
    """Decoded (3, h, w) uint8 pictures at every shorter side of ``scales`` (torchvision's antialiased resize),
    normalised as every test view is, those of one size stacked together."""
    from torchvision.transforms.v2 import functional as TF

    views = []
    for k, picture in enumerate(pictures):
        for s in scales:
            same = (picture.shape[1], picture.shape[2]) == resized(picture.shape[1], picture.shape[2], s)
            views.append((k, picture if same else TF.resize(picture, [s], antialias=True)))
    groups = [(index, finish(x, None, None)) for index, x in _by_size(views)]
    return Views(groups, len(pictures), len(scales))


def collate_views(items: list) -> tuple:
    """A DataLoader's batch of ``(Views of one picture, label)`` items: one :class:`Views` and the labels."""
    views = [(k, view) for k, (one, _) in enumerate(items) for _, x in one.groups for view in x]
    return Views(_by_size(views), len(items), items[0][0].per_picture), torch.tensor([label for _, label in items])


def _by_size(views: list) -> list:
    """(picture index, view) pairs as groups of one size: (indices, the views stacked)."""
    sizes: dict = {}
    for k, view in views:
        sizes.setdefault(tuple(view.shape), []).append((k, view))
    return [(torch.tensor([k for k, _ in members], dtype=torch.long, device=members[0][1].device),
             torch.stack([v for _, v in members])) for members in sizes.values()]
