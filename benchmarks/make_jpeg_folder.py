"""Generate an ImageNet-layout folder of realistic JPEGs for data-path benchmarks (ROOT/train/cNNN/*.jpg and
ROOT/val/cNNN/*.jpg).

Each image is random and smooth at large scales with finer detail and a little pixel noise on top (octaves of
random colour fields, bicubically enlarged), saved at JPEG quality 90: about 500x375 pixels and 100-150 KB,
which is what a typical ImageNet photograph costs to read and decode. Images are made in parallel processes,
deterministically from their index; a finished folder holds a `.complete` marker and is reused as it is.
Usage: python benchmarks/make_jpeg_folder.py ROOT [--train N] [--val N] [--classes N] [--size 500x375]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = ".complete"


def image(index: int, size: tuple[int, int]) -> Image.Image:
    """A random, smooth-with-detail RGB image, the same for the same index."""
    w, h = size
    rng = np.random.default_rng(index)
    acc = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 90.0), (16, 45.0), (64, 30.0), (250, 28.0)):  # coarse to fine octaves
        small = rng.normal(0.0, 1.0, (max(2, cells * h // w), cells, 3)).astype(np.float32)
        field = Image.fromarray(np.uint8(np.clip(128 + 60 * small, 0, 255)), "RGB").resize((w, h), Image.BICUBIC)
        acc += (np.asarray(field, np.float32) - 128) * (amp / 60)
    acc += rng.normal(0.0, 10.0, acc.shape).astype(np.float32)
    return Image.fromarray(np.uint8(np.clip(128 + acc, 0, 255)), "RGB")


def _write(job) -> int:
    path, index, size = job
    tmp = path + ".tmp"
    image(index, size).save(tmp, "JPEG", quality=90)
    os.replace(tmp, path)
    return os.path.getsize(path)


def _jobs(root: Path, train: int, val: int, classes: int, size):
    jobs = []
    for part, count, offset in (("train", train, 0), ("val", val, 10**8)):
        for i in range(count):
            folder = root / part / f"c{i % classes:03d}"
            jobs.append((str(folder / f"{part}_{i:07d}.jpg"), offset + i, size))
    return jobs


def make_folder(root, train: int = 20000, val: int = 1000, classes: int = 100, size=(500, 375),
                procs: int | None = None, quiet: bool = False) -> dict:
    """Make (or reuse) the folder; returns its description (counts, size, mean JPEG bytes)."""
    root = Path(root)
    want = {"train": train, "val": val, "classes": classes, "size": list(size)}
    marker = root / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if {k: done.get(k) for k in want} == want:
            return done
    jobs = _jobs(root, train, val, classes, tuple(size))
    for part in ("train", "val"):
        for c in range(min(classes, train if part == "train" else val)):
            (root / part / f"c{c:03d}").mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(procs or os.cpu_count()) as pool:
        sizes = pool.map(_write, jobs, chunksize=64)
    done = dict(want, mean_bytes=round(sum(sizes) / max(1, len(sizes))), seconds=round(time.perf_counter() - t, 1))
    marker.write_text(json.dumps(done))
    if not quiet:
        print(f"made {len(jobs)} JPEGs in {root} in {done['seconds']} s, mean {done['mean_bytes'] / 1000:.0f} KB")
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--size", default="500x375", help="WIDTHxHEIGHT")
    ap.add_argument("--procs", type=int, default=None)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    print(json.dumps(make_folder(args.root, args.train, args.val, args.classes, (w, h), args.procs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
