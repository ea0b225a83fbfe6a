"""`--seeds 0,1,2,3,4`: one run per seed, side by side, each a complete run of its own (``OUT/seed-N``: its own
config, checkpoint, metrics and exact resume with ``--resume OUT/seed-N``).

The runs are separate processes of the same trainer, so each is exactly the run that ``--seed N`` alone would make.
Small CIFAR networks leave a GPU mostly idle, so all seeds run at once by default; with several GPUs they are dealt
out over them. Imports nothing from the rest of resdsl (it ships beside emitted trainers) and not torch.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Callable

def seed_dir(out: str, seed: int) -> str:
    return os.path.join(out, f"seed-{seed}")


def run_seeds(seeds: list[int], out: str, command_for: Callable[[int, str], list[str]], gpus: int = 0,
              parallel: int | None = None) -> int:
    """Run ``command_for(seed, OUT/seed-N)`` for every seed, ``parallel`` at a time (default: all), echoing each
    run's lines with a ``[seed N]`` prefix; returns 0 when every run succeeded, else the first failure's status."""
    os.makedirs(out, exist_ok=True)
    parallel = max(1, min(parallel or len(seeds), len(seeds)))
    threads = str(max(1, (os.cpu_count() or 1) // parallel))
    codes: dict[int, int] = {}
    pending = list(enumerate(seeds))
    running: list[tuple[int, subprocess.Popen, threading.Thread]] = []
    while pending or running:
        while pending and len(running) < parallel:
            k, seed = pending.pop(0)
            env = dict(os.environ)
            env.setdefault("OMP_NUM_THREADS", threads)  # the CPU's cores shared among the runs
            if gpus > 1:
                env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
            proc = subprocess.Popen(command_for(seed, seed_dir(out, seed)), env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
            echo = threading.Thread(target=_echo, args=(proc, seed), daemon=True)
            echo.start()
            running.append((seed, proc, echo))
        seed, proc, echo = running.pop(0)
        codes[seed] = proc.wait()
        echo.join()
    failed = [s for s in seeds if codes[s] != 0]
    if failed:
        print(f"seeds {', '.join(map(str, failed))} failed (see {out}/seed-N/train.log); the others finished",
              file=sys.stderr, flush=True)
        return next(codes[s] for s in failed)
    print(f"done: {len(seeds)} runs (seeds {', '.join(map(str, seeds))}) in {out}", flush=True)
    return 0


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
