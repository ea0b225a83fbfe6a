"""The training loop: any ``nn.Module`` with a recipe, exact resume, single process or torch.distributed.

`train` owns the run directory (lock, records, the closing line); `session.prepare` builds what the run trains;
the loop steps through iterations without waiting for the device (steps.Window) and stops to read, evaluate and
checkpoint at fixed iterations, so a run's figures do not depend on where it was stopped and resumed.
"""
from __future__ import annotations

import contextlib
import os
import platform
import shlex
import sys
import time
import uuid
from dataclasses import asdict, replace
from typing import Callable

import torch

from . import checkpoint as ckpt
from . import final, rundir, views
from .ctrl_c import CTRL_C, before_exit
from .batches import input_normalization
from .data import DataError
from .fileio import OutputError
from .metrics import MetricsLog
from .kept import torch_settings_kept
from .options import MAX_SEED, bad_value, misuse
from .report import Progress, RunLog, banner, device_words, effective_recipe, precision_words
from .evaluation import evaluate, evaluator
from .points import evaluate_and_log, missed, observe_warmup, pending
from .session import (Interrupted, RunOptions, Session, TrainingError, apply_overrides, distributed_env, pick_device,
                      prepare)
from .stepping import step_words, stepper
from .steps import Window, reduce_window
from .stopping import Stop

CHECKPOINT = rundir.CHECKPOINT
# options a resumed run takes from its config.json; giving another value on resume is refused, not ignored
RESUMED_OPTIONS = ("data", "seed", "train_subset", "test_subset", "iters", "epochs", "eval_every",
                   "checkpoint_every", "amp", "channels_last", "deterministic", "batch_size", "lr", "decode", "threads")


def _versions() -> dict:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


def _resume_options(opts: RunOptions, saved: dict, world: int) -> dict:
    """Take a resumed run's options from its config.json; a flag given with another value, or another number of
    processes, is an error."""
    rundir.check_world(opts.resume, saved, world)
    old, recipe = saved["options"], saved["recipe"]
    old = dict(old, batch_size=recipe.get("batch"), lr=recipe.get("lr"))
    for key in RESUMED_OPTIONS:
        given = getattr(opts, key)
        if given not in (None, False, "auto") and given != old.get(key):  # "auto": --amp/--decode not given
            flag = "--" + key.replace("_", "-")
            raise TrainingError(f"--resume {opts.resume} continues the run exactly as it was started, with "
                                f"{flag} {old.get(key)}; {flag} {given} cannot change now. Drop the flag, or start "
                                "a new run with --out")
        setattr(opts, key, old.get(key))
    opts.data_dir = opts.data_dir or old.get("data_dir")
    opts.extra_config = dict(opts.extra_config, run_id=saved.get("run_id"))  # its checkpoints keep the run's id
    rundir.check_same_spec(opts.resume, opts.extra_config, saved)
    return recipe


def _check_seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise TrainingError(f"--seed {seed} is out of range: use a whole number from 0 to {MAX_SEED}")
    return seed


def train(model_fn: Callable, recipe: dict, opts: RunOptions) -> dict:
    """Train ``model_fn(shape, num_classes)`` (an ``nn.Module`` for the data's (C, H, W) images and class count)
    with ``recipe`` under ``opts``; returns ``{"run_dir", "iterations", "last" (the last metrics row), "model"
    (trained, on its device), "normalization" (how it takes its input: batches.input_normalization), "final" (the
    final test's figures, where the recipe names one)}``. torch's process-wide settings the run changes are put
    back when it returns (resdsl.train.kept)."""
    if why := bad_value(vars(opts)) or misuse(vars(opts)):  # what the command line refuses, given in Python
        raise TrainingError(why)
    opts = replace(opts)  # the run settles its options (amp, seed, threads): the caller's stay as given
    with torch_settings_kept():
        return _train_in(model_fn, recipe, opts)


def _train_in(model_fn: Callable, recipe: dict, opts: RunOptions) -> dict:
    rank, world = distributed_env()
    pick_device(opts.device)  # an unavailable device is refused before a run directory is made
    resume_dir = opts.resume
    if resume_dir is not None:
        rundir.check_resume_target(resume_dir, opts.out, opts.overwrite)
        opts.out = run_dir = resume_dir
        lock = rundir.resume(run_dir) if rank == 0 else None
        try:
            recipe = _resume_options(opts, rundir.read_config(resume_dir), world)
            rundir.check_checkpoint(resume_dir)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    else:
        recipe = apply_overrides(recipe, opts)
        opts.seed = _check_seed(opts.seed or 0)
        opts.extra_config = dict(opts.extra_config, run_id=uuid.uuid4().hex)  # config.json and every checkpoint
        run_dir = opts.out or rundir.default_path(opts.name)
        fresh = rundir.newness(run_dir)
        lock = rundir.start(run_dir, opts.overwrite) if rank == 0 else None
    # with --overwrite the previous run stays whole, its train.log untouched, until this one is prepared (_train)
    log = RunLog(run_dir, enabled=rank == 0 and not (opts.overwrite and resume_dir is None))
    owns_group = world > 1 and not torch.distributed.is_initialized()  # prepare() joins the process group

    def cut_short(words: str) -> None:  # train.log says why; a run that ended before its first record leaves no folder
        log.say(words, err=True, show=False)
        if lock is not None and resume_dir is None and fresh:
            rundir.remove_if_unused(run_dir, made=fresh == "made")

    try:
        with before_exit(lambda: cut_short(f"stopped: {CTRL_C}")):  # a Ctrl-C while torchvision & co. load
            result = _with_peers(lambda: _train(model_fn, recipe, opts, run_dir, rank, world, log), rank, world,
                                 run_dir)
    except BaseException as exc:
        if rank != 0 and isinstance(exc, DataError):  # its own share of the data: rank 0 cannot say it
            print(f"resdsl: error: process {rank} of {world}: {exc}", file=sys.stderr, flush=True)
        cut_short(f"stopped: {exc}" if isinstance(exc, Interrupted) else f"stopped: {CTRL_C}"
                  if isinstance(exc, KeyboardInterrupt) else f"error: {exc}")
        raise
    finally:
        if lock is not None:
            lock.release()
        if owns_group and torch.distributed.is_initialized():  # leaving gloo's threads running can abort the exit
            torch.distributed.destroy_process_group()
    last = result.get("final") or result["last"]  # the final test in the recipe's view, where there is one
    if last is not None:
        view = f" ({last['view']})" if "view" in last else ""
        n = result["iterations"]
        log.say(f"done: {n:,} iteration{'' if n == 1 else 's'}, test error{view} {last['test_error']:.2f}% (top-5 "
                f"{last['test_top5_error']:.2f}%), run directory {run_dir}")
    return result


def _with_peers(fn, rank: int, world: int, run_dir: str):
    """``fn()``; in a run of several processes, the error torch.distributed raises when another process stopped
    or died (a gloo or NCCL collective that lost its peer) is said as such, not as a crash of this one."""
    try:
        return fn()
    except RuntimeError as exc:
        text = str(exc)
        lost = isinstance(exc, getattr(torch.distributed, "DistError", ())) or any(
            word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed"))
        if world == 1 or not lost:
            raise
        first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
        kept = os.path.join(run_dir, CHECKPOINT)
        resume = (f"the last checkpoint is intact: resume with --resume {shlex.quote(run_dir)}"
                  if os.path.exists(kept) else "no checkpoint was written yet")
        raise TrainingError(f"process {rank} of {world} lost contact with the others ({first}): one of them failed "
                            f"(its error is above) or died; {resume}") from None


def _data_words(data, recipe, n_train) -> str:
    """``fashion-mnist, 1x28x28 images, 10 classes: 60,000 train / 10,000 test`` (the test part is held out of the
    training set when the recipe has a split)."""
    n_test = data.test_x.shape[0] if hasattr(data, "test_x") else data.test_size
    held = " held out of the training set" if recipe.get("split") else ""
    shape = "x".join(map(str, data.shape))
    return (f"{recipe['dataset']}, {shape} images, {data.num_classes} classes: {n_train:,} train / {n_test:,} "
            f"test{held}")


def _train(model_fn, recipe, opts, run_dir, rank, world, log) -> dict:
    s = prepare(model_fn, recipe, opts, rank, world)
    if opts.overwrite and opts.resume is None and rank == 0:
        rundir.clear_previous(run_dir)
        log.enabled = True
    state = {"iter": 0, "elapsed": 0.0, "loss_sum": 0.0, "wrong": 0, "seen": 0, "recent_errors": []}
    metrics = MetricsLog(run_dir, enabled=rank == 0)
    path = os.path.join(run_dir, CHECKPOINT)
    # the final test in the recipe's view (final.py): as a new run's recipe asks, as a resumed run's record says
    test = final.due(s.recipe, s.data) if opts.resume is None else _recorded_final_test(run_dir)
    try:
        if opts.resume is not None:
            saved = rundir.read_config(run_dir)
            rundir.check_same_data(opts.resume, saved, _data_record(s))
            _restore(s, state, path, metrics, test)
            if rank == 0 and rundir.trained_on(saved) not in (None, s.device.type):
                log.say(f"note: the run trained on {rundir.trained_on(saved)} and goes on on {s.device.type}: the "
                        "continuation is not bit for bit the one the first device would have trained")
        if rank == 0:
            for line in banner(opts, s.recipe, s.model, _data_words(s.data, s.recipe, s.n_train), s.device,
                               s.schedule, s.total, s.iters_per_epoch, run_dir, state["iter"], step_words(s), s.world):
                log.say(line)
            tested = final.plan_words(test, s.data, s.recipe)
            if tested:
                log.say(tested)
            if opts.resume is None:
                rundir.write_config(run_dir, dict(_config(s), final_test=test))
        if state["iter"] < s.total or pending(state):
            result = _loop(s, state, metrics, log, run_dir, path)
        else:  # a finished run resumed for its final test alone (_restore refuses it otherwise)
            result = {"run_dir": run_dir, "last": None, "iterations": s.total, "model": s.model}
        result["normalization"] = input_normalization(s.pipeline)
        if rank == 0 and test:
            result["final"] = final.run(s, run_dir, test, s.total, lambda text: log.say(text))
        metrics.close()  # the last curves.png: a disk full now still says what of the run is kept
    except OutputError as exc:  # a full disk or a vanished folder while writing the run's records
        metrics.close(quietly=True)
        raise OutputError(f"{exc}; {rundir.what_is_kept(path)}") from None
    except BaseException:
        metrics.close(quietly=True)  # curves.png shows every row written; TensorBoard's writer is closed
        raise
    return result


def _recorded_final_test(run_dir: str) -> dict | None:
    """The final test a resumed run's record says is due, as a full view table (a record may hold a name)."""
    recorded = rundir.read_config(run_dir).get("final_test")
    try:
        return views.view_of(recorded) if recorded else None
    except DataError as exc:
        raise rundir.RunDirError(f"--resume {run_dir}: {rundir.CONFIG} is damaged (final_test: {exc}), so the run's "
                                 "settings are unknown; its checkpoint is left as it is") from None


def _restore(s: Session, state: dict, path: str, metrics: MetricsLog, test: dict | None) -> None:
    """Model, optimizer, schedule, running figures and RNG states from the run's checkpoint (a finished run is
    refused unless its last evaluation or its final test in ``test``'s view is still to do)."""
    saved = ckpt.load(path)
    ckpt.check_same_run(saved, s.opts.extra_config, path, "it cannot continue this run. Resume the run it came from")
    ckpt.check_resumable(saved, path)
    ckpt.load_weights(s.model, saved["model"], path)
    ckpt.load_optimizer(s.optimizer, saved["optimizer"], path)
    s.schedule.load_state_dict(saved["schedule"])
    state.update(saved["state"])
    ckpt.set_rng_state(saved["rng"], path, s.device)
    if s.rank != 0:  # rank 0's checkpoint holds the whole window's running sums
        state["loss_sum"], state["wrong"], state["seen"] = 0.0, 0, 0
    if state["iter"] >= s.total and not (test and not final.written(os.path.dirname(path))) and not pending(state):
        raise TrainingError(f"--resume {s.opts.resume}: the run already finished all {s.total} iterations, so there "
                            "is nothing to continue. To train longer, start a new run (e.g. --iters N --out NEW)")
    due = state["iter"] % s.eval_every == 0 or state["iter"] == s.total  # its row was written before it
    metrics.resume(state["iter"], row_at_checkpoint=due and not pending(state),
                   rows_before=state["iter"] >= s.eval_every)


def _config(s: Session) -> dict:
    """config.json: what runs, as it runs (the recipe in iterations, the device chosen, the command line)."""
    opts = s.opts
    return {"name": opts.name, "recipe": effective_recipe(s.recipe, s.schedule, s.total), "spec_recipe": s.recipe,
            "options": asdict(opts), "device": device_words(s.device), "precision": precision_words(opts, s.world),
            "stepping": step_words(s) or "eager steps",
            "command": list(sys.argv), "versions": _versions(), "seed": opts.seed, "world_size": s.world,
            "dataset": _data_record(s), "iterations": s.total, "iters_per_epoch": s.iters_per_epoch,
            **opts.extra_config}


def _data_record(s: Session) -> dict:
    """config.json's ``dataset``: what a resumed run checks it finds again (rundir.check_same_data)."""
    n_test = s.data.test_x.shape[0] if hasattr(s.data, "test_x") else s.data.test_size
    return {"name": s.recipe["dataset"], "shape": list(s.data.shape), "classes": s.data.num_classes,
            "train_size": s.n_train, "test_size": n_test}


def _network(s: Session):
    net = s.model
    if s.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(s.model, device_ids=[s.device.index]
                                                        if s.device.type == "cuda" else None)
    return torch.compile(net) if s.opts.compile else net


def _loop(s: Session, state: dict, metrics: MetricsLog, log: RunLog, run_dir: str, path: str) -> dict:
    s.model.train()
    window = Window(s.device, state)
    check_for = (lambda it, lr: _loss_check(it, lr, path)) if s.opts.sync_every_step else None
    say = lambda text: log.say(text, err=True)  # noqa: E731
    steps, evaluation = stepper(s, _network(s), window, check_for, say=say), evaluator(s, say=say)
    if s.rank == 0 and hasattr(steps, "on_fallback"):  # config.json says how the run steps, after a fallback too
        steps.on_fallback = lambda words: rundir.update_config(run_dir, stepping=words)
    progress = Progress(s.total, state["iter"], quiet=s.opts.quiet or s.rank != 0, log=log)
    start = time.perf_counter() - state["elapsed"]
    last_row = None
    with Stop() as stop, contextlib.closing(steps), _keeping_on_data_errors(s, state, window, steps, start, path,
                                                                            progress, run_dir, metrics):
        if pending(state):  # the evaluation its checkpoint stands at, which failed: made, then checkpointed
            it = state["iter"] - 1
            last_row = evaluate_and_log(s, state, window, it, s.schedule.lr_at(it), start, metrics, progress,
                                        evaluation)
            state["eval_missed"], state["elapsed"] = False, time.perf_counter() - start
            save_checkpoint(s, state, path, steps.optimizer_state())
        for it in range(state["iter"], s.total):
            lr = s.schedule.lr_at(it)
            loss, wrong, n = steps.step(it, lr)
            observe_warmup(s, state, it, wrong, n)
            state["iter"] = it + 1
            progress.update(it, loss, wrong, n, lr)
            done = it + 1 == s.total
            if (it + 1) % s.eval_every == 0 or done:
                _check_finite(s, window, path)
                last_row = evaluate_and_log(s, state, window, it, lr, start, metrics, progress, evaluation)
            stopping = stop.agreed(it + 1, s.device, s.world)  # every process stops after the same iteration
            if (it + 1) % s.ckpt_every == 0 or done or stopping:
                _check_finite(s, window, path)
                state.update(window.read())
                reduce_window(state, s.device, s.rank, s.world)  # a collective: every rank is at this iteration
                window.set(state["loss_sum"], state["wrong"], state["seen"])
                state["elapsed"] = time.perf_counter() - start
                save_checkpoint(s, state, path, steps.optimizer_state())
            if stopping and not done:
                if s.world > 1:
                    stop.hold()
                progress.close()
                nproc = f" --nproc {s.world}" if s.world > 1 else ""  # as it ran: another count is refused
                raise Interrupted(f"{stopping} received: stopped after iteration {it + 1} of {s.total}; "
                                  f"checkpoint written. Resume with: --resume {shlex.quote(run_dir)}{nproc}", stopping)
    progress.close()
    if s.world > 1:
        torch.distributed.barrier()
    return {"run_dir": run_dir, "last": last_row, "iterations": s.total, "model": s.model}


@contextlib.contextmanager
def _keeping_on_data_errors(s: Session, state: dict, window: Window, steps, start: float, path: str, progress,
                            run_dir: str, metrics: MetricsLog):
    """A picture that cannot be read or decoded stops the run; one process first keeps its work in a checkpoint of
    the iterations done, marked where the evaluation there failed (resumed, it is made first: points.pending)."""
    try:
        yield
    except DataError as exc:
        progress.close()
        if s.world > 1 or state["iter"] == 0:
            raise
        _check_finite(s, window, path)
        state.update(window.read())
        state["eval_missed"], state["elapsed"] = missed(s, state, metrics), time.perf_counter() - start
        save_checkpoint(s, state, path, steps.optimizer_state())
        n = state["iter"]
        raise DataError(f"{exc}. A checkpoint of the {n:,} iteration{'' if n == 1 else 's'} done was written: with "
                        f"the file replaced or removed, resume with --resume {shlex.quote(run_dir)}") from None


def _loss_check(it: int, lr: float, path: str):
    """--sync-every-step: stop at the first non-finite loss, before its step (the plain loop's behaviour)."""
    def check(loss):
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at iteration {it + 1} (lr {lr:g}); training "
                                f"stopped; {rundir.what_is_kept(path)}. Try a lower --lr or a warm-up")
    return check


def _check_finite(s: Session, window: Window, path: str) -> None:
    """Where the loop reads its figures: any non-finite loss since the last read stops the run, unsaved."""
    first = window.first_nonfinite()
    if first is not None:
        raise TrainingError(f"the loss became non-finite at iteration {first + 1} (lr {s.schedule.lr_at(first):g}); "
                            f"training stopped; {rundir.what_is_kept(path)}. Try a lower --lr or a warm-up")


def save_checkpoint(s: Session, state: dict, path: str, optimizer_state: dict) -> None:
    """The run's checkpoint (rank 0 writes it), after its weights are checked finite; written atomically."""
    if s.rank != 0:
        return
    model = s.model
    bad = _first_non_finite(model.state_dict())
    if bad is not None:
        raise TrainingError(f"the weights diverged ({bad} is not finite) by iteration {state['iter']}; training "
                            f"stopped; {rundir.what_is_kept(path)}. Try a lower --lr or a warm-up")
    ckpt.save_atomic({"model": model.state_dict(), "optimizer": optimizer_state,
                      "schedule": s.schedule.state_dict(), "state": dict(state), "rng": ckpt.rng_state(s.device),
                      "recipe": s.recipe, "normalization": s.pipeline.stats() if s.pipeline is not None else None,
                      "run_id": s.opts.extra_config.get("run_id")},
                     path)


def _first_non_finite(tensors: dict) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, else None (one device read)."""
    names = [n for n, t in tensors.items() if t.is_floating_point()]
    if not names:
        return None
    device = tensors[names[0]].device  # a module may keep a buffer elsewhere: the flags go to one device
    finite = torch.stack([torch.isfinite(tensors[n]).all().to(device) for n in names]).tolist()
    return next((n for n, ok in zip(names, finite) if not ok), None)


def run_with_errors(fn, *args, **kwargs):
    """Call ``fn``; map the trainer's expected failures to (message, exit code) for command-line front ends."""
    try:
        return fn(*args, **kwargs), None
    except Interrupted as exc:
        return None, (str(exc), exc.status)
    except (TrainingError, DataError, ckpt.CheckpointError, rundir.RunDirError) as exc:
        return None, (str(exc), 1)
    except OutputError as exc:  # a full disk or a vanished folder: _train says what of the run is kept
        return None, (str(exc), 1)


__all__ = ["RunOptions", "train", "evaluate", "TrainingError", "Interrupted", "run_with_errors", "pick_device"]
