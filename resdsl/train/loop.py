"""The training loop: any ``nn.Module`` with a recipe, exact resume, single process or torch.distributed."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from . import rundir
from .data import (BatchPipeline, DataError, FolderData, InMemoryData, crop_size, epoch_permutation, load_dataset,
                   worker_errors_unwrapped)
from .fileio import OutputError
from .metrics import MetricsLog
from .options import MAX_LR, MAX_SEED
from .report import Progress, RunLog, banner, device_words, effective_recipe, precision_words
from .schedule import from_recipe

CHECKPOINT = rundir.CHECKPOINT
# options a resumed run takes from its config.json; giving another value on resume is refused, not ignored
RESUMED_OPTIONS = ("data", "seed", "train_subset", "test_subset", "iters", "epochs", "eval_every",
                   "checkpoint_every", "amp", "channels_last", "deterministic", "batch_size", "lr")


class TrainingError(Exception):
    """A run stopped for a reason the user must see (NaN loss, bad option, unwritable run directory)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was written; the run can be resumed."""


@dataclass
class RunOptions:
    """Everything about a run that is not the model or the recipe (the CLI flags)."""

    data: str | None = None
    data_dir: str | None = None
    out: str | None = None
    resume: str | None = None
    device: str = "auto"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    seed: int | None = None  # None: 0 for a new run, the run's own seed on resume
    deterministic: bool = False
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
    workers: int = 4
    download: bool = True
    name: str = "run"
    extra_config: dict = field(default_factory=dict)


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
    return torch.device(choice)


def distributed_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _apply_overrides(recipe: dict, opts: RunOptions) -> dict:
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
    if not r.get("dataset"):
        raise TrainingError("the recipe names no dataset: pass --data (cifar10, cifar100, fashion-mnist, mnist, "
                            "synthetic or an ImageNet-layout folder)")
    return r


def _seed_for(*parts) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _versions() -> dict:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


def _resume_options(opts: RunOptions, saved: dict) -> dict:
    """Take a resumed run's options from its config.json; a flag given with another value is an error."""
    old, recipe = saved["options"], saved["recipe"]
    old = dict(old, batch_size=recipe.get("batch"), lr=recipe.get("lr"))
    for key in RESUMED_OPTIONS:
        given = getattr(opts, key)
        if given not in (None, False) and given != old.get(key):
            flag = "--" + key.replace("_", "-")
            raise TrainingError(f"--resume {opts.resume} continues the run exactly as it was started, with "
                                f"{flag} {old.get(key)}; {flag} {given} cannot change now. Drop the flag, or start "
                                "a new run with --out")
        setattr(opts, key, old.get(key))
    opts.data_dir = opts.data_dir or old.get("data_dir")
    spec_hash, old_hash = opts.extra_config.get("spec_hash"), saved.get("spec_hash")
    if spec_hash and old_hash and spec_hash != old_hash:
        raise TrainingError(f"--resume {opts.resume}: the spec {opts.extra_config.get('spec')} is not the one this "
                            f"run was trained from ({saved.get('spec')}, recorded by its hash in config.json): the "
                            "network or its recipe differs. Resume with the run's own spec, or start a new run")
    return recipe


def _check_seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise TrainingError(f"--seed {seed} is out of range: use a whole number from 0 to {MAX_SEED}")
    return seed


# ---------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(model, batches, device, amp_dtype=None, channels_last=False) -> dict:
    """Mean loss, top-1 and top-5 error (%) over ``batches`` of (x, y); a (B, K, C, H, W) x averages K crops."""
    was_training = model.training
    model.eval()
    total, loss_sum, wrong1, wrong5 = 0, 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        crops = x.dim() == 5
        if crops:
            b, k = x.shape[:2]
            x = x.flatten(0, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x).float()
        if crops:
            logits = logits.view(b, k, -1).softmax(-1).mean(1).log()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        wrong1 += (top[:, 0] != y).sum().item()
        wrong5 += (~(top == y[:, None]).any(1)).sum().item()
        total += y.numel()
    model.train(was_training)
    total = max(total, 1)
    return {"loss": loss_sum / total, "error": 100.0 * wrong1 / total, "top5_error": 100.0 * wrong5 / total}


def test_batches(data, pipeline, opts, batch_size, ten_crop=False):
    if isinstance(data, InMemoryData):
        return pipeline.test_batches(batch_size)
    ds = data.test_dataset(crop=data.shape[1], resize=round(data.shape[1] * 256 / 224), ten_crop=ten_crop)
    return worker_errors_unwrapped(torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                                               num_workers=opts.workers,
                                                               pin_memory=torch.cuda.is_available()))


# ---------------------------------------------------------------------------------------------------
# the loop


class _Stop:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each iteration."""

    def __init__(self):
        self.requested = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(model_fn: Callable, recipe: dict, opts: RunOptions) -> dict:
    """Train ``model_fn(shape, num_classes)`` with ``recipe``; returns the last metrics row and the run dir.

    ``model_fn`` receives the dataset's image shape (C, H, W) and class count and returns an ``nn.Module``.
    """
    rank, world = distributed_env()
    pick_device(opts.device)  # an unavailable device is refused before a run directory is made
    resume_dir = opts.resume
    if resume_dir is not None:
        saved = rundir.read_config(resume_dir)
        recipe = _resume_options(opts, saved)
        opts.out = run_dir = resume_dir
        lock = rundir.resume(run_dir) if rank == 0 else None
    else:
        recipe = _apply_overrides(recipe, opts)
        opts.seed = _check_seed(opts.seed or 0)
        run_dir = opts.out or rundir.default_path("runs", opts.name, dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
        fresh = not os.path.exists(run_dir)
        lock = rundir.start(run_dir, opts.overwrite) if rank == 0 else None
    log = RunLog(run_dir, enabled=rank == 0)
    try:
        result = _train(model_fn, recipe, opts, run_dir, rank, world, log)
    except BaseException as exc:
        log.say(f"{'stopped' if isinstance(exc, Interrupted) else 'error'}: {exc}", err=True, show=False)
        if lock is not None and resume_dir is None and fresh:
            rundir.remove_if_unused(run_dir)  # a run that failed before its first record leaves no empty folder
        raise
    finally:
        if lock is not None:
            lock.release()
    last = result["last"]
    if last is not None:
        log.say(f"done: {result['iterations']} iterations, test error {last['test_error']:.2f}% (top-5 "
                f"{last['test_top5_error']:.2f}%), run directory {run_dir}")
    return result


def _data_words(data, recipe, n_train) -> str:
    """``fashion-mnist, 1x28x28 images, 10 classes: 60,000 train / 10,000 test`` (the test part is held out of the
    training set when the recipe has a split)."""
    n_test = data.test_x.shape[0] if isinstance(data, InMemoryData) else data.test_size
    held = " held out of the training set" if recipe.get("split") else ""
    shape = "x".join(map(str, data.shape))
    return (f"{recipe['dataset']}, {shape} images, {data.num_classes} classes: {n_train:,} train / {n_test:,} "
            f"test{held}")


def _train(model_fn, recipe, opts, run_dir, rank, world, log) -> dict:
    resume_dir = opts.resume
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and opts.device in ("auto", "cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend)
    device = pick_device(opts.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if opts.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype = {None: None, "none": None, "bf16": torch.bfloat16}.get(opts.amp, "bad")
    if amp_dtype == "bad":
        raise TrainingError(f"--amp {opts.amp}: use bf16 or none")

    data = load_dataset(recipe["dataset"], opts.data_dir, download=opts.download, split=tuple(recipe["split"])
                        if recipe.get("split") else None, train_subset=opts.train_subset,
                        test_subset=opts.test_subset)
    if isinstance(data, FolderData):  # image folders: the network sees the recipe's crop size
        data.shape = (3, crop_size(recipe.get("augment", [])), crop_size(recipe.get("augment", [])))
    torch.manual_seed(opts.seed)
    model = model_fn(data.shape, data.num_classes)
    batch = recipe["batch"]
    if batch % world:
        raise TrainingError(f"the batch size {batch} does not split evenly over {world} processes")
    if isinstance(data, InMemoryData):
        n_train = data.train_x.shape[0]
        data = data.to(device)
        pipeline = BatchPipeline(data, recipe.get("normalize", "none"), recipe.get("augment", []))
    else:
        n_train, pipeline = data.train_size, None
    iters_per_epoch = n_train // batch
    if iters_per_epoch < 1:
        raise TrainingError(f"the batch size {batch} is larger than the training set ({n_train} images)")
    length = (opts.iters, "iterations") if opts.iters else ((opts.epochs, "epochs") if opts.epochs else None)
    if length and length[0] < 1:
        raise TrainingError("--iters/--epochs must be at least 1")
    schedule, total = from_recipe(recipe, iters_per_epoch, length)
    eval_every = opts.eval_every or min(iters_per_epoch, max(1, total // 10))
    ckpt_every = opts.checkpoint_every or eval_every

    model = model.to(device)
    if opts.sync_bn and world > 1:
        if device.type != "cuda":
            raise TrainingError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on the CPU)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                nesterov=recipe.get("nesterov", False), weight_decay=recipe["weight_decay"])
    state = {"iter": 0, "elapsed": 0.0, "loss_sum": 0.0, "wrong": 0, "seen": 0, "recent_errors": []}
    metrics = MetricsLog(run_dir, enabled=rank == 0)
    path = os.path.join(run_dir, CHECKPOINT)
    if resume_dir is not None:
        saved_ckpt = ckpt.load(path)
        ckpt.load_weights(model, saved_ckpt["model"], path)
        try:
            optimizer.load_state_dict(saved_ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ckpt.CheckpointError(f"{path}: the optimizer state does not fit this network ({exc})") from None
        schedule.load_state_dict(saved_ckpt["schedule"])
        state.update(saved_ckpt["state"])
        ckpt.set_rng_state(saved_ckpt["rng"])
        if rank != 0:  # rank 0's checkpoint holds the whole window's running sums
            state["loss_sum"], state["wrong"], state["seen"] = 0.0, 0, 0
        if state["iter"] >= total:
            raise TrainingError(f"--resume {resume_dir}: the run already finished all {total} iterations, so there "
                                "is nothing to continue. To train longer, start a new run (e.g. --iters N --out NEW)")
        metrics.resume(state["iter"])
    if rank == 0:
        for line in banner(opts, recipe, model, _data_words(data, recipe, n_train), device, schedule, total,
                           iters_per_epoch, run_dir, state["iter"]):
            log.say(line)
    if resume_dir is None and rank == 0:
        config = {"name": opts.name, "recipe": effective_recipe(recipe, schedule, total), "spec_recipe": recipe,
                  "options": asdict(opts), "device": device_words(device), "precision": precision_words(opts),
                  "command": list(sys.argv), "versions": _versions(), "seed": opts.seed, "world_size": world,
                  "dataset": {"name": recipe["dataset"], "shape": list(data.shape), "classes": data.num_classes,
                              "train_size": n_train}, "iterations": total, "iters_per_epoch": iters_per_epoch,
                  **opts.extra_config}
        rundir.write_config(run_dir, config)

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    if opts.compile:
        net = torch.compile(net)

    folder_iter = None
    if pipeline is None:
        folder_iter = _FolderBatches(data, recipe, opts, batch, rank, world)

    def save():
        if rank != 0:
            return
        bad = next((n for n, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()),
                   None)
        if bad is not None:
            kept = f"the last good checkpoint is {path}" if os.path.exists(path) else "no checkpoint was written"
            raise TrainingError(f"the weights diverged ({bad} is not finite) by iteration {state['iter']}; "
                                f"training stopped; {kept}. Try a lower --lr or a warm-up")
        ckpt.save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "schedule": schedule.state_dict(), "state": dict(state), "rng": ckpt.rng_state(),
                          "recipe": recipe, "normalization": pipeline.stats() if pipeline is not None else None},
                         path)

    progress = Progress(total, state["iter"], quiet=opts.quiet or rank != 0, log=log)
    start_time = time.perf_counter() - state["elapsed"]
    perm_epoch, perm = -1, None
    last_row = None
    net.train()
    with _Stop() as stop:
        for it in range(state["iter"], total):
            epoch, pos = divmod(it, iters_per_epoch)
            if pipeline is not None:
                if epoch != perm_epoch:
                    perm, perm_epoch = epoch_permutation(n_train, opts.seed, epoch), epoch
                idx = perm[pos * batch:(pos + 1) * batch]
                gen = torch.Generator().manual_seed(_seed_for(opts.seed, it))
                x, y = pipeline.train_batch(idx, gen)
                x, y = x[rank::world], y[rank::world]
            else:
                x, y = folder_iter.batch(epoch, pos)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if opts.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = schedule.lr_at(it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.get("label_smoothing", 0.0))
            if not torch.isfinite(loss):
                kept = f"the last good checkpoint is {path}" if os.path.exists(path) else "no checkpoint was written"
                raise TrainingError(f"the loss became {loss.item()} at iteration {it + 1} (lr {lr:g}); training "
                                    f"stopped; {kept}. Try a lower --lr or a warm-up")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            wrong = (logits.argmax(1) != y).sum().item()
            state["loss_sum"] += loss.item() * y.numel()
            state["wrong"] += wrong
            state["seen"] += y.numel()
            batch_error = 100.0 * wrong / y.numel()
            recent = (state["recent_errors"] + [batch_error])[-20:]
            state["recent_errors"] = recent
            schedule.observe_train_error(it, sum(recent) / len(recent))
            state["iter"] = it + 1
            progress.update(loss.item(), batch_error, lr)
            done = it + 1 == total
            if (it + 1) % eval_every == 0 or done:
                last_row = _evaluate_and_log(model, data, pipeline, opts, batch, device,
                                             amp_dtype, state, it, iters_per_epoch, lr, start_time, metrics,
                                             schedule, rank, world, progress)
            if (it + 1) % ckpt_every == 0 or done or stop.requested:
                if (it + 1) % ckpt_every == 0 or done:  # a collective: only where every rank is, never on a signal
                    _reduce_window(state, device, rank, world)
                state["elapsed"] = time.perf_counter() - start_time
                save()
            if stop.requested and not done:
                progress.close()
                metrics.close()
                raise Interrupted(f"{stop.requested} received: stopped after iteration {it + 1} of {total}; "
                                  f"checkpoint written. Resume with: --resume {run_dir}")
    progress.close()
    metrics.close()
    if world > 1:
        torch.distributed.barrier()
    return {"run_dir": run_dir, "last": last_row, "iterations": total, "model": model}


def _reduce_window(state, device, rank, world) -> None:
    """Sum the running training loss and error of every rank's shard into rank 0's (the others restart at zero),
    so that the logged training figures are the whole batch's, and a checkpoint (written by rank 0) holds them."""
    if world == 1:
        return
    totals = torch.tensor([state["loss_sum"], float(state["wrong"]), float(state["seen"])], dtype=torch.float64,
                          device=device if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.all_reduce(totals)
    if rank != 0:
        totals.zero_()
    state["loss_sum"], state["wrong"], state["seen"] = totals[0].item(), int(totals[1].item()), int(totals[2].item())


def _evaluate_and_log(model, data, pipeline, opts, batch, device, amp_dtype, state, it, ipe, lr, start_time,
                      metrics, schedule, rank, world, progress) -> dict | None:
    row = None
    _reduce_window(state, device, rank, world)
    if rank == 0:
        res = evaluate(model, test_batches(data, pipeline, opts, max(batch, 256)), device, amp_dtype,
                       opts.channels_last)
        seen = max(state["seen"], 1)
        row = {"iter": it + 1, "epoch": round((it + 1) / ipe, 4), "lr": lr,
               "train_loss": state["loss_sum"] / seen, "train_error": 100.0 * state["wrong"] / seen,
               "test_loss": res["loss"], "test_error": res["error"], "test_top5_error": res["top5_error"],
               "seconds": round(time.perf_counter() - start_time, 3)}
        metrics.write(row)
        progress.note(row)
        schedule.observe_val_error(res["error"])
    if world > 1:
        # every rank must take the same plateau decision; rank 0's evaluation decides
        flag = torch.tensor([schedule.plateau_scale, schedule.plateau_best, schedule.plateau_bad],
                            dtype=torch.float64, device="cuda" if torch.cuda.is_available() and
                            torch.distributed.get_backend() == "nccl" else "cpu")
        torch.distributed.broadcast(flag, 0)
        schedule.plateau_scale, schedule.plateau_best, schedule.plateau_bad = flag[0].item(), flag[1].item(), \
            int(flag[2].item())
    state["loss_sum"], state["wrong"], state["seen"] = 0.0, 0, 0
    return row


class _FolderBatches:
    """Batches of an image-folder dataset in the exact order of (seed, epoch, position), through DataLoader
    workers with pinned memory; a resumed run restarts at the same position of the same permutation."""

    def __init__(self, data: FolderData, recipe, opts, batch, rank, world):
        self.ds = data.train_dataset(recipe.get("augment", []), crop=data.shape[1])
        self.n = len(self.ds)
        self.opts, self.batch_size, self.rank, self.world = opts, batch, rank, world
        self.epoch, self.iter = None, None

    def _start(self, epoch, pos):
        perm = epoch_permutation(self.n, self.opts.seed, epoch).tolist()
        per_iter = [perm[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world]
                    for i in range(pos, self.n // self.batch_size)]
        gen = torch.Generator().manual_seed(_seed_for(self.opts.seed, "loader", epoch, pos))
        loader = torch.utils.data.DataLoader(self.ds, batch_sampler=per_iter, num_workers=self.opts.workers,
                                             pin_memory=torch.cuda.is_available(), generator=gen,
                                             persistent_workers=False)
        self.epoch, self.next_pos, self.iter = epoch, pos, worker_errors_unwrapped(loader)

    def batch(self, epoch, pos):
        if self.epoch != epoch or self.next_pos != pos:
            self._start(epoch, pos)
        self.next_pos += 1
        return next(self.iter)


def run_with_errors(fn, *args, **kwargs):
    """Call ``fn``; map the trainer's expected failures to (message, exit code) for command-line front ends."""
    try:
        return fn(*args, **kwargs), None
    except Interrupted as exc:
        return None, (str(exc), 130)
    except (TrainingError, DataError, ckpt.CheckpointError, rundir.RunDirError) as exc:
        return None, (str(exc), 1)
    except OutputError as exc:  # a full disk or a vanished folder while writing a run's records
        return None, (f"{exc}; the last checkpoint is intact", 1)
        return None, (str(exc), 1)


__all__ = ["RunOptions", "train", "evaluate", "TrainingError", "Interrupted", "run_with_errors", "pick_device"]
