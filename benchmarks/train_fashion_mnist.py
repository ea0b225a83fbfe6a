"""Training benchmark on Debian's Fashion-MNIST (real data, offline).

CPU (default): ResNet-20 for 1 epoch with the CIFAR recipe of [R] scaled to that length (milestones at 50% and
75%); reports wall time, images/s and the final test error; then the data-path overhead: the trainer's time per
iteration against a bare forward+backward+SGD step of the same model on a ready batch.
GPU (`--full`): the full 64k-iteration recipe for ResNet-20 and ResNet-56, 2 seeds each.
Usage: python benchmarks/train_fashion_mnist.py [--device cpu|cuda] [--full] [--record]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run(spec: str, device: str, extra: list[str], out: Path) -> tuple[float, dict, int]:
    cmd = [sys.executable, "-m", "resdsl_cli.main", "train", spec, "--data", "fashion-mnist", "--device", device,
           "--quiet", "--out", str(out), *extra]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.perf_counter() - t
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    cfg = json.loads((out / "config.json").read_text())
    return wall, rows[-1], cfg["iterations"]


def bare_step_time(spec: str, device: str, batch: int, steps: int = 20) -> float:
    import resdsl

    model = resdsl.build_model(spec, num_classes=10, in_channels=1, input_size=(28, 28)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for i in range(steps + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="the full 64k-iteration recipe (GPU)")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.full:
            out = Path(tmp) / "r20"
            # evaluate once, at the end, so the timing is training plus one test pass
            wall, last, iters = run("specs/resnet20.res", args.device, ["--epochs", "1", "--eval-every", "100000"],
                                    out)
            per_iter = last["seconds"] / iters
            bare = bare_step_time(str(ROOT / "specs/resnet20.res"), args.device, 128)
            lines += ["| model | data | iterations | wall (s) | images/s | final test error (%) |",
                      "|---|---|---|---|---|---|",
                      f"| ResNet-20 | Fashion-MNIST, 1 epoch, batch 128 | {iters} | {wall:.1f} | "
                      f"{iters * 128 / last['seconds']:.0f} | {last['test_error']:.2f} |", "",
                      f"Data path: {per_iter * 1000:.1f} ms per trainer iteration (including one final test pass) "
                      f"vs {bare * 1000:.1f} ms for a bare forward+backward+SGD step on a ready batch: overhead "
                      f"{100 * (per_iter / bare - 1):+.1f}%."]
        else:
            lines += ["| model | seed | final test error (%) | wall (s) |", "|---|---|---|---|"]
            for spec in ("specs/resnet20.res", "specs/resnet56.res"):
                errs = []
                for seed in (0, 1):
                    out = Path(tmp) / f"{Path(spec).stem}-{seed}"
                    wall, last, _ = run(spec, args.device, ["--seed", str(seed), "--eval-every", "4000",
                                                            "--channels-last", "--amp", "bf16"], out)
                    errs.append(last["test_error"])
                    lines.append(f"| {Path(spec).stem} | {seed} | {last['test_error']:.2f} | {wall:.0f} |")
                lines.append(f"| {Path(spec).stem} | mean | {statistics.mean(errs):.2f} | |")
    body = "\n".join(lines)
    print(body)
    if args.record:
        from _record import record

        what = "full 64k-iteration recipe" if args.full else "1 epoch"
        record(f"Training on Fashion-MNIST, {what}, {args.device} (issue 5)",
               f"python benchmarks/train_fashion_mnist.py --device {args.device}{' --full' if args.full else ''} "
               "--record", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
