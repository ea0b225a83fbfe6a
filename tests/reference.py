"""Independent, hand-written reference of the papers' residual units, in plain functional PyTorch.

It reads weights by name from a resdsl model's state_dict but implements every unit from the papers' text
([R] section 3, [I] Fig. 2 and Fig. 4), not from resdsl's IR or emitter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def conv(x, sd, name, stride=1, bias=False):
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd[f"{name}.bias"] if bias else None, stride=stride, padding=w.shape[-1] // 2)


def bn(x, sd, name, training):
    return F.batch_norm(x, sd[f"{name}.running_mean"].clone(), sd[f"{name}.running_var"].clone(),
                        sd[f"{name}.weight"], sd[f"{name}.bias"], training=training, momentum=0.1, eps=1e-5)


def zero_pad_shortcut(x, out_channels, stride):
    """[R] option A: identity with extra zero channels, spatially subsampled."""
    x = x[:, :, ::stride, ::stride]
    zeros = torch.zeros(x.shape[0], out_channels - x.shape[1], *x.shape[2:], dtype=x.dtype)
    return torch.cat([x, zeros], dim=1)


def residual_convs(kind, stride, stride_at="1x1"):
    """(conv name, stride) of F's convolutions."""
    if kind == "basic":
        return [("conv1", stride), ("conv2", 1)]
    if kind == "single":
        return [("conv1", stride)]
    s1, s3 = (stride, 1) if stride_at == "1x1" else (1, stride)
    return [("conv1", s1), ("conv2", s3), ("conv3", 1)]


def unit(x, sd, p, *, kind, order, stride, shortcut, out_channels, training, stride_at="1x1", scale=None,
         residual_scale=None, gate=None, preact_shared=False, projection_bn=True, dropout=None):
    """One residual unit y = f(h(x) + F(x)) in the given order ([I] Fig. 4)."""
    convs = residual_convs(kind, stride, stride_at)
    if order in ("preact", "relu-preact") and preact_shared:
        if order == "preact":
            x = bn(x, sd, p + "bn1", training)
        x = F.relu(x)
    h = x
    for k, (name, s) in enumerate(convs, start=1):
        first, last = k == 1, k == len(convs)
        if order == "preact" and not (first and preact_shared):
            h = F.relu(bn(h, sd, p + f"bn{k}", training))
        if order == "relu-preact" and not (first and preact_shared):
            h = F.relu(h)
        h = conv(h, sd, p + name, s)
        if order in ("post", "relu-before-add", "relu-preact") or (order == "bn-after-add" and not last):
            h = bn(h, sd, p + f"bn{k}", training)
        if order in ("post", "bn-after-add") and not last:
            h = F.relu(h)
        if order == "relu-before-add":
            h = F.relu(h)
    if residual_scale is not None:
        h = h * residual_scale
    if shortcut == "none":
        y = h
    else:
        if shortcut == "zero-pad":
            s = zero_pad_shortcut(x, out_channels, stride)
        elif shortcut == "projection":
            s = conv(x, sd, p + "downsample.0", stride)
            if projection_bn:
                s = bn(s, sd, p + "downsample.1", training)
        else:
            s = x
        if dropout is not None:  # [I] 3.1: a random scale on the shortcut "with an expectation of" 1 - dropout
            s = s * torch.empty_like(s).bernoulli_(1 - dropout) if training else s * (1 - dropout)
        if scale is not None:
            s = s * scale
        if gate is None:
            y = h + s
        else:
            g = torch.sigmoid(conv(x, sd, p + "gate", stride, bias=True))
            y = g * h + (1 - g) * s if gate == "exclusive" else h + (1 - g) * s
    if order == "bn-after-add":
        y = bn(y, sd, p + "bn_out", training)
    if order in ("post", "bn-after-add"):
        y = F.relu(y)
    return y


# ---------------------------------------------------------------------------------------------
# image crops


def torchvision_cut(img: torch.Tensor, box) -> torch.Tensor:
    """cut's steps as torchvision's resize runs them on a GPU for a uint8 picture (in float32, rounded back to
    uint8 after each resize), written with torchvision's own calls: the reference of resdsl/train/cuts.py
    (tests/test_images.py, benchmarks/cut_accuracy.py)."""
    from torchvision.transforms.v2 import functional as TF

    x = torch.nn.functional.pad(img, (box.pad,) * 4) if box.pad else img
    if box.shorter:
        x = TF.resize(x.float(), [box.shorter], antialias=True).round_().to(torch.uint8)
    x = x[:, box.top:box.top + box.height, box.left:box.left + box.width]
    if (box.height, box.width) != (box.out, box.out):
        x = TF.resize(x.float(), [box.out, box.out], antialias=True).round_().to(torch.uint8)
    return x.flip(-1) if box.mirror else x
