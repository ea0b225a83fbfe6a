"""A batch's crops in about a hundred kernels a chunk, whatever its size (issue 10): :func:`images.cut`'s arithmetic
for every (picture, box) of a batch at once, for the GPU, where one thread cutting 256 pictures one by one spent
~28 ms of host time launching ~1,000 small kernels (benchmarks/RESULTS.md, "GPU training: jpeg").

Every box of :mod:`images` is one linear map per axis: pad, then resize the shorter side and crop (the scale
augmentation, the test views), or crop and then resize (RandomResizedCrop), or only crop (pad-crop). An antialiased
bilinear resize is separable, ``out = Wy @ picture @ Wx^T``, where the rows of ``Wy`` and ``Wx`` are the weights
PyTorch's ``interpolate(..., antialias=True)`` gives each output pixel (the formula of its
``_compute_weights_span``/``_compute_weights``; a crop is the identity's rows). So the batch is: each box's window
of its picture (the input pixels its taps reach) gathered from one flat buffer into a (N, 3, Ly, Lx) tensor, the
weights built on the device, two batched matrix products and a rounding. The result equals the one-by-one cut up to
float summation order (values within ~1e-4): a pixel comes out one level off where its exact value is a half, as
upsampling by 2 makes many (2.5e-6 of the pixels for [R]'s scale augmentation of random 500x375 pictures; tests/
test_images.py checks the bound). Matrix products run in float32, never under autocast, and in float64 where
float32 matmuls may take TF32's shortcut (``set_float32_matmul_precision("high")``, PyTorch's default is not):
TF32 would move 3% of the pixels a level. Imports nothing from resdsl but :mod:`images` and :mod:`streams`: it is
shipped beside emitted trainers.
"""
from __future__ import annotations

import torch

from .streams import to_device

# At most this many gathered pixels per chunk (4 bytes each, and 8 for their index): a batch holding an outsized
# picture is cut in several chunks rather than padding every window to the largest.
CHUNK_PIXELS = 1 << 25


def _axis(length: int, pad: int, shorter_len: int, start: int, span: int, out: int) -> tuple:
    """One axis of a box as (input length, output length, first output index, input offset), in the coordinates
    of the picture padded by ``pad``: pixel ``k`` of the map's input is pixel ``k + offset`` of the picture."""
    if shorter_len:  # resize the padded picture, then keep outputs start..start+out
        return length + 2 * pad, shorter_len, start, -pad
    if span == out:  # a crop alone: the identity's rows start..start+out
        return length + 2 * pad, length + 2 * pad, start, -pad
    return span, out, 0, start - pad  # crop span pixels at start, resize them to out


def _axes(box, h: int, w: int) -> tuple:
    """(y axis, x axis) of a box on an h x w picture; see :func:`_axis`."""
    from .images import resized  # images imports this module

    if box.shorter and (box.height, box.width) != (box.out, box.out):
        raise ValueError(f"{box}: a resize, a crop and a second resize are two maps an axis, not one")
    rh, rw = resized(h + 2 * box.pad, w + 2 * box.pad, box.shorter) if box.shorter else (0, 0)
    return (_axis(h, box.pad, rh, box.top, box.height, box.out),
            _axis(w, box.pad, rw, box.left, box.width, box.out))


def _windows(axes: torch.Tensor, out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N, 4) axes (input length, output length, first output, offset) in float64: each box's first input
    index and the number its taps reach, one to spare on each side (a zero weight there costs nothing)."""
    n_in, n_out, first = axes[:, 0], axes[:, 1], axes[:, 2]
    scale = n_in / n_out
    support = scale.clamp(min=1.0)
    low = torch.floor(scale * (first + 0.5) - support + 0.5) - 1
    high = torch.floor(scale * (first + out - 0.5) + support + 0.5) + 1
    low, high = low.clamp(min=0), torch.minimum(high, n_in)
    return low.long(), (high - low).long()


def _weights(axis: torch.Tensor, mirror: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """(N, out, size) float32 weights of each box's outputs over its window's input pixels, as PyTorch's
    antialiased bilinear resize computes them (support ``max(scale, 1)``, the triangle filter stretched by the
    scale when shrinking, each row normalised over its span), zero where the input is padding or past the picture.
    ``axis``: (N, 6) float32 on the device (input length, output length, first output, offset, picture length,
    window start); ``mirror``: (N,) bool, outputs right to left."""
    n_in, n_out, first, offset, length, start = (axis[:, k, None, None] for k in range(6))
    r = torch.arange(out, device=axis.device, dtype=torch.float32)[None, :, None]
    i = first + torch.where(mirror[:, None, None], out - 1 - r, r)
    k = start + torch.arange(size, device=axis.device, dtype=torch.float32)[None, None, :]
    scale = n_in / n_out
    support = scale.clamp(min=1.0)
    center = scale * (i + 0.5)
    low = torch.floor(center - support + 0.5).clamp(min=0)
    high = torch.minimum(torch.floor(center + support + 0.5), n_in)
    w = (1.0 - ((k - center + 0.5) * (1.0 / support)).abs()).clamp(min=0.0) * ((k >= low) & (k < high))
    w = w / w.sum(-1, keepdim=True)  # every row has a tap of weight > 0: the one nearest its center
    return w * ((k + offset >= 0) & (k + offset < length))  # padding's taps count in the sum, its pixels are 0


def _chunks(ly: list[int], lx: list[int]) -> list[list[int]]:
    """The boxes' indices, largest window first, in groups whose windows, padded to the group's largest height
    and width, stay under CHUNK_PIXELS."""
    groups: list[list[int]] = []
    high = wide = 0  # the last group's largest window
    for n in sorted(range(len(ly)), key=lambda n: -ly[n] * lx[n]):
        h, w = max(high, ly[n]), max(wide, lx[n])
        if groups and (len(groups[-1]) + 1) * 3 * h * w <= CHUNK_PIXELS:
            groups[-1].append(n)
        else:
            groups.append([n])
            h, w = ly[n], lx[n]
        high, wide = h, w
    return groups


def cut_batch(pictures: list[torch.Tensor], views: list[tuple[int, object]]) -> torch.Tensor:
    """(N, 3, out, out) uint8 crops for ``views``, a non-empty list of (picture index, box) with one ``out``;
    ``pictures`` are (3, h, w) uint8 on one device."""
    out = views[0][1].out
    _check(pictures, views, out)
    sizes = [tuple(p.shape[1:]) for p in pictures]
    starts = [0]
    for h, w in sizes[:-1]:
        starts.append(starts[-1] + 3 * h * w)
    axes = torch.tensor([(*ya, *xa) for ya, xa in (_axes(box, *sizes[k]) for k, box in views)],
                        dtype=torch.float64).view(len(views), 8)
    (y0, ly), (x0, lx) = _windows(axes[:, :4], out), _windows(axes[:, 4:], out)
    # a row a box: 0-5 the y axis (input length, output length, first output, offset, picture h, window start),
    # 6-11 the x axis's, 12 its picture's start in `flat`, 13 mirrored, 14 its place in the batch; float64 holds
    # every index exactly, and each chunk's rows go to the device in one copy
    pics = torch.tensor([(sizes[k][0], sizes[k][1], starts[k], box.mirror, n) for n, (k, box) in enumerate(views)],
                        dtype=torch.float64)
    table = torch.cat([axes[:, :4], pics[:, :1], y0[:, None], axes[:, 4:], pics[:, 1:2], x0[:, None],
                       pics[:, 2:]], 1)
    flat = torch.cat([p.reshape(-1) for p in pictures])
    result = torch.empty((len(views), 3, out, out), dtype=torch.uint8, device=flat.device)
    for group in _chunks(ly.tolist(), lx.tolist()):
        g = torch.tensor(group)
        rows = to_device(table[g], flat.device)
        result.index_copy_(0, rows[:, 14].long(), _cut_chunk(flat, rows, int(ly[g].max()), int(lx[g].max()), out))
    return result


def _check(pictures: list[torch.Tensor], views: list[tuple[int, object]], out: int) -> None:
    """What :func:`cut_batch` assumes, checked on the host: a wrong picture would be read past its end."""
    for p in pictures:
        if p.dtype != torch.uint8 or p.dim() != 3 or p.shape[0] != 3:
            raise ValueError(f"a picture to cut is {p.dtype} {tuple(p.shape)}, not (3, h, w) uint8")
    if any(box.out != out for _, box in views):
        raise ValueError("the boxes of one batch differ in output size")


def _cut_chunk(flat: torch.Tensor, table: torch.Tensor, size_y: int, size_x: int, out: int) -> torch.Tensor:
    """One chunk of :func:`cut_batch`: its windows (``size_y`` x ``size_x``, the largest of the chunk) gathered
    from ``flat``, then ``Wy @ window @ Wx^T``. ``table``: :func:`cut_batch`'s (n, 14) table on the device."""
    device, mirror = flat.device, table[:, 13].bool()
    wy = _weights(table[:, 0:6].float(), torch.zeros_like(mirror), size_y, out)
    wx = _weights(table[:, 6:12].float(), mirror, size_x, out)
    ints = table.long()
    h, w, start = (ints[:, k, None, None, None] for k in (4, 10, 12))
    rows = ints[:, 5, None, None, None] + ints[:, 3, None, None, None] + torch.arange(size_y, device=device)[:, None]
    cols = ints[:, 11, None, None, None] + ints[:, 9, None, None, None] + torch.arange(size_x, device=device)
    plane = torch.arange(3, device=device)[None, :, None, None] * h * w
    index = start + plane + rows.clamp(0, None).minimum(h - 1) * w + cols.clamp(0, None).minimum(w - 1)
    dtype = _product_dtype(device)
    window = flat[index].to(dtype)  # (n, 3, size_y, size_x); pixels off a picture meet zero weights
    with torch.autocast(device.type, enabled=False):  # a caller's autocast would take these to 16 bits
        crops = wy.to(dtype)[:, None] @ window @ wx.to(dtype)[:, None].transpose(-1, -2)
    return crops.round_().to(torch.uint8)  # the weights sum to 1: whole numbers in 0..255


def _product_dtype(device: torch.device) -> torch.dtype:
    """float32, or float64 where float32 matmuls may run in TF32 (10 bits of mantissa, not enough for 8-bit
    pixels); the flag is the process's, so this thread reads it rather than changes it."""
    tf32 = torch.get_float32_matmul_precision() != "highest" or (
        device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)
    return torch.float64 if tf32 else torch.float32
