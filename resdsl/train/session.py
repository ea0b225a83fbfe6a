"""The training front door: everything a run needs (recipe, device, data, model, schedule, optimizer), prepared
in one place that `resdsl train`, `resdsl eval`, `--seeds` runs and an emitted trainer all go through."""
from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass
from typing import Callable

import torch

from .dataerror import Message, OneParagraph
from .data import (BatchPipeline, FolderData, InMemoryData, collate_encoded, crop_size, epoch_permutation,
                   load_dataset, worker_errors_unwrapped)
from .ahead import Ahead
from .evaluation import evaluate
from .images import build_batch, check_normalize
from .options import MAX_LR, RunOptions, is_gpu, recorded_paths
from .record import recipe_problem
from .schedule import LRSchedule, from_recipe
from .steps import seed_for
from .streams import prepared, thread_stream, to_device
from .vocabulary import names_a_folder
from .views import batch_pictures, collate_views, eval_view, named, view_of, words


class TrainingError(Message):
    """A run stopped for a reason the user must see (NaN loss, bad option, unwritable run directory)."""


class Interrupted(OneParagraph, KeyboardInterrupt):
    """Ctrl-C or SIGTERM: a checkpoint was written; the run can be resumed. ``status`` is the shell's convention
    for a process ended by that signal, 128 + its number (130 for SIGINT, 143 for SIGTERM). A KeyboardInterrupt,
    not an Exception, so a caller's loop of runs that skips a failed one (``except Exception``) stops here too."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.status = 128 + signal.Signals[signal_name].value


# ---------------------------------------------------------------------------------------------------
# setup


def pick_device(choice: str) -> torch.device:
    """auto: CUDA if present, else Apple MPS, else CPU; an unavailable explicit choice is an error."""
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but PyTorch sees no CUDA GPU (use --device auto or cpu)")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrainingError("--device mps was asked for, but Apple's MPS backend is not available")
    if choice == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if is_gpu(choice):  # cuda:N, given in Python: that GPU (each process of a torchrun run takes its own)
        count, several = torch.cuda.device_count() if torch.cuda.is_available() else 0, distributed_env()[1] > 1
        if int(choice[5:]) >= count or several:
            raise TrainingError(f"--device {choice}: PyTorch sees {count} CUDA GPU{'' if count == 1 else 's'}"
                                + (", and a run of several processes gives each its own: --device cuda" * several))
    return torch.device(choice)


def distributed_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def apply_overrides(recipe: dict, opts: RunOptions) -> dict:
    """The recipe as the options change it; its own folder (./imagenet) becomes ``opts.data``, to be recorded. The
    recipe is a plain dict that no spec grammar checked (given in Python, an emitted trainer's recipe.json): a field
    the trainer does not know, or a value of the wrong kind, is refused first."""
    if why := recipe_problem(recipe):
        raise TrainingError(why)
    r = json.loads(json.dumps(recipe))
    if opts.batch_size is not None:
        if opts.batch_size < 1:
            raise TrainingError("--batch-size must be at least 1")
        r["batch"] = opts.batch_size
    if opts.lr is not None:
        r["lr"] = opts.lr
    for what, lr in (("learning rate", r["lr"]), ("warm-up learning rate", (r.get("warmup") or {}).get("lr", 1))):
        if not 0 < lr <= MAX_LR:
            raise TrainingError(f"the {what} {lr:g} is not a positive number up to {MAX_LR:g} (the largest float32)")
    if opts.iters is not None and opts.epochs is not None:
        raise TrainingError("give --iters or --epochs, not both")
    if opts.data is not None:
        r["dataset"] = opts.data
    elif r.get("dataset") and names_a_folder(r["dataset"]):  # ./imagenet: recorded from the root as --data is (in
        opts.data, _ = recorded_paths(r["dataset"], None)  # opts), so that resumed elsewhere it reads these pictures
        r["dataset"] = opts.data
    if not r.get("dataset"):
        raise TrainingError("the recipe names no dataset: pass --data (cifar10, cifar100, fashion-mnist, mnist, "
                            "synthetic or an ImageNet-layout folder)")
    return r


def decodes_on_device(opts: RunOptions, device: torch.device) -> bool:
    """Whether image-folder pictures are decoded where the model is (JPEGs by nvJPEG in batches, the workers only
    reading files) rather than in the DataLoader workers: ``--decode auto`` does so on a CUDA GPU."""
    choice = opts.decode or "auto"
    return device.type == "cuda" if choice == "auto" else choice == "device"


def loader_workers(opts: RunOptions) -> int:
    """``--workers``, by default 4, or the cores this process may use where fewer (more workers than cores only
    compete, and PyTorch's DataLoader warns of them)."""
    if opts.workers is not None:
        return opts.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, cores)


def _folder_batches(ds, opts: RunOptions, device, on_device: bool, role: str, **loader):
    """(x, y) batches of a folder dataset through a DataLoader whose workers decode the pictures, or only read the
    files (and make each sample's draw) while the batches are decoded and cut on ``device`` (``on_device``), one
    batch ahead in a thread of their own (:class:`ahead.Ahead`), on this thread's data stream for ``role``."""
    loader.setdefault("collate_fn", collate_encoded if on_device else None)
    batches = worker_errors_unwrapped(torch.utils.data.DataLoader(
        ds, num_workers=loader_workers(opts), pin_memory=torch.cuda.is_available() and not on_device, **loader))
    if not on_device:
        return batches
    stream = thread_stream(device, role)  # taken here, in the thread that uses the batches (see streams.py)

    def make(batch):
        datas, labels, seeds, paths, draws = batch
        return prepared(lambda: (build_batch(datas, paths, seeds, ds.view, device, draws), to_device(labels, device)),
                        stream)

    return Ahead(batches, make, device)


def test_batches(data, pipeline, opts, batch_size, test=None, device=None):
    """The test set's (x, y) batches: an in-memory set's whole images, a folder's pictures as the :func:`views.view_of`
    table ``test`` says (default: a single view)."""
    if isinstance(data, InMemoryData):
        return pipeline.test_batches(batch_size)
    view = eval_view(test or view_of(None), data.shape[1])
    on_device = device is not None and decodes_on_device(opts, device)
    ds = data.test_dataset(crop=view.crop, resize=view.resize, ten_crop=view.ten_crop, encoded=on_device,
                           scales=view.scales)
    collate = {"collate_fn": collate_views} if view.scales and not on_device else {}
    return _folder_batches(ds, opts, device, on_device, "test", batch_size=batch_size, shuffle=False, **collate)


class _EpochBatches:
    """The batches from iteration ``start`` to the end of the run, epoch after epoch, as lists of
    ``(index, sample seed)`` of this rank's shard: one DataLoader reads them all, so its workers start once."""

    def __init__(self, s: "Session", n: int, start: int):
        self.s, self.n, self.start = s, n, start

    def __iter__(self):
        s, b, seed = self.s, self.s.recipe["batch"], self.s.opts.seed
        epoch, perm = -1, None
        for it in range(self.start, s.total):
            e, pos = divmod(it, s.iters_per_epoch)
            if e != epoch:
                epoch, perm = e, epoch_permutation(self.n, seed, e).tolist()
            batch = [(i, seed_for(seed, "sample", e, pos, k)) for k, i in enumerate(perm[pos * b:(pos + 1) * b])]
            yield batch[s.rank::s.world]

    def __len__(self):
        return self.s.total - self.start


class FolderBatches:
    """Batches of an image-folder dataset in the order of (seed, epoch, position), through DataLoader workers that
    live for the whole run; each picture's augmentation comes from its sample seed, so a resumed run restarts at
    the same position with the same augmentations, whichever worker or device decodes it."""

    def __init__(self, s: "Session"):
        self.s = s
        self.on_device = decodes_on_device(s.opts, s.device)
        self.ds = s.data.train_dataset(s.recipe.get("augment", []), crop=s.data.shape[1], encoded=self.on_device)
        self.next_it, self.iter = None, None

    def _start(self, it: int) -> None:
        s = self.s
        self.close()
        self.next_it = it
        self.iter = iter(_folder_batches(self.ds, s.opts, s.device, self.on_device, "train",
                                         batch_sampler=_EpochBatches(s, len(self.ds), it)))

    def batch(self, it: int):
        if self.next_it != it:
            self._start(it)
        self.next_it += 1
        return next(self.iter)

    def close(self) -> None:
        """Stop the batches: the thread that makes them ahead (decoding on the device), the loader's workers."""
        if self.iter is not None:
            self.iter.close()
        self.iter, self.next_it = None, None


# ---------------------------------------------------------------------------------------------------
# the front door


@dataclass
class Session:
    """A prepared run: what the loop, the evaluation and the checkpoints work on."""

    recipe: dict
    opts: RunOptions
    device: torch.device
    amp_dtype: torch.dtype | None
    data: InMemoryData | FolderData
    pipeline: BatchPipeline | None  # in-memory data: batches made on the device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    n_train: int
    iters_per_epoch: int
    total: int
    eval_every: int
    ckpt_every: int
    rank: int = 0
    world: int = 1


def setup_device(opts: RunOptions, world: int) -> tuple[torch.device, torch.dtype | None]:
    """The device (after joining the process group under torchrun), cuDNN's mode and the autocast type."""
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and opts.device in ("auto", "cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend)
    device = pick_device(opts.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cpu":
        if opts.threads and opts.threads != torch.get_num_threads():
            torch.set_num_threads(opts.threads)
        opts.threads = torch.get_num_threads()
    if opts.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device, resolve_precision(opts, device.type)


def resolve_precision(opts: RunOptions, device_type: str) -> torch.dtype | None:
    """The autocast type, after turning ``--amp auto`` into what it means on this device (written back to
    ``opts``, so config.json records it and a resumed run keeps it): bf16 with channels_last on CUDA, where it
    measured the same final error as fp32 at 1.8x the speed (benchmarks/RESULTS.md), fp32 elsewhere."""
    if opts.amp == "auto":
        opts.amp = "bf16" if device_type == "cuda" else "none"
        opts.channels_last = opts.channels_last or device_type == "cuda"
    amp_dtype = {None: None, "none": None, "bf16": torch.bfloat16}.get(opts.amp, "bad")
    if amp_dtype == "bad":
        raise TrainingError(f"--amp {opts.amp}: use auto, bf16 or none")
    return amp_dtype


def load_data(recipe: dict, opts: RunOptions, test_subset=None):
    """The recipe's dataset (or --data's), with its split and subsets; image folders at the recipe's crop size."""
    data = load_dataset(recipe["dataset"], opts.data_dir, download=opts.download,
                        split=tuple(recipe["split"]) if recipe.get("split") else None,
                        train_subset=opts.train_subset, test_subset=test_subset or opts.test_subset)
    if isinstance(data, FolderData):  # image folders: the network sees the recipe's crop size
        size = crop_size(recipe.get("augment", []))
        data.shape = (3, size, size)
    return data


def _model_on(model, opts: RunOptions, device, world: int):
    model = model.to(device)
    if opts.sync_bn and world > 1:
        if device.type != "cuda":
            raise TrainingError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on the CPU)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


# runs in threads of one process (--seed-runs threads) share torch's global generator: one seeds it and draws its
# initial weights at a time
_SEEDING = threading.Lock()


def prepare(model_fn: Callable, recipe: dict, opts: RunOptions, rank: int = 0, world: int = 1) -> Session:
    """Device, data, model, schedule and optimizer of a run, in the order that makes it reproducible."""
    device, amp_dtype = setup_device(opts, world)
    if opts.resume is None and names_a_folder(recipe["dataset"]):  # before a long scan of the folder; a run
        check_normalize(recipe.get("normalize", "none"))  # resumed normalised as folders always were: ImageNet's
    data = load_data(recipe, opts)
    with _SEEDING:
        torch.manual_seed(opts.seed)
        model = model_fn(data.shape, data.num_classes)
    batch = recipe["batch"]
    if batch % world:
        raise TrainingError(f"the batch size {batch} does not split evenly over {world} processes")
    pipeline = None
    if isinstance(data, InMemoryData):
        n_train = data.train_x.shape[0]
        data = data.to(device)
        pipeline = BatchPipeline(data, recipe.get("normalize", "none"), recipe.get("augment", []))
    else:
        n_train = data.train_size
        opts.decode = "device" if decodes_on_device(opts, device) else "workers"  # config.json says which
    iters_per_epoch = n_train // batch
    if iters_per_epoch < 1:
        raise TrainingError(f"the batch size {batch} is larger than the training set ({n_train} images)")
    length = (opts.iters, "iterations") if opts.iters else ((opts.epochs, "epochs") if opts.epochs else None)
    schedule, total = from_recipe(recipe, iters_per_epoch, length)
    eval_every = opts.eval_every or min(iters_per_epoch, max(1, total // 10))
    model = _model_on(model, opts, device, world)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                nesterov=recipe.get("nesterov", False), weight_decay=recipe["weight_decay"])
    return Session(recipe, opts, device, amp_dtype, data, pipeline, model, optimizer, schedule, n_train,
                   iters_per_epoch, total, eval_every, opts.checkpoint_every or eval_every, rank, world)


def check_fits(model: torch.nn.Module, shape: tuple) -> torch.nn.Module:
    """A network built without the compiler's shape check (an emitted trainer's model.py) tried on one blank image
    of the data's shape, in eval mode (no statistics move, no random draw), so that images it cannot take are said
    before a run directory is made, not as a traceback at the first step. Returns the model."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    except RuntimeError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"the network cannot take the data's {'x'.join(map(str, shape))} images: {text}") \
            from None
    finally:
        model.train(was_training)
    return model


def test_view(test, recipe: dict, folder: bool) -> dict:
    """How a checkpoint is tested (a :func:`views.view_of` table): ``--test`` ``single-view``, ``10-crop`` or
    ``multi-scale`` (with the recipe's sizes where its ``test`` is of that kind), a view with its sizes (a table,
    as a recipe's ``test`` holds it), or ``auto``: the recipe's ``test`` (10-crop in [R]'s ImageNet recipe,
    single-view in [I]'s), which only image folders can follow (small in-memory images are tested whole)."""
    if test == "auto":
        return view_of(recipe.get("test") if folder else None)
    return view_of(test) if isinstance(test, dict) else named(test, recipe.get("test"))


def evaluate_checkpoint(model_fn: Callable, state: dict, path: str, recipe: dict, opts: RunOptions,
                        test: str | dict, batch_size: int) -> tuple[str, dict]:
    """Top-1/top-5 error of a checkpoint's weights on the test set its recipe trained beside (``resdsl eval``);
    returns the views used in words (:func:`views.words`) and the result."""
    from .kept import torch_settings_kept

    with torch_settings_kept():  # the weights the model is built with are drawn from torch's generator
        return _evaluated_checkpoint(model_fn, state, path, recipe, opts, test, batch_size)


def _evaluated_checkpoint(model_fn, state, path, recipe, opts, test, batch_size) -> tuple[str, dict]:
    from . import checkpoint as ckpt

    device, _ = setup_device(opts, 1)
    data = load_data(recipe, opts)
    view = test_view(test, recipe, isinstance(data, FolderData))
    if (view["view"] != "single-view" or view["scale"] or view["crop"]) and not isinstance(data, FolderData):
        sized = f" scale {view['scale']} crop {view['crop']}" if view["view"] == "single-view" else ""
        raise TrainingError(f"{view['view']}{sized} testing needs an image-folder dataset (small in-memory images are "
                            "tested whole)")
    model = model_fn(data.shape, data.num_classes)
    ckpt.load_weights(model, state["model"], path)
    model.to(device)
    pipeline = None
    if isinstance(data, InMemoryData):
        data = data.to(device)
        pipeline = BatchPipeline(data, recipe.get("normalize", "none"), [])
        if state.get("normalization"):
            pipeline.load_stats(state["normalization"])
    batches = test_batches(data, pipeline, opts, batch_pictures(view, batch_size, data.shape[1]), test=view,
                           device=device)
    views = words(view, data.shape[1]) if isinstance(data, FolderData) else "single view"
    return views, evaluate(model, batches, device)
