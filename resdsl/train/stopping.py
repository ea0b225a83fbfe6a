"""How a run is asked to stop: SIGINT, SIGTERM, SIGUSR1 or SIGUSR2 (Ctrl-C, a scheduler, a launcher that died,
a cluster's warning before a time limit) or, for runs in threads of one process, :func:`stop_all`, turned into a
flag the loop reads after each iteration; it then writes a checkpoint and stops. The processes of one run
(--nproc) agree on the iteration they stop after, so that their checkpoint and their shared figures are those of
one moment."""
from __future__ import annotations

import signal
import threading

import torch

from .seeds import release_launcher, stop_with_launcher
from .steps import reduce_on

# runs of several processes share their stop requests every this many iterations on a GPU (a collective read on
# the host: a sync, which the loop otherwise makes only at its log points); on a CPU after every iteration
CUDA_STOP_EVERY = 8

# what asks a run to stop: Ctrl-C, SIGTERM (a scheduler, kill), and the user signals a cluster sends ahead of a
# time limit or a preemption (submitit asks Slurm for SIGUSR2 90 s before the end; others use SIGUSR1), whose
# default action would end the run without a checkpoint
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
                     if hasattr(signal, name))

_SIGNALLED: list[str] = []  # runs in threads of one process (--seed-runs threads): the signal the process got


def stop_all(name: str) -> None:
    """Ask every run of this process to checkpoint and stop after its current iteration (for ``name``, a signal's
    name): how the main thread passes a signal on to runs in other threads, which cannot take signals."""
    _SIGNALLED.append(name)


class Stop:
    """Turns STOP_SIGNALS (or :func:`stop_all`) into a flag the loop checks after each iteration."""

    def __init__(self):
        self._own = None
        self._old = {}
        self._holding = False

    @property
    def requested(self) -> str | None:
        return self._own or (_SIGNALLED[-1] if _SIGNALLED else None)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            _SIGNALLED.clear()  # a signal meant for earlier runs of this process is not this run's
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        if self._old and stop_with_launcher():
            self._own = "SIGTERM"  # the launcher that started this run is gone
        return self

    def _handle(self, signum, frame):
        self._own = signal.Signals(signum).name

    def __exit__(self, *exc):
        if self._old:
            release_launcher()
        for sig, old in self._old.items():
            signal.signal(sig, signal.SIG_IGN if self._holding else old)

    def hold(self) -> None:
        """This process of several stops: from here on it takes no signal (torchrun sends SIGTERM to the processes
        still running as soon as one has ended, which would cut rank 0 short of its records and its message)."""
        self._holding = True

    def agreed(self, done: int, device: torch.device, world: int) -> str | None:
        """After ``done`` iterations: the signal to stop for, or None to go on. Alone, this run's own request. Of
        several processes, each may get a signal at another moment (or only one of them gets it), and one that
        stopped alone would leave the others waiting in the next step's collective: so every CUDA_STOP_EVERY
        iterations (every iteration on a CPU) they all share their requests, at the same iterations, and all stop
        after the same one, for the strongest signal asked (SIGTERM over SIGINT)."""
        if world == 1:
            return self.requested
        if device.type != "cpu" and done % CUDA_STOP_EVERY:
            return None
        asked = torch.tensor([signal.Signals[self.requested].value if self.requested else 0], dtype=torch.int64,
                             device=reduce_on(device))
        torch.distributed.all_reduce(asked, op=torch.distributed.ReduceOp.MAX)
        number = int(asked.item())
        return signal.Signals(number).name if number else None
