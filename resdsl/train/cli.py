"""The trainer's argparse front end for an emitted trainer's train.py (built from the option table in
options.py, which `resdsl train` turns into click options), and the torchrun launcher both share."""
from __future__ import annotations

import argparse
import os
import sys

from .loop import RunOptions
from .options import EMITTED_EXAMPLES, GROUPS, OPTIONS
from .seeds import without


def _argparse_type(parse):
    def convert(text):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__  # argparse names the type in its messages
    return convert


def make_parser(prog: str) -> argparse.ArgumentParser:
    """argparse options from the table, for an emitted trainer (which needs only torch)."""
    p = argparse.ArgumentParser(prog=prog, description="Train the network with its recipe (recipe.json); flags "
                                "override the recipe's length, batch size and learning rate.",
                                epilog=EMITTED_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for opt in OPTIONS:
        g = groups[opt.group]
        if opt.is_flag:
            g.add_argument(opt.flag, action="store_true", help=opt.help)
        else:
            g.add_argument(opt.flag, type=_argparse_type(opt.parse) if opt.parse else str, choices=opt.choices,
                           default=opt.default, metavar=opt.metavar, help=opt.help)
    return p


def options_from(values: dict, name: str) -> RunOptions:
    """RunOptions from parsed option values (argparse's ``vars(ns)`` or click's keyword arguments)."""
    fields = set(RunOptions.__dataclass_fields__)
    kw = {k: v for k, v in values.items() if k in fields}
    return RunOptions(**kw, download=not values.get("no_download"), name=name)


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

    args = without(module_args, ("--nproc",))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # a failed worker prints its own message; torchrun's log of the failure is said once below, in words
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as exc:
        codes = {rank: f.exitcode for rank, f in exc.failures.items()}
        for rank, code in codes.items():
            if code < 0:  # killed by a signal: the worker could say nothing itself
                print(f"resdsl: error: process {rank} of {nproc} was killed by {_signal_name(-code)}",
                      file=sys.stderr)
        return next((c for c in codes.values() if c and c > 0), 1)
    return 0


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
