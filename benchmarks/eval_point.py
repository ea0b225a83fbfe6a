"""What the host spends at a run's evaluation points (issue 10): a default 64k-iteration ResNet-20 run stops 137
times to evaluate, record and checkpoint, and on a GPU that cost (c in gpu_train.py, ~0.35 s each on an H100)
was a third of the run. This times the host's parts of it without a GPU:

 records     137 `MetricsLog.write` calls (metrics.jsonl with fsync, TensorBoard, curves.png) with curves.png
             drawn at every evaluation (PLOT_EVERY_S = 0, as before this change) and as the loop draws it now
             (at the first evaluation, then at most every PLOT_EVERY_S seconds, and once at close);
 checkpoint  the loop's `save_checkpoint` of ResNet-20 with its SGD state (finiteness check, torch.save, atomic write),
             mean of 20.

Run folders go to /dev/shm when it exists (no disk stalls, as gpu_train.py). Usage:

    python benchmarks/eval_point.py [--record]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402

EVALS = 137  # evaluations of a default 64k run at batch 128 (one per epoch)
ROW = {"lr": 0.1, "train_loss": 0.5, "train_error": 12.0, "test_loss": 0.6, "test_error": 9.0,
       "test_top5_error": 0.5, "seconds": 1.0}


def _records(folder: str, every_s: float) -> float:
    from resdsl.train import metrics

    saved, metrics.PLOT_EVERY_S = metrics.PLOT_EVERY_S, every_s
    try:
        log = metrics.MetricsLog(folder)
        log.write({"iter": 0, "epoch": 0.0, **ROW})  # imports matplotlib and TensorBoard: not a per-point cost
        start = time.perf_counter()
        for k in range(1, EVALS + 1):
            log.write({"iter": 391 * k, "epoch": float(k), **ROW})
        log.close()
        return time.perf_counter() - start
    finally:
        metrics.PLOT_EVERY_S = saved


def _checkpoint(folder: str, n: int = 20) -> float:
    import resdsl as rd
    from resdsl.train.loop import save_checkpoint

    model = rd.build_model("resnet20", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model(torch.randn(8, 3, 32, 32)).sum().backward()
    opt.step()  # momentum buffers exist, as in a running loop
    s = SimpleNamespace(rank=0, model=model, device=torch.device("cpu"), schedule=SimpleNamespace(state_dict=dict),
                        recipe={}, pipeline=None,
                        opts=SimpleNamespace(extra_config={"run_id": "bench"}))  # what save_checkpoint reads
    state = {"iter": 1, "elapsed": 0.0, "loss_sum": 0.0, "wrong": 0, "seen": 0, "recent_errors": []}
    path = str(Path(folder) / "checkpoint.pt")
    save_checkpoint(s, state, path, opt.state_dict())
    start = time.perf_counter()
    for _ in range(n):
        save_checkpoint(s, state, path, opt.state_dict())
    return (time.perf_counter() - start) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    from resdsl.train.metrics import PLOT_EVERY_S

    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as a, tempfile.TemporaryDirectory(dir=base) as b, \
            tempfile.TemporaryDirectory(dir=base) as c:
        every, now, ckpt = _records(a, 0.0), _records(b, PLOT_EVERY_S), _checkpoint(c)
    table = "\n".join([
        f"| host part of {EVALS} evaluation points (ResNet-20, 64k run) | total (s) | per point (ms) |",
        "|---|---|---|",
        f"| records, curves.png at every evaluation (before) | {every:.2f} | {every / EVALS * 1e3:.1f} |",
        f"| records, curves.png at most every {PLOT_EVERY_S:g} s and at the end (now) | {now:.2f} | "
        f"{now / EVALS * 1e3:.1f} |",
        f"| checkpoint (`save_checkpoint`: finiteness check, torch.save, atomic write) | {ckpt * EVALS:.2f} | "
        f"{ckpt * 1e3:.1f} |"])
    print(table)
    if args.record:
        record("Evaluation points, host side (issue 10)", "python benchmarks/eval_point.py --record",
               table + f"\n\nThe records ran in {EVALS} quick calls, so the timed curves.png was drawn about once "
               "(a 64k run spreads its points over minutes: about one drawing per PLOT_EVERY_S seconds).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
