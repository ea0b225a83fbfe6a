"""The trainer's command-line options, described once as data, and :class:`RunOptions`, which holds their values.

`resdsl train` builds click options from this table and an emitted trainer's train.py builds argparse options from
it (so that it needs only torch); neither describes an option itself. Imports nothing (not torch): reading the table
must not slow down `resdsl --help`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

from .vocabulary import names_a_folder

MAX_SEED = 2**63 - 1
MAX_LR = 3.4e38  # the largest float32: SGD keeps its learning rate in the parameters' precision
DEVICES = ("auto", "cuda", "mps", "cpu")
AMPS = ("auto", "bf16", "none")


def _int(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError(f"'{text}' is not a whole number") from None


def positive_int(text) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def count(text) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def seed(text) -> int:
    value = count(text)
    if value > MAX_SEED:
        raise ValueError(f"must be at most {MAX_SEED} (2**63 - 1), got {value}")
    return value


MAX_SEEDS = 64


def seed_list(text) -> list[int]:
    """``0,1,2`` or ``0-4`` (or a mix: ``0-2,7``): distinct seeds in the order given."""
    seeds: list[int] = []
    for part in str(text).split(","):
        lo, dash, hi = part.strip().partition("-")
        if dash and lo.strip():
            first, last = seed(lo), seed(hi)
            if last < first:
                raise ValueError(f"the range {part.strip()} runs backwards")
            seeds += range(first, last + 1)
        else:
            seeds.append(seed(part.strip()))
        if len(seeds) > MAX_SEEDS:
            raise ValueError(f"at most {MAX_SEEDS} seeds at once")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed is given twice in {text}")
    return seeds


def learning_rate(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"'{text}' is not a number") from None
    if not 0 < value <= MAX_LR:
        raise ValueError(f"must be a positive number up to {MAX_LR:g}, got {text}")
    return value


@dataclass(frozen=True)
class Option:
    """One command-line option: its flag, its help, its group in --help, and how its text becomes a value."""

    flag: str
    help: str
    group: str
    parse: Callable | None = None  # text -> value, raising ValueError with a message; None: a string
    metavar: str | None = None
    default: object = None
    choices: tuple | None = None
    is_flag: bool = False

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


OPTIONS = (
    Option("--data", "cifar10, cifar100, fashion-mnist, mnist, synthetic, or an ImageNet-layout folder (train/, "
           "val/); default: the recipe's dataset", "data", metavar="NAME|DIR"),
    Option("--data-dir", "where named datasets are (or are downloaded to); when given, the only place looked at",
           "data", metavar="DIR"),
    Option("--no-download", "never download; fail if the data is not local", "data", is_flag=True),
    Option("--train-subset", "train on the first N training images only (of an image folder, N drawn over its "
           "classes, the same N for every run)", "data", positive_int, "N"),
    Option("--test-subset", "evaluate on the first N test images only (of an image folder, N drawn over its "
           "classes, the same N for every run)", "data", positive_int, "N"),
    Option("--workers", "DataLoader worker processes for image folders (default: 4, or the cores this process may "
           "use where fewer)", "data", count, "N"),
    Option("--decode", "image folders: where pictures are decoded and cut; auto (the default) is the GPU on a CUDA "
           "device (JPEGs by nvJPEG in batches, the workers only read files), the workers elsewhere", "data",
           choices=("auto", "workers", "device"), default="auto"),
    Option("--iters", "train for N iterations (the recipe's milestones and warm-up length scale with it)", "recipe",
           positive_int, "N"),
    Option("--epochs", "train for N epochs (the recipe's milestones and warm-up length scale with it)", "recipe",
           positive_int, "N"),
    Option("--batch-size", "global batch size (the recipe's 'batch')", "recipe", positive_int, "N"),
    Option("--lr", "base learning rate (the recipe's 'lr')", "recipe", learning_rate, "LR"),
    Option("--out", "run directory (default runs/<network>-<time>/); it must be new or empty", "run", metavar="DIR"),
    Option("--overwrite", "replace the previous run's files in --out (never files resdsl did not write)", "run",
           is_flag=True),
    Option("--resume", "continue the run in RUNDIR exactly where it stopped", "run", metavar="RUNDIR"),
    Option("--seed", "random seed of weights, data order and augmentation (default 0; on --resume the run's own)",
           "run", seed, "N"),
    Option("--seeds", "one run per seed, side by side, in OUT/seed-N (e.g. 0,1,2,3,4 or 0-4); each is the run "
           "--seed N alone makes, resumable with --resume OUT/seed-N", "run", seed_list, "LIST"),
    Option("--parallel", "with --seeds: how many runs at once (default: all of them)", "run", positive_int, "N"),
    Option("--deterministic", "deterministic algorithms only (bitwise-exact resume on the GPU)", "run",
           is_flag=True),
    Option("--eval-every", "evaluate every N iterations (default: each epoch, and at least 10 times a run)", "run",
           positive_int, "N"),
    Option("--checkpoint-every", "checkpoint every N iterations (default: at each evaluation)", "run",
           positive_int, "N"),
    Option("--sync-every-step", "read the loss after every iteration and stop at the first non-finite one before "
           "its step (the plain loop; the default reads it at evaluations and checkpoints, which gives the same "
           "weights without making the host wait for the GPU each step)", "run", is_flag=True),
    Option("--quiet", "no progress bar and no per-evaluation lines (the banner and train.log stay)", "run",
           is_flag=True),
    Option("--device", "where to train: auto picks CUDA, then Apple MPS, then the CPU", "device", choices=DEVICES,
           default="auto"),
    Option("--amp", "precision: auto (the default) is bf16 autocast with channels_last on a CUDA GPU and fp32 "
           "elsewhere; bf16 (no loss scaling needed); none (fp32)", "device", choices=AMPS,
           default="auto"),
    Option("--channels-last", "NHWC memory layout (faster convolutions on tensor cores)", "device", is_flag=True),
    Option("--compile", "torch.compile the model", "device", is_flag=True),
    Option("--no-graph", "step eagerly, op by op (the default for in-memory data on a CUDA GPU replays each "
           "iteration as one CUDA graph, which trains the same recipe several times faster)", "device", is_flag=True),
    Option("--sync-bn", "SyncBatchNorm across processes (CUDA only)", "device", is_flag=True),
    Option("--nproc", "launch N processes with torchrun (DistributedDataParallel)", "device", positive_int, "N"),
)


@dataclass
class RunOptions:
    """Everything about a run that is not the model or the recipe: the table's options by their names (``iters``,
    ``batch_size``, ...), as `resdsl train` and an emitted train.py fill it from their flags, and as a Python
    caller gives it to resdsl.train's ``train``."""

    data: str | None = None
    data_dir: str | None = None
    out: str | None = None
    resume: str | None = None
    device: str = "auto"
    amp: str | None = "auto"  # auto: bf16 + channels_last on CUDA; None (configs before auto): fp32
    channels_last: bool = False
    compile: bool = False
    seed: int | None = None  # None: 0 for a new run, the run's own seed on resume
    deterministic: bool = False
    sync_every_step: bool = False
    no_graph: bool = False
    overwrite: bool = False
    iters: int | None = None
    epochs: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    quiet: bool = False
    sync_bn: bool = False
    workers: int | None = None  # DataLoader workers for image folders; None: loader_workers()'s default
    decode: str | None = "auto"  # image folders: auto (device on CUDA), device, workers
    # on a CPU, torch's threads (OMP_NUM_THREADS): sums split over threads round differently, so a resumed run
    # takes its record's number (config.json) whatever its environment says
    threads: int | None = None
    download: bool = True
    name: str = "run"
    extra_config: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("data", "data_dir", "out", "resume"):  # what Python hands over: a pathlib.Path
            if isinstance(getattr(self, key), os.PathLike):
                setattr(self, key, os.fspath(getattr(self, key)))
        if type(self.device).__name__ == "device":  # torch's (cuda:1 with its index), without importing torch
            self.device = str(self.device)
        self.data, self.data_dir = recorded_paths(self.data, self.data_dir)  # as the run records them


GROUPS = {"data": "data", "recipe": "recipe overrides", "run": "run", "device": "device and speed"}


def is_gpu(device) -> bool:
    """Whether a device's name picks one CUDA GPU by its index (``cuda:1``, as torch writes it), which Python
    callers give (the flag's choices are the words of DEVICES)."""
    return isinstance(device, str) and re.fullmatch(r"cuda:\d+", device) is not None


def misuse(values: dict) -> str | None:
    """Flags of the table that do not go together, said alike by `resdsl train` and an emitted trainer's train.py
    (a usage error, exit 2); None where there are none. ``values``: the flags by their names (``iters``, ...)."""
    if values.get("iters") and values.get("epochs"):
        return "give --iters or --epochs, not both"
    if values.get("parallel") and not values.get("seeds"):
        return "--parallel goes with --seeds"
    for flag in ("out", "resume", "data", "data_dir", "checkpoint"):  # '' is no name: not the default quietly
        if isinstance(values.get(flag), str) and not values[flag].strip():
            return f"--{flag.replace('_', '-')} needs a name, not an empty one"
    return None


def bad_value(values: dict) -> str | None:
    """The first value of the table's options (by their names: ``iters``, ...) that its flag would refuse, said
    as the flag would say it; None where all would pass. For values given in Python (``RunOptions``), which no
    command line has checked: ``iters=0`` would otherwise train the recipe's whole length."""
    for opt in OPTIONS:
        value = values.get(opt.dest)
        if opt.is_flag and value is not None and not isinstance(value, bool):
            return f"{opt.flag} {value!r}: give True or False"
        if value is None or opt.is_flag:
            continue
        if opt.choices and value not in opt.choices and not (opt.dest == "device" and is_gpu(value)):
            return f"{opt.flag} {value!r}: choose from {', '.join(map(str, opt.choices))}"
        if opt.parse and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{opt.flag} {value!r}: give a number, not {type(value).__name__}"
        if opt.parse:
            try:
                opt.parse(str(value))
            except ValueError as exc:
                return f"{opt.flag} {value}: {exc}"
    threads = values.get("threads")  # no flag: OMP_NUM_THREADS's, recorded for the run
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        return f"threads {threads!r}: a whole number of 1 or more"
    return None


# the examples at the end of an emitted trainer's `python train.py --help` (`resdsl train --help` has its own)
EMITTED_EXAMPLES = """examples:
  python train.py --data fashion-mnist --epochs 1     # a quick run; milestones scale with the length
  python train.py --data cifar10 --out runs/mine      # the recipe as the spec gives it
  python train.py --resume runs/mine                  # continue a stopped run exactly
"""


def recorded_paths(data: str | None, data_dir: str | None) -> tuple[str | None, str | None]:
    """``--data`` and ``--data-dir`` as a run (or an experiment) records them: a folder as an absolute path, so that
    the run resumed, evaluated or analysed from another folder reads the data it was trained on (a relative
    ``data`` read there would be other files, or none). A name load_dataset reads as a name stays one; `imagenet`
    is a folder where one of that name is there, as load_dataset reads it."""
    def absolute(path: str) -> str:
        return os.path.abspath(os.path.expanduser(path))

    if data is not None and names_a_folder(data):
        data = absolute(data)
    return data, absolute(data_dir) if data_dir else data_dir
