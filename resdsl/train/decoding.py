"""Image files' bytes to decoded pictures (issue 10): JPEGs by nvJPEG on a CUDA GPU in one batched call, PNGs by PIL
(to the pixels torchvision gives), everything else on the CPU by torchvision's decoders, then PIL for the formats
they lack; a file nothing can decode is a DataError that names it. Imports nothing from the rest of resdsl but its
data errors and file reading: it is shipped beside emitted trainers.
"""
from __future__ import annotations

import contextlib
import threading

import torch

from .dataerror import DataError
from .fileio import read_regular


def read_bytes(path: str) -> torch.Tensor:
    """A file's bytes as a uint8 tensor (a DataError names a file that cannot be read, or that is no regular file:
    a named pipe would block the reading worker for ever)."""
    try:
        data = read_regular(path)
    except OSError as exc:
        raise DataError(f"cannot read the image {path} ({exc.strerror or exc}); remove or replace the file") from None
    if not data:  # torch.frombuffer refuses an empty buffer
        raise DataError(f"cannot read the image {path} (the file is empty); remove or replace the file")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _is_whole_jpeg(data: torch.Tensor) -> bool:
    """A JPEG's start (SOI) and end (EOI) markers: nvJPEG may decode a truncated file into a picture without an
    error, so one cut short (or with bytes after its end) is decoded on the CPU, which names it if it is broken."""
    n = data.numel()
    return n > 3 and (data[0].item(), data[1].item(), data[n - 2].item(), data[n - 1].item()) == (0xFF, 0xD8,
                                                                                                   0xFF, 0xD9)


def decode(datas: list[torch.Tensor], paths: list[str], device) -> list[torch.Tensor]:
    """(3, h, w) uint8 RGB pictures on ``device`` from encoded files: JPEGs on a CUDA device in one batched
    ``decode_jpeg`` call (nvJPEG), everything else on the CPU (torchvision's decoders, then PIL for the formats
    they lack); a file nothing can decode is a DataError that names it."""
    device = torch.device(device)
    out: list = [None] * len(datas)
    if device.type == "cuda":
        from torchvision.io import ImageReadMode, decode_jpeg

        # nvJPEG's hardware decoder writes its outputs before the work already queued on its stream has run
        # (pytorch/vision#9606): handed a block that queued kernels still read, it overwrites their data (NaN
        # losses in a sync-free loop). So nothing may be queued on this stream when it decodes.
        torch.cuda.current_stream(device).synchronize()
        jpegs = [k for k, d in enumerate(datas) if _is_whole_jpeg(d)]
        try:
            for k, img in zip(jpegs, decode_jpeg([datas[k] for k in jpegs], mode=ImageReadMode.RGB, device=device)):
                out[k] = img
        except (RuntimeError, ValueError):  # a CMYK or broken JPEG, say: each on the CPU, which names the culprit
            pass
    for k, img in enumerate(out):
        if img is None:
            out[k] = _decode_on_cpu(datas[k], paths[k]).to(device, non_blocking=True)
    return out


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PIL_LIMITS = threading.Lock()  # held while PIL's module-wide limits are lifted for a PNG (see _decode_png)


def _decode_on_cpu(data: torch.Tensor, path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    if bytes(data[:8].tolist()) == PNG_SIGNATURE:
        return _decode_png(data, path)
    try:
        return _as_uint8(decode_image(data, mode=ImageReadMode.RGB))
    except (RuntimeError, ValueError):
        return _decode_with_pil(data, path)


def _as_uint8(picture: torch.Tensor) -> torch.Tensor:
    """torchvision's decoded picture as (3, h, w) uint8."""
    if picture.dim() == 4:  # the frames of an animated GIF: the first, as PIL shows it
        picture = picture[0]
    if picture.dtype != torch.uint8:  # a 16-bit PNG comes as uint16 (0-65535): its 8 high bits (PIL would clip)
        from torchvision.transforms.v2.functional import to_dtype

        picture = to_dtype(picture, torch.uint8, scale=True)
    return picture


def _decode_png(data: torch.Tensor, path: str) -> torch.Tensor:
    """A PNG by PIL: torchvision's PNG decoder ends the process (SIGSEGV, not an error) on a broken file, libpng's
    error jumping out of C++ frames. PIL's size limits (pictures over 89M pixels warned of, over 179M refused; text
    chunks over 1 MB) are lifted for it, as torchvision has none: a file it decoded still decodes."""
    from PIL import Image, PngImagePlugin

    with _PIL_LIMITS, _lifted(Image, MAX_IMAGE_PIXELS=None), \
            _lifted(PngImagePlugin, MAX_TEXT_CHUNK=1 << 62, MAX_TEXT_MEMORY=1 << 62):
        return _decode_with_pil(data, path)


@contextlib.contextmanager
def _lifted(module, **values):
    """``module``'s settings as ``values`` for the block, then as they were."""
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def _decode_with_pil(data: torch.Tensor, path: str) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I"):  # 16-bit grey: its 8 high bits (convert("RGB") would clip)
                high = torch.from_numpy(np.asarray(img, dtype=np.int64) >> 8).clamp(0, 255).to(torch.uint8)
                return high.expand(3, *high.shape).contiguous()
            if img.mode == "P" and "transparency" in img.info:  # as torchvision: the palette's colours (by
                img = img.convert("RGBA")                        # RGBA, which PIL does without a warning)
            return pil_to_tensor(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        why = "not an image file, or a kind PIL does not know" if "cannot identify" in str(exc) else exc
        raise DataError(f"cannot decode the image {path} ({why}); remove or replace the file") from None
