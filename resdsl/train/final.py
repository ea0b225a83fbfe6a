"""A run's final test in its recipe's view: the figure the papers' tables give.

The evaluations along a run test an image folder on a single center crop (cheap, and what the curves show), but
[R] Tables 2 and 3 give 10-crop errors, Table 4 fully-convolutional multi-scale ones and [I] Table 5 those of a
320x320 crop (:mod:`views`). Where the recipe's ``test`` is such a view, the finished run's weights are tested in
it once more and the figures written to ``RUN/final-test.json``. config.json's ``final_test`` records the view
when the run starts, and a run continues as it started: one stopped after its last checkpoint but before that file
is resumed to this test alone (runs recorded before final tests existed have none), and ``resdsl reproduce``
counts such a run unfinished and reads the file's figures in place of the last evaluation's.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import threading

import torch

from . import record, rundir
from .data import FolderData
from .evaluation import evaluate
from .fileio import read_regular, write_owned
from .session import Interrupted, TrainingError, test_batches
from .stopping import STOP_SIGNALS
from .views import batch_pictures, eval_view, view_of, words

FILE = rundir.FINAL_TEST


def due(recipe: dict, data) -> dict | None:
    """The recipe's test view (a :func:`views.view_of` table) where a new run on ``data`` ends with a test in it:
    an image folder, and other pictures than the single center crops of the run's evaluations."""
    view = view_of(recipe.get("test"))
    if not isinstance(data, FolderData) or eval_view(view, data.shape[1]) == eval_view(view_of(None), data.shape[1]):
        return None
    return view


def plan_words(view: dict | None, data, recipe: dict) -> str | None:
    """The banner's line on how a run is tested, where it ends with a final test in ``view`` or where its recipe
    names a view that the run's data does not take."""
    if view is None:
        if not isinstance(data, FolderData) and view_of(recipe.get("test")) != view_of(None):
            return (f"note: the recipe's test view ({view_of(recipe.get('test'))['view']}) is for image folders; "
                    f"{recipe.get('dataset')}'s small images are tested whole")
        return None
    center = words(view_of(None), data.shape[1])
    return f"test {center} at each evaluation, then {words(view, data.shape[1])} at the end ({FILE})"


def written(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, FILE))


def missing(run_dir: str, config: dict) -> bool:
    """Whether a run's record (config.json) says a final test is due and its file is not there yet."""
    return isinstance(config, dict) and bool(config.get("final_test")) and not written(run_dir)


def read(run_dir: str) -> dict | None:
    """A run's final-test.json (None when it has none, or it cannot be read)."""
    try:
        found = json.loads(read_regular(os.path.join(run_dir, FILE)))
    except (OSError, ValueError):
        return None
    return found if record.problem(found, record.FINAL_FIGURES) is None else None


def run(s, run_dir: str, view: dict, iteration: int, say) -> dict:
    """Test the session's current weights in ``view``; write and say the figures. Batches that do not fit in
    memory are halved (a multi-scale test's largest views are ~8 times a crop's pixels) down to one picture."""
    pictures = batch_pictures(view, max(s.recipe["batch"], 256), s.data.shape[1])
    with _stopped_by_signals(run_dir):
        while True:
            try:
                res = _test(s, view, pictures)
                break
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one, as is the CPU allocator's failure
                if "memory" not in str(exc):
                    raise
                if pictures == 1:
                    raise TrainingError(f"the final test ({words(view, s.data.shape[1])}) ran out of memory with "
                                        "one picture a batch; the run's checkpoint is whole: `resdsl eval "
                                        f"{shlex.quote(run_dir)} --test ...` tests it in another view") from None
                pictures = max(1, pictures // 2)
                say(f"note: the final test ran out of memory; {pictures} pictures a batch")
    found = {"iter": iteration, "view": words(view, s.data.shape[1]), "test": view, "test_loss": res["loss"],
             "test_error": res["error"], "test_top5_error": res["top5_error"], "images": res["images"]}
    write_owned(os.path.join(run_dir, FILE), json.dumps(found, indent=2) + "\n")
    say(f"final test ({found['view']}): top-1 error {res['error']:.2f}%, top-5 error {res['top5_error']:.2f}% on "
        f"{res['images']:,} test images ({FILE})")
    return found


def _test(s, view: dict, pictures: int) -> dict:
    if s.device.type == "cuda":
        torch.cuda.empty_cache()  # what a failed batch left cached
    batches = test_batches(s.data, s.pipeline, s.opts, pictures, test=view, device=s.device)
    return evaluate(s.model, batches, s.device, s.amp_dtype, s.opts.channels_last)


@contextlib.contextmanager
def _stopped_by_signals(run_dir: str):
    """Ctrl-C or SIGTERM during the final test stops it with the trainer's "stopped" message (the checkpoint is
    whole, and a resumed run does this test alone); nothing is written until the test is done."""

    def stop(signum, frame):
        raise Interrupted(f"{signal.Signals(signum).name} received during the final test; the run's checkpoint is "
                          f"whole. Resume with: --resume {shlex.quote(run_dir)} (to run the final test alone)",
                          signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():  # --seeds threads: their launcher's signals
        yield
        return
    old = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
