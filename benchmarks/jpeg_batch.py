"""Where one image-folder batch's preparation goes on the GPU (issue 10): the parts of `images.make_batch`, each
timed alone on 256 JPEGs (mean of 3 after one warm-up, synchronised): nvJPEG's batched decode, the sample draws,
the 256 cuts (`images.cut_views`: on a GPU in one go, until 2026-11-23 a resize each),
flip/jitter/lighting/normalise, and the whole make_batch.

    python benchmarks/jpeg_batch.py FOLDER     # an ImageNet-layout folder, e.g. make_jpeg_folder.py's

It prints; RESULTS.md records what it printed on a GPU. Needs CUDA (`--device cpu` times the CPU path).
"""
import argparse
import glob
import os
import time

import torch

from resdsl.train.decoding import decode, read_bytes
from resdsl.train.images import cut_views, draw, finish, make_batch, plan_from, train_box

AUGMENT = [{"kind": "scale", "min": 256, "max": 480, "crop": 224}, {"kind": "flip"}, {"kind": "color"}]


def timed(name: str, fn, device, n: int = 3):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(n):
        out = fn()
    sync()
    print(f"{name}: {(time.perf_counter() - start) / n * 1e3:.1f} ms", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    paths = sorted(glob.glob(os.path.join(args.folder, "train", "*", "*.jpg")))[:args.batch]
    if len(paths) < args.batch:
        raise SystemExit(f"{args.folder}: fewer than {args.batch} JPEGs under train/<class>/")
    datas, view = [read_bytes(p) for p in paths], plan_from(AUGMENT, 224)
    pictures = timed(f"decode {args.batch}", lambda: decode(datas, paths, device), device)
    draws = timed(f"draws {args.batch}", lambda: [draw(s) for s in range(args.batch)], device)
    views = [(k, train_box(view, d, p.shape[1], p.shape[2])) for k, (d, p) in enumerate(zip(draws, pictures))]
    crops = timed(f"cut {args.batch}", lambda: cut_views(pictures, views), device)
    timed("finish", lambda: finish(crops, view, draws), device)
    timed("make_batch", lambda: make_batch(datas, paths, list(range(args.batch)), view, device), device)


if __name__ == "__main__":
    main()
