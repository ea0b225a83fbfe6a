"""How benchmarks/gpu_train.py runs `resdsl train` and reads its timings: one command in its own process group
under a time limit, and the least-squares split of metrics rows into a step's time and an evaluation's."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FULL, FULL_EVALS = 64000, 137  # the recipe's length; evaluations of a default 64k run at batch 128
QUICK_BATCH, QUICK_EVERY, QUICK_TEST = 8, 4, 32


class NotMeasured(Exception):
    """A figure that could not be measured; the message says why."""


def rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def run(cmd: list[str], log: Path, timeout: float) -> float:
    """Run ``cmd`` (output to ``log``) in its own process group; its wall time, or NotMeasured."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except BaseException as exc:  # the time limit, or Ctrl-C: the run and every process it started go
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise NotMeasured(f"stopped at the {timeout:.0f} s time limit") from None
            raise
    wall = time.perf_counter() - start
    if code:
        tail = log.read_text(errors="replace").strip().splitlines() or [""]
        print("\n".join(tail[-12:]), file=sys.stderr)
        raise NotMeasured(f"exit status {code}: {tail[-1][:160]}")
    return wall


def fit(rows: list[tuple[int, float]]) -> tuple[float, float]:
    """(t per iteration, c per evaluation + checkpoint) from metrics rows (iteration, seconds): the first two
    intervals dropped, least squares of d = L*t + c over the intervals between the later rows."""
    pts = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(rows[1:], rows[2:])]  # from the 2nd row: L = E, E, E/2
    if len({n for n, _ in pts}) < 2:
        raise NotMeasured(f"{len(rows)} evaluation rows cannot separate steps from evaluations")
    ml, md = statistics.mean(n for n, _ in pts), statistics.mean(d for _, d in pts)
    t = sum((n - ml) * (d - md) for n, d in pts) / sum((n - ml) ** 2 for n, _ in pts)
    if t <= 0:
        raise NotMeasured(f"inconsistent timings (intervals {pts})")
    return t, md - t * ml


def measure(out: Path, wall: float, iters: int) -> dict:
    try:
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise NotMeasured(f"no metrics.jsonl in {out} ({exc})") from None
    failed = [line for log in sorted(out.rglob("train.log")) for line in log.read_text(errors="replace").splitlines()
              if "capture" in line and "failed" in line]
    if failed:  # the run stepped (or evaluated) eagerly: not the figure of the loop it was started with
        raise NotMeasured(failed[0].split("note: ", 1)[-1][:200])
    t, c = fit([(r["iter"], r["seconds"]) for r in rows])
    m = {"t": t, "c": c, "wall": wall, "iters": iters, "evals": len(rows)}
    m["est"] = wall + (FULL - iters) * t + (FULL_EVALS - len(rows)) * c  # meant for Fashion-MNIST at batch 128
    return m


def train(spec: str, args, tag: str, every: int, extra: list[str], seeds: int = 0) -> tuple[float, Path, int]:
    """One `resdsl train` run (or --seeds 0-N) of 4.5 evaluation intervals: (wall time, run folder, iterations)."""
    out, iters = args.work / tag, every * 4 + every // 2
    print(f"  {tag}: {iters} iterations ...", flush=True)
    cmd = [sys.executable, "-m", "resdsl_cli", "train", spec, "--device", args.device, "--quiet", "--out",
           str(out), "--iters", str(iters), "--eval-every", str(every), *extra]
    return run(cmd + (["--seeds", f"0-{seeds - 1}"] if seeds else []), args.work / f"{tag}.log", args.timeout), \
        out, iters


def can_train(args) -> None:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise NotMeasured("no CUDA GPU visible to PyTorch")
    if importlib.util.find_spec("resdsl_cli") is None:
        raise NotMeasured("resdsl is not installed (pip install -e '.[train]')")


def fmnist(args) -> list[str]:
    """Fashion-MNIST options; NotMeasured unless `resdsl train` can run here with them."""
    can_train(args)
    extra = ["--data", "fashion-mnist", "--no-download"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    extra += ["--batch-size", str(QUICK_BATCH), "--test-subset", str(QUICK_TEST)] if args.quick else []
    if not args.warm:  # once: the data are there; a fresh machine's one-off caches (CUDA kernels, fonts) filled
        from resdsl.train.data import DataError, load_dataset

        try:
            load_dataset("fashion-mnist", args.data_dir, download=False)
        except DataError as exc:
            raise NotMeasured(f"no Fashion-MNIST: {str(exc).split('. ')[0][:150]}") from None
        args.warm = True
        # 12 iterations, an evaluation every 4: the warm-up run captures its step and evaluation graphs as the timed
        # runs will (after 3 eager iterations; the 2nd evaluation), so no one-off cost of a first capture is timed
        run([sys.executable, "-m", "resdsl_cli", "train", "resnet20", "--device", args.device, "--quiet", "--out",
             str(args.work / "warm-up"), "--iters", "12", "--eval-every", "4", "--test-subset", "256", *extra],
            args.work / "warm-up.log", args.timeout)
    return extra
