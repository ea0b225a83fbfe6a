"""How near the batched cut (resdsl/train/cuts.py, the GPU path of image-folder batches) comes to torchvision's
float resize, on many pictures at ImageNet's sizes (issue 10): the share of pixels one level off (a value at an
exact half rounded the other way after another summation order) and the largest difference, for [R]'s scale
augmentation and for 10-crop test views. An accuracy check, not a timing: it runs on the CPU (`--device cuda`
checks the GPU's arithmetic the same way).

    python benchmarks/cut_accuracy.py [--pictures 64] [--device cpu|cuda] [--record]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _record import record  # noqa: E402
from reference import torchvision_cut  # noqa: E402  (the tests' reference of the cut)

from resdsl.train import cuts  # noqa: E402
from resdsl.train.images import draw, plan_from, test_boxes, train_box  # noqa: E402

SCALE = [{"kind": "scale", "min": 256, "max": 480, "crop": 224}]  # flips come after the cut (images.finish)


def compare(pictures, views, device) -> tuple[float, int, int]:
    """(share of pixels off, largest difference, pixels compared)."""
    crops = cuts.cut_batch([p.to(device) for p in pictures], views).cpu().int()
    reference = torch.stack([torchvision_cut(pictures[k], b) for k, b in views]).int()
    off = (crops - reference).abs()
    return (off > 0).float().mean().item(), int(off.max()), off.numel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pictures", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--record", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    pictures = [torch.randint(0, 256, (3, 375, 500) if k % 2 else (3, 500, 375), dtype=torch.uint8, generator=gen)
                for k in range(args.pictures)]
    plan = plan_from(SCALE, crop=224)
    cases = {
        "[R] scale augmentation (shorter side 256-480, 224 crop)":
            [(k, train_box(plan, draw(k), *p.shape[1:])) for k, p in enumerate(pictures)],
        "10-crop (shorter side 256, 224 crops)":
            [(k, b) for k, p in enumerate(pictures) for b in test_boxes(*p.shape[1:], 224, 256, True)],
    }
    lines = [f"{args.pictures} random-noise pictures of 500x375 and 375x500, uint8, on {args.device}", "",
             "| views | crops | pixels one level off | largest difference |", "|---|---|---|---|"]
    for name, views in cases.items():
        share, largest, _ = compare(pictures, views, args.device)
        lines.append(f"| {name} | {len(views):,} | {share:.2e} | {largest} |")
    print("\n".join(lines))
    if args.record:
        record(f"Batched cuts against torchvision, {args.device} (issue 10)",
               f"python benchmarks/cut_accuracy.py --pictures {args.pictures} --device {args.device} --record",
               "\n".join(lines))


if __name__ == "__main__":
    main()
