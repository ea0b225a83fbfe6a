"""Command-line flags of the trainer, defined once: `resdsl train` and an emitted trainer's train.py share them."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from .loop import RunOptions


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def make_parser(prog: str, with_spec: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train with the recipe the spec names (every recipe field "
                                "can be overridden by a flag).")
    if with_spec:
        p.add_argument("spec", nargs="?", help="the spec file (optional with --resume)")
    d = p.add_argument_group("data")
    d.add_argument("--data", help="cifar10, cifar100, fashion-mnist, mnist, synthetic, or an ImageNet-layout folder "
                   "(train/, val/); default: the recipe's dataset")
    d.add_argument("--data-dir", help="where datasets are (or are downloaded to)")
    d.add_argument("--no-download", action="store_true", help="never download; fail if the data is not local")
    d.add_argument("--train-subset", type=_positive_int, metavar="N", help="train on the first N images only")
    d.add_argument("--test-subset", type=_positive_int, metavar="N", help="evaluate on the first N test images only")
    d.add_argument("--workers", type=int, default=4, help="DataLoader workers for image folders (default 4)")
    r = p.add_argument_group("recipe overrides")
    r.add_argument("--iters", type=_positive_int, help="train for N iterations (milestones scale with it)")
    r.add_argument("--epochs", type=_positive_int, help="train for N epochs (milestones scale with it)")
    r.add_argument("--batch-size", type=_positive_int, help="global batch size")
    r.add_argument("--lr", type=_positive_float, help="base learning rate")
    x = p.add_argument_group("run")
    x.add_argument("--out", help="run directory (default runs/<spec>-<time>/)")
    x.add_argument("--resume", metavar="RUNDIR", help="continue a stopped run exactly where it stopped")
    x.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    x.add_argument("--amp", choices=["bf16", "none"], default=None, help="bf16 autocast (no loss scaling needed)")
    x.add_argument("--channels-last", action="store_true")
    x.add_argument("--compile", action="store_true", help="torch.compile the model")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--deterministic", action="store_true", help="deterministic algorithms only (bitwise resume)")
    x.add_argument("--eval-every", type=_positive_int, metavar="N", help="evaluate every N iterations")
    x.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help="checkpoint every N iterations (default: at each evaluation)")
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    x.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes")
    x.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="launch N processes with torchrun (DistributedDataParallel)")
    return p


def options_from(ns: argparse.Namespace, name: str) -> RunOptions:
    return RunOptions(data=ns.data, data_dir=ns.data_dir, out=ns.out, resume=ns.resume, device=ns.device,
                      amp=ns.amp, channels_last=ns.channels_last, compile=ns.compile, seed=ns.seed,
                      deterministic=ns.deterministic, iters=ns.iters, epochs=ns.epochs,
                      train_subset=ns.train_subset, test_subset=ns.test_subset, batch_size=ns.batch_size, lr=ns.lr,
                      eval_every=ns.eval_every, checkpoint_every=ns.checkpoint_every, quiet=ns.quiet,
                      sync_bn=ns.sync_bn, workers=ns.workers, download=not ns.no_download, name=name)


def relaunch_with_torchrun(nproc: int, module_args: list[str]) -> int:
    """Run ``python -m torch.distributed.run --nproc_per_node N <module_args without --nproc>``."""
    args, skip = [], False
    for a in module_args:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.call(cmd, env=env)
