"""Command-line flags of the trainer, defined once: `resdsl train` and an emitted trainer's train.py share them."""
from __future__ import annotations

import argparse
import os
import sys

from .loop import MAX_LR, MAX_SEED, RunOptions


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _seed(text: str) -> int:
    value = _count(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SEED} (2**63 - 1), got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 < value <= MAX_LR:
        raise argparse.ArgumentTypeError(f"must be a positive number up to {MAX_LR:g}, got {text}")
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
    d.add_argument("--workers", type=_count, default=4, help="DataLoader workers for image folders (default 4)")
    r = p.add_argument_group("recipe overrides")
    r.add_argument("--iters", type=_positive_int, help="train for N iterations (milestones scale with it)")
    r.add_argument("--epochs", type=_positive_int, help="train for N epochs (milestones scale with it)")
    r.add_argument("--batch-size", type=_positive_int, help="global batch size")
    r.add_argument("--lr", type=_positive_float, help="base learning rate")
    x = p.add_argument_group("run")
    x.add_argument("--out", help="run directory (default runs/<spec>-<time>/); it must be new or empty")
    x.add_argument("--overwrite", action="store_true", help="replace the previous run's files in --out")
    x.add_argument("--resume", metavar="RUNDIR", help="continue a stopped run exactly where it stopped")
    x.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    x.add_argument("--amp", choices=["bf16", "none"], default=None, help="bf16 autocast (no loss scaling needed)")
    x.add_argument("--channels-last", action="store_true")
    x.add_argument("--compile", action="store_true", help="torch.compile the model")
    x.add_argument("--seed", type=_seed, help="random seed (default 0; on --resume, the run's own)")
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
                      deterministic=ns.deterministic, overwrite=ns.overwrite, iters=ns.iters, epochs=ns.epochs,
                      train_subset=ns.train_subset, test_subset=ns.test_subset, batch_size=ns.batch_size, lr=ns.lr,
                      eval_every=ns.eval_every, checkpoint_every=ns.checkpoint_every, quiet=ns.quiet,
                      sync_bn=ns.sync_bn, workers=ns.workers, download=not ns.no_download, name=name)


def relaunch_with_torchrun(nproc: int, module_args: list[str]) -> int:
    """Run ``python <module_args without --nproc>`` in ``nproc`` processes through torchrun's own engine
    (``torch.distributed.launcher``, as ``torchrun --standalone``); returns the exit status.

    The launcher is called in-process rather than as the ``torchrun`` command so that a worker's failure ends in
    that worker's own message (printed by rank 0) and its exit status, not in torchrun's traceback of the failure.
    """
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args = _without_nproc(module_args)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        return next((c for c in codes if c and c > 0), 1)
    return 0


def _without_nproc(module_args: list[str]) -> list[str]:
    args, skip = [], False
    for a in module_args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    return args
