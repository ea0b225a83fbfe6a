"""The IDX file format of MNIST and Fashion-MNIST: :func:`read_idx` (gzip-compressed or raw, unsigned bytes only,
refusing a header that promises more than :data:`MAX_IDX_BYTES` or ``RESDSL_MAX_IDX_BYTES`` before inflating it)
and the look-ups for a folder holding the four IDX files of a dataset. Imports nothing from the rest of resdsl:
it is shipped beside emitted trainers.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import torch

from .dataerror import DataError, one_line

MAX_IDX_BYTES = 2**31  # default of RESDSL_MAX_IDX_BYTES; a 60,000-image MNIST set is 47 MB
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float",
              0x0E: "double"}


def read_idx(path: str) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzip-compressed or raw): the format of MNIST and Fashion-MNIST.

    The header is a magic number (0, 0, type code 0x08, number of dimensions) and the dimensions as
    big-endian 32-bit integers; the data follows, row-major. Raises :class:`DataError` on anything else.
    """
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as fh:
            data, extra = _read_idx_bytes(fh, path)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; point --data-dir at the folder holding the IDX files") from None
    except PermissionError as exc:  # the file is whole; only this user may not read it
        raise DataError(f"cannot read {path} ({exc.strerror}): let this user read it, or point --data-dir at a "
                        "copy it can read") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path} ({one_line(exc)}): the file is truncated or corrupt. Delete it and "
                        "download it again, or point --data-dir at a good copy") from None
    bad = (f"{path} is truncated or corrupt: not an IDX file of unsigned bytes (bad magic number). Delete it and "
           "download it again, or point --data-dir at a good copy")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(bad)
    if data[2] != 0x08:
        kind = _IDX_TYPES.get(data[2])
        if kind is None:
            raise DataError(bad)
        raise DataError(f"{path} is an IDX file of {kind}s; only unsigned bytes (type 0x08, as in MNIST) are "
                        "read (bad magic number for this purpose)")
    ndim = data[3]
    if not 1 <= ndim <= 4:
        raise DataError(f"{path} is truncated or corrupt: an IDX file with {ndim} dimensions (bad magic number)")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DataError(f"{path} is truncated or corrupt: the file ends inside its header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", bytes(data[4:start]))
    count = 1
    for d in dims:
        count *= d
    have = len(data) - start + extra
    if have != count:
        what = "is truncated" if have < count else f"has {have - count} bytes too many"
        raise DataError(f"{path} is truncated or corrupt: its header says {'x'.join(map(str, dims))} = {count} "
                        f"bytes of data, but it {what} ({have} bytes). Delete it and download it again, or point "
                        "--data-dir at a good copy")
    if count == 0:
        return torch.empty(dims, dtype=torch.uint8)
    return torch.frombuffer(data, dtype=torch.uint8, offset=start, count=count).reshape(dims)


def _read_idx_bytes(fh, path: str) -> tuple[bytearray, int]:
    """The header, then only as many bytes as the header promises (checked against :data:`MAX_IDX_BYTES` first),
    so that a small compressed file that inflates to gigabytes is refused before it is inflated; and how many bytes
    follow them (counted, not kept, up to 64 MiB)."""
    data = bytearray(fh.read(4))
    if len(data) == 4 and data[0] == data[1] == 0 and 1 <= data[3] <= 4:
        data += fh.read(4 * data[3])
        if len(data) == 4 + 4 * data[3]:
            count = 1
            for d in struct.unpack(f">{data[3]}I", bytes(data[4:])):
                count *= d
            limit = _max_idx_bytes()
            if count > limit:
                raise DataError(f"{path}: its header promises {count:,} bytes of images, more than the limit of "
                                f"{limit:,.0f} (set RESDSL_MAX_IDX_BYTES to raise it, inf for none); is it really an "
                                "IDX file?")
            data += fh.read(count)
            extra = 0
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                extra += len(chunk)
                if extra > 1 << 26:
                    break
            return data, extra
    return data, 0  # a header read short: read_idx says what is wrong with it


def _max_idx_bytes() -> float:
    raw = os.environ.get("RESDSL_MAX_IDX_BYTES", "").strip()
    try:
        return float(raw) if raw else MAX_IDX_BYTES
    except ValueError:
        raise DataError(f"RESDSL_MAX_IDX_BYTES={raw!r} is not a number of bytes (or inf)") from None


def find_idx(folder: str) -> dict | None:
    """The four IDX files in ``folder`` (each .gz or uncompressed), or None unless all four are there."""
    found = {}
    for key, stem in IDX_FILES.items():
        for cand in (stem + ".gz", stem):
            if os.path.isfile(os.path.join(folder, cand)):
                found[key] = os.path.join(folder, cand)
                break
    return found if len(found) == 4 else None


def check_partial_idx(name: str, places: list[str]) -> None:
    """A folder with some but not all four IDX files is a mistake to report, not a reason to look elsewhere."""
    for folder in places:
        have = [stem for stem in IDX_FILES.values() if any(os.path.isfile(os.path.join(folder, stem + ext))
                                                      for ext in (".gz", ""))]
        if 0 < len(have) < len(IDX_FILES):
            missing = [stem + "[.gz]" for stem in IDX_FILES.values() if stem not in have]
            raise DataError(f"{name}: {folder} holds {len(have)} of the 4 IDX files; {', '.join(missing)} "
                            "is missing. Complete the folder or point --data-dir at a complete copy")
