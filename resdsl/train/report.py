"""What a run tells its user: the banner at the start, a line per evaluation, the closing line, all of it also
appended to ``RUN/train.log``; and the progress bar (terminal only)."""
from __future__ import annotations

import errno
import os
import sys

from .dataerror import printable, shown
from .fileio import open_append

LOG = "train.log"


class RunLog:
    """Prints lines and appends every one of them to ``RUN/train.log`` (rank 0 only; other ranks stay silent)."""

    def __init__(self, run_dir: str, enabled: bool = True):
        self.path = os.path.join(run_dir, LOG)
        self.enabled = enabled
        self.kept = True  # False once something not a file took train.log's place: said once

    def say(self, text: str, err: bool = False, show: bool = True) -> None:
        """Print ``text`` (to stderr with ``err``; not at all without ``show``) and append it to train.log."""
        if not self.enabled:
            return
        text = shown(text)
        if show:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)
        if not self.kept:
            return
        try:
            with open_append(self.path) as fh:
                fh.write(text + "\n")
        except OSError as exc:  # the log is a copy of what was printed; a full disk is reported by the real records
            if exc.errno in (errno.ELOOP, errno.EINVAL, errno.EISDIR):  # a link, pipe or folder put in its place
                self.kept = False
                print(f"resdsl: warning: not writing {shown(self.path)}: {exc.strerror}; what is printed is not "
                      "kept there", file=sys.stderr, flush=True)


class Progress:
    """A tqdm bar with rate, loss, error and lr; silent with --quiet or when stderr is not a terminal."""

    def __init__(self, total, initial, quiet, log: RunLog):
        self.bar, self.quiet, self.log = None, quiet, log
        if quiet or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, file=sys.stderr)

    def update(self, it, loss, wrong, n, lr, every: int = 25):
        """One iteration done; the loss and error shown are read from the device only every ``every`` iterations
        (a read waits for the device)."""
        if self.bar is None:
            return
        if it % every == 0:
            self.bar.set_postfix(loss=f"{loss.item():.3f}", err=f"{100.0 * wrong.item() / n:.1f}%", lr=f"{lr:g}",
                                 refresh=False)
        self.bar.update(1)

    def note(self, row):
        text = (f"iter {row['iter']}: train loss {_num(row['train_loss'], '.4f')}, train error "
                f"{_num(row['train_error'], '.2f')}%, test error {_num(row['test_error'], '.2f')}%, lr {row['lr']:g}")
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        self.log.say(text, err=True, show=self.bar is None and not self.quiet)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _num(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def device_words(device) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)``, ``cpu (2 threads)``, ``mps``."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'' if n == 1 else 's'})"
    return str(device)


def precision_words(opts, world: int = 1) -> str:
    """How the run computes: precision and the flags that change it (``world``: the run's process count)."""
    words = ["bf16 autocast" if opts.amp == "bf16" else "fp32"]
    words += [w for w, on in (("channels-last", opts.channels_last), ("torch.compile", opts.compile),
                              ("deterministic", opts.deterministic)) if on]
    if opts.sync_bn:  # batch statistics shared across processes: nothing to share in one
        words.append(f"SyncBatchNorm over {world} processes" if world > 1 else "--sync-bn unused (one process)")
    return ", ".join(words)


def schedule_words(recipe: dict, schedule, total: int, per_epoch: int) -> str:
    """The schedule as it will run, in iterations: milestones and warm-up already scaled to the run's length."""
    kind = recipe["schedule"]["kind"]
    epochs = f"{total / per_epoch:.4g}"
    text = (f"{total:,} iteration{'' if total == 1 else 's'} ({epochs} epoch{'' if epochs == '1' else 's'} of "
            f"{per_epoch:,})")
    if kind == "step":
        times = {m: schedule.milestones.count(m) for m in schedule.milestones}  # a short run can merge two
        text += f", lr x{schedule.gamma:g} at " + (", ".join(f"{m:,}" + (f" ({n} times)" if n > 1 else "")
                                                             for m, n in times.items()) or "no milestone")
    elif kind == "plateau":
        text += f", lr x{schedule.gamma:g} after {schedule.patience} evaluations without improvement"
    else:
        text += f", {kind} lr"
    until = schedule.warmup_until_error
    if schedule.warmup_iters and recipe["warmup"]["length"] is None:
        text += f"; warm-up lr {schedule.warmup_lr:g} until training error < {until:g}%"
        if schedule.warmup_iters < schedule.total_iters:
            text += f" (at most {schedule.warmup_iters:,} iterations, to the first lr drop)"
    elif schedule.warmup_iters:
        text += (f"; warm-up lr {schedule.warmup_lr:g} for {schedule.warmup_iters:,} iteration"
                 f"{'' if schedule.warmup_iters == 1 else 's'}")
        text += f" or until training error < {until:g}%" if until is not None else ""
    return text


def banner(opts, recipe, model, data_words: str, device, schedule, total, per_epoch, run_dir, start_iter,
           step_words: str | None = None, world: int = 1) -> list:
    """The lines printed when a run starts: what is trained, where, on what, how, and where it is written. Each is
    one line: a line break in a name (a file's, a record's) is written as its escape."""
    cfg = opts.extra_config
    params = sum(p.numel() for p in model.parameters())
    spec = f" ({cfg['spec']})" if cfg.get("spec") else ""
    macs = f", {cfg['macs'] / 1e6:,.1f}M MACs per image of the spec's input" if cfg.get("macs") else ""
    r = recipe
    return [printable(line) for line in [
        f"network {cfg.get('network', opts.name)}{spec}: {params:,} parameters{macs}",
        f"device {device_words(device)}, {precision_words(opts, world)}" + (f", {step_words}" if step_words else ""),
        f"data {data_words}",
        f"recipe {r.get('name', '')}: {r['optimizer']} lr {r['lr']:g}, momentum {r['momentum']:g}"
        f"{', nesterov' if r.get('nesterov') else ''}, weight decay {r['weight_decay']:g}, batch {r['batch']}, "
        f"seed {opts.seed}",
        f"schedule {schedule_words(recipe, schedule, total, per_epoch)}",
        f"run directory {run_dir}" + (f" (resumed at iteration {start_iter:,})" if start_iter else ""),
    ]]


def effective_recipe(recipe: dict, schedule, total: int) -> dict:
    """The recipe as it ran, in iterations: the length, the scaled milestones and warm-up (what config.json keeps,
    and what a resumed run reads back unchanged)."""
    r = {**recipe, "length": {"value": total, "unit": "iterations"}}
    r["schedule"] = dict(recipe["schedule"])
    if "milestones" in r["schedule"]:
        r["schedule"]["milestones"] = list(schedule.milestones)
    if recipe.get("warmup"):
        length = None if recipe["warmup"]["length"] is None else schedule.warmup_iters  # None: the error rule's
        r["warmup"] = {**recipe["warmup"], "length": length, "unit": "iterations"}
    return r
