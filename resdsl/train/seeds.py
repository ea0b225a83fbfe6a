"""`--seeds 0,1,2,3,4`: one run per seed, side by side, each a complete run of its own (``OUT/seed-N``: its own
config, checkpoint, metrics and exact resume with ``--resume OUT/seed-N``).

Each run is exactly the run that ``--seed N`` alone would make. Small CIFAR networks leave a GPU mostly idle, so
all seeds run at once. Separate processes of the same trainer (:func:`run_seeds`) are dealt out over several GPUs,
but on one GPU they take turns on it rather than share it (measured on an H100: five ResNet-20 runs as processes
3.7x one run's time, as threads 2.1x), so there the runs are threads of one process (:func:`run_in_threads`), each
on its own CUDA stream, whose kernels the GPU runs side by side (:func:`seed_runs_way` chooses). Imports nothing
from the rest of resdsl (it ships beside emitted trainers), and torch only in those threads.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from typing import Callable

from .rundir import CHECKPOINT, CONFIG, RunDirError, make_folder

SEEDS_FOLDER = "the folder of the seeds' runs"

# A run in a thread takes up to 3 of the 32 CUDA streams PyTorch deals out a GPU (its own, and the fast path's graph
# stream or an image folder's two data streams); more runs would share streams, and a stream being captured into a
# CUDA graph must be no other thread's (streams.py)
MAX_THREAD_RUNS = 10
# set by a launcher (run_seeds, `resdsl reproduce`) to its pid in each run's environment: see stop_with_launcher.
# Taken out of this process's environment as the trainer is imported, before it starts any process of its own
# (torchrun's workers, data-loader workers): only the launcher's direct child has a launcher to stop with.
LAUNCHER_ENV = "RESDSL_LAUNCHER_PID"
_LAUNCHER = [os.environ.pop(LAUNCHER_ENV, None)]
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def seed_runs_way(choice: str, gpus: int, dropout: bool, parallel: int | None, runs: int) -> str:
    """How ``--seed-runs CHOICE`` runs ``runs`` seeds: ``auto`` makes them threads on exactly one GPU (on an H100
    five ResNet-20 runs as threads took 2.1x one run's time, as processes 3.7x: benchmarks/RESULTS.md), unless the
    network has dropout or stochastic depth (its runs would share torch's generator), ``--parallel`` limits the
    runs at once or there are more than MAX_THREAD_RUNS; processes elsewhere (on several GPUs they are dealt out
    over them; on a CPU they share its cores)."""
    if choice != "auto":
        return choice
    threads = gpus == 1 and not dropout and not parallel and runs <= MAX_THREAD_RUNS
    return "threads" if threads else "processes"


def seed_dir(out: str, seed: int) -> str:
    return os.path.join(out, f"seed-{seed}")


def _make_seeds_folder(out: str) -> None:
    """OUT, the folder of the seeds' runs, made where it is not one yet; a run's own folder is refused (its seed-N
    folders would be files a run did not write, which its --overwrite refuses)."""
    if os.path.isfile(os.path.join(out, CONFIG)):
        raise RunDirError(f"cannot use {SEEDS_FOLDER} {out}: it holds a run ({CONFIG}); the seeds' runs go in a "
                          "folder of their own, choose another --out")
    make_folder(out, SEEDS_FOLDER)


def gpu_of(k: int, gpus: int) -> str:
    """CUDA_VISIBLE_DEVICES of the k-th run dealt over ``gpus`` GPUs: one of the GPUs this process may use (a
    CUDA_VISIBLE_DEVICES=2,3 of the user's: physical GPU 2 or 3, not 0 or 1)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[k % len(visible)] if len(visible) >= gpus else str(k % gpus)


def run_seeds(seeds: list[int], out: str, command_for: Callable[[int, str], list[str]], gpus: int = 0,
              parallel: int | None = None) -> int:
    """Run ``command_for(seed, OUT/seed-N)`` for every seed, ``parallel`` at a time (default: all), echoing each
    run's lines with a ``[seed N]`` prefix; returns 0 when every run succeeded, else the first failure's status.
    A SIGINT or SIGTERM is passed on to the running runs (each checkpoints and stops) and no further run starts."""
    _make_seeds_folder(out)  # a RunDirError, which the front ends say
    parallel = max(1, min(parallel or len(seeds), len(seeds)))
    threads = str(max(1, (os.cpu_count() or 1) // parallel))
    codes: dict[int, int] = {}
    pending = list(enumerate(seeds))
    running: list[tuple[int, subprocess.Popen, threading.Thread]] = []
    stopped: list[int] = []

    def handle(signum, frame):
        stopped.append(signum)
        for _, proc, _ in running:
            proc.send_signal(signum)

    from .stopping import STOP_SIGNALS  # (stopping imports this module)

    old = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        while (pending and not stopped) or running:
            while pending and not stopped and len(running) < parallel:
                k, seed = pending.pop(0)
                env = dict(os.environ)
                env.setdefault("OMP_NUM_THREADS", threads)  # the CPU's cores shared among the runs
                env[LAUNCHER_ENV] = str(os.getpid())
                if gpus > 1:
                    env["CUDA_VISIBLE_DEVICES"] = gpu_of(k, gpus)
                proc = subprocess.Popen(command_for(seed, seed_dir(out, seed)), env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, errors="replace")
                echo = threading.Thread(target=_echo, args=(proc, seed), daemon=True)
                echo.start()
                running.append((seed, proc, echo))
                if stopped:  # the signal came while this one was being started
                    proc.send_signal(stopped[0])
            seed, proc, echo = running[0]  # still in ``running`` while it is waited for: a signal must reach it
            codes[seed] = proc.wait()
            echo.join()
            running.pop(0)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return _summary(seeds, out, codes, stopped[0] if stopped else None)


def stop_with_launcher() -> bool:
    """In a run that a launcher started (LAUNCHER_ENV holds its pid): have the kernel send this process SIGTERM
    when the launcher dies, so that a launcher killed outright (SIGKILL, which it cannot pass on) does not leave its
    runs training on as orphans that hold their folders; each checkpoints and stops as on any SIGTERM. Call it with
    the SIGTERM handler in place, from the main thread (the launcher starts runs from its main thread: the signal
    comes when the thread that started the process ends). Returns True when the launcher is already gone. Linux
    only; elsewhere nothing changes."""
    launcher = _LAUNCHER[0]
    if not launcher or not _death_signal(signal.SIGTERM):
        return False
    return str(os.getppid()) != launcher  # it died before the prctl: no signal will come


def as_launcher() -> None:
    """This process starts runs of its own that are not ``run_seeds``'s (torchrun's workers for --nproc): each of
    them stops with it (LAUNCHER_ENV), and where this process was itself started by a launcher, it is sent
    SIGTERM when that one dies, which torchrun's engine passes on to its workers."""
    if _LAUNCHER[0]:
        _death_signal(signal.SIGTERM)
    os.environ[LAUNCHER_ENV] = str(os.getpid())


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; a number Python does not name is said as one."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def release_launcher() -> None:
    """The training loop is over: what is left (the last records, the final line) finishes whatever the launcher
    does, so the kernel's signal is called off."""
    if _LAUNCHER[0]:
        _death_signal(0)


def _death_signal(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, signum); False where that cannot be done (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - a C library without prctl
        return False


def _summary(seeds: list[int], out: str, codes: dict[int, int], stopped: int | None = None) -> int:
    """Say how the runs ended; the exit status: 0, the first failure's (1 where a run was killed outright, which
    has no status of its own), or 128 + the number of a signal that stopped them."""
    if stopped is not None:
        print(f"stopped by {signal.Signals(stopped).name}: {_stopped_words(seeds, out, codes)}", file=sys.stderr,
              flush=True)
        return 128 + stopped
    killed = [s for s in seeds if codes[s] < 0]  # by a signal of its own (SIGKILL, the OOM killer): it said nothing
    for s in killed:
        kept = (f"resume it with --resume {shlex.quote(seed_dir(out, s))}" if _checkpointed(out, s) else
                "it wrote no checkpoint")
        print(f"[seed {s}] was killed by {signal_name(-codes[s])}; {kept}", file=sys.stderr, flush=True)
    failed = [s for s in seeds if codes[s] != 0]
    if failed:
        others = "the others finished" if len(failed) < len(seeds) else "no run finished"
        print(f"{_listed(failed)} failed (their errors are above, prefixed [seed N]); {others}", file=sys.stderr,
              flush=True)
        return 1 if killed else next(codes[s] for s in failed)
    print(f"done: {len(seeds)} runs (seeds {', '.join(map(str, seeds))}) in {out}", flush=True)
    return 0


def _stopped_words(seeds: list[int], out: str, codes: dict[int, int]) -> str:
    """What a stop left: the runs that checkpointed (to resume), those that stopped before their first checkpoint
    (their folders removed) and those that never started."""
    done = [s for s in seeds if codes.get(s) == 0]
    kept = [s for s in seeds if s in codes and s not in done and _checkpointed(out, s)]
    lost = [s for s in seeds if s in codes and s not in done + kept]
    left = [s for s in seeds if s not in codes]
    words = [f"{_listed(done)} finished"] if done else []
    words += [f"{_listed(kept)} checkpointed (resume one with --resume {shlex.quote(seed_dir(out, 'N'))})"] \
        if kept else []
    words += [f"{_listed(lost)} ended without a checkpoint"] if lost else []
    words += [f"{_listed(left)} did not start"] if left else []
    return "; ".join(words) or "no run started"


def _checkpointed(out: str, seed: int) -> bool:
    return os.path.isfile(os.path.join(seed_dir(out, seed), CHECKPOINT))


def _listed(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def run_in_threads(seeds: list[int], out: str, train_one: Callable[[int, str], int], stop: Callable[[str], None],
                   cuda: bool) -> int:
    """Run ``train_one(seed, OUT/seed-N)`` (returning an exit status) for every seed at once, each in a thread of
    this process (on its own CUDA stream with ``cuda``), their printed lines prefixed with ``[seed N]``; a SIGINT
    or SIGTERM is handed to ``stop`` (which tells every run to checkpoint and stop). Returns as :func:`run_seeds`."""
    _make_seeds_folder(out)
    codes: dict[int, int] = {}
    out_stream, err_stream = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Prefixed(out_stream), _Prefixed(err_stream)
    stopped: list[int] = []

    def handle(signum, frame):
        stopped.append(signum)
        stop(signal.Signals(signum).name)

    from .stopping import STOP_SIGNALS  # (stopping imports this module)

    old = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}

    def one(seed: int) -> None:
        _Prefixed.prefix.text = f"[seed {seed}] "
        try:
            if cuda:
                import torch

                with torch.cuda.stream(torch.cuda.Stream()):
                    codes[seed] = train_one(seed, seed_dir(out, seed))
            else:
                codes[seed] = train_one(seed, seed_dir(out, seed))
        except BaseException as exc:  # noqa: BLE001 - one run's crash must not hide the others' results
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            codes[seed] = 1
    threads = [threading.Thread(target=one, args=(seed,), name=f"seed-{seed}") for seed in seeds]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # a timed join lets the main thread take its signals
    finally:
        sys.stdout, sys.stderr = out_stream, err_stream
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return _summary(seeds, out, codes, stopped[0] if stopped else None)


class _Prefixed:
    """A text stream that prefixes each line with its thread's ``prefix.text`` and writes whole lines only."""

    prefix = threading.local()

    def __init__(self, stream):
        self.stream, self.lock, self.partial = stream, threading.Lock(), threading.local()

    def write(self, text: str) -> int:
        pending = getattr(self.partial, "text", "") + text
        *lines, self.partial.text = pending.split("\n")
        if lines:
            head = getattr(self.prefix, "text", "")
            with self.lock:
                self.stream.write("".join(f"{head}{line}\n" for line in lines))
                self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _echo(proc: subprocess.Popen, seed: int) -> None:
    for line in proc.stdout:
        print(f"[seed {seed}] {line.rstrip()}", flush=True)


def without(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """``args`` without the given value-taking flags (``--out X`` and ``--out=X``)."""
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif not a.startswith(tuple(f + "=" for f in flags)):
            kept.append(a)
    return kept
