"""Training benchmark on Debian's Fashion-MNIST (real data, offline).

CPU (default): ResNet-20 for 1 epoch with the CIFAR recipe of [R] scaled to that length (milestones at 50% and
75%); reports wall time, images/s and the final test error; then the data-path overhead: the trainer's time per
iteration against a bare forward+backward+SGD step of the same model on a ready batch.
GPU (`--full`): the accuracy check of the default (fast) path: the full 64k-iteration recipe for each --spec
(default ResNet-20), seeds 0 and 1 side by side (`--seeds 0,1`), in each --precision (bf16: --amp bf16
--channels-last; fp32), all runs at once; the final test error of each against [R]'s ResNet on Fashion-MNIST.
Usage: python benchmarks/train_fashion_mnist.py [--device cpu|cuda] [--full [--precision bf16,fp32]
       [--spec resnet20,...] [--data-dir DIR]] [--record]
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
    cmd = [sys.executable, "-m", "resdsl_cli", "train", spec, "--data", "fashion-mnist", "--device", device,
           "--quiet", "--out", str(out), *extra]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.perf_counter() - t
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    cfg = json.loads((out / "config.json").read_text())
    return wall, rows[-1], cfg["iterations"]


PRECISION_FLAGS = {"bf16": ["--amp", "bf16", "--channels-last"], "fp32": []}


def full_runs(args, tmp: str) -> list[str]:
    """Every (spec, precision) as one `resdsl train --seeds 0,1`, all started at once; a row per run."""
    procs = []
    for spec in args.spec.split(","):
        for prec in args.precision.split(","):
            out = Path(tmp) / f"{spec}-{prec}"
            cmd = [sys.executable, "-m", "resdsl_cli", "train", spec, "--data", "fashion-mnist", "--device",
                   args.device, "--quiet", "--no-download", "--seeds", "0,1", "--out", str(out),
                   *PRECISION_FLAGS[prec], *(["--data-dir", args.data_dir] if args.data_dir else [])]
            procs.append((spec, prec, out, subprocess.Popen(cmd, cwd=ROOT), time.perf_counter()))
    gpu = torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else args.device
    lines = [f"Device: {gpu}, torch {torch.__version__}.", "",
             "| network | precision | seed | stepping | final test error (%) | iterations | wall (s) |",
             "|---|---|---|---|---|---|---|"]
    for spec, prec, out, proc, start in procs:
        code, wall = proc.wait(), time.perf_counter() - start
        for seed in (0, 1):
            run_dir = out / f"seed-{seed}"
            try:
                last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
                cfg = json.loads((run_dir / "config.json").read_text())
                lines.append(f"| {spec} | {prec} | {seed} | {cfg.get('stepping', 'eager steps')} | "
                             f"{last['test_error']:.2f} | {last['iter']:,} of {cfg['iterations']:,} | {wall:.0f} |")
            except (OSError, ValueError, IndexError) as exc:
                lines.append(f"| {spec} | {prec} | {seed} | not measured: exit status {code} ({exc}) | | | |")
    return lines + ["", f"{len(procs) * 2} runs at once on one device; wall = the whole `--seeds 0,1` command."]


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
    ap.add_argument("--precision", default="bf16,fp32", help="--full: bf16 (with channels_last), fp32, or both")
    ap.add_argument("--spec", default="resnet20", help="--full: comma-separated networks (default resnet20)")
    ap.add_argument("--data-dir", help="folder with Fashion-MNIST's IDX files (default: where resdsl finds them)")
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
            lines += full_runs(args, tmp)
    body = "\n".join(lines)
    print(body)
    if args.record:
        from _record import record

        what = ("full 64k-iteration recipe, default path, {} (issue 10)" if args.full else "1 epoch, {} (issue 5)")
        record(f"Training on Fashion-MNIST, {what.format(args.device)}",
               "python benchmarks/train_fashion_mnist.py " + " ".join(sys.argv[1:]), body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
