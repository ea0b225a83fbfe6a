"""The trainer's argparse front end for an emitted trainer's train.py (built from the option table in
options.py, which `resdsl train` turns into click options), and the torchrun launcher both share."""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys

from .loop import RunOptions
from .options import EMITTED_EXAMPLES, GROUPS, OPTIONS
from .rundir import CHECKPOINT
from .seeds import as_launcher, signal_name, without


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


SHUTDOWN_GRACE_S = 600


def relaunch_with_torchrun(nproc: int, module_args: list[str], run_dir: str | None = None) -> int:
    """Run ``python <module_args without --nproc>`` in ``nproc`` processes through torchrun's own engine
    (``torch.distributed.launcher``, as ``torchrun --standalone``); returns the exit status.

    The launcher is called in-process rather than as the ``torchrun`` command so that a worker's failure ends in
    that worker's own message (printed by rank 0) and its exit status, not in torchrun's traceback of the failure;
    a signal to the launcher (Ctrl-C, SIGTERM) is passed on to the workers, which checkpoint and stop, and ends in
    128 + its number. Each worker stops with the launcher if it is killed outright (seeds.as_launcher).
    ``run_dir``: the run's folder, for the resume hint after a worker was killed.
    """
    import tempfile
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args = without(module_args, ("--nproc",))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # stopped, a worker finishes its iteration (an evaluation on ImageNet takes minutes) and checkpoints before
    # torchrun's grace (30 s by default) ends in SIGKILL
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_GRACE_S))
    as_launcher()
    _quiet_elastic()
    logs = tempfile.TemporaryDirectory(prefix="resdsl-torchrun-", ignore_cleanup_errors=True)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, **_log_folder(logs.name))
    try:
        with logs:
            elastic_launch(config, sys.executable)(*args)
    except SignalException as exc:  # the workers had it too: rank 0 has said where their checkpoint is
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = {rank: f.exitcode for rank, f in exc.failures.items()}
        for line in _failure_lines(codes, nproc, run_dir):
            print(f"resdsl: error: {line}", file=sys.stderr)
        return next((c for c in codes.values() if c and c > 0), 1)
    return 0


def _log_folder(path: str) -> dict:
    """torchrun's own log folder (its workers' error files) in ``path``: by default it makes one in the temporary
    folder for each run and leaves it there. (torch before 2.3 has no such setting.)"""
    try:
        from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    except ImportError:
        return {}
    return {"logs_specs": DefaultLogsSpecs(log_dir=path)}


def _failure_lines(codes: dict[int, int], nproc: int, run_dir: str | None) -> list[str]:
    """What the launcher says of failed workers (rank -> exit code, negative for a signal): a worker that failed
    on its own has said why (rank 0 does), so only one killed by a signal is named. torchrun stops the others of
    a failed run with SIGTERM, so such deaths are not named beside a worker that failed or was killed otherwise."""
    causes = [r for r, c in codes.items() if c > 0 or (c < 0 and -c != signal.SIGTERM)]
    killed = [r for r, c in codes.items() if c < 0 and (r in causes or not causes)]
    lines = [f"process {r} of {nproc} was killed by {signal_name(-codes[r])}" for r in killed]
    if lines and run_dir and os.path.exists(os.path.join(run_dir, CHECKPOINT)):
        lines[-1] += f"; resume the run from its last checkpoint with --resume {shlex.quote(run_dir)} --nproc {nproc}"
    elif lines and run_dir:
        lines[-1] += f"; {run_dir} has no checkpoint yet"
    return lines


def _quiet_elastic() -> None:
    """A failed worker prints its own message, and the launcher says the rest once, in words: torchrun's own log
    lines (each of its modules' loggers has a level of its own) are not shown."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def end_worker(code: int) -> None:
    """In a worker of a multi-process run (torchrun's: WORLD_SIZE > 1), end the process now with ``code``, once
    the run is over (every file of it written and closed); elsewhere do nothing.

    Why not a normal exit: DistributedDataParallel keeps gloo's process group alive past destroy_process_group, so
    its threads outlive the run, and one that frees the last collective's work (the closing barrier's, holding
    tensors that have Python objects) while the interpreter tears down takes the GIL there, is ended by Python,
    and aborts the process ('terminate called without an active exception', SIGABRT: a finished run reported as
    killed). Measured: about one two-process CPU run in ten on a loaded 2-core machine; backtrace in
    ProcessGroupGloo::runLoop -> ~AsyncBarrierWork -> decref_pyobject -> take_gil -> pthread_exit."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
