"""A run's final test in its recipe's view: the figure the papers' tables give.

The evaluations along a run test an image folder on a single center crop (cheap, and what the curves show), but
[R] Tables 2 and 3 give 10-crop errors, Table 4 fully-convolutional multi-scale ones and [I] Table 5 those of a
320x320 crop (:mod:`views`). Where the recipe's ``test`` is such a view, the finished run's weights are tested in
it once more and the figures written to ``RUN/final-test.json`` (config.json's ``final_test`` says it is due).
A run stopped after its last checkpoint but before that file is resumed to this test alone; ``resdsl reproduce``
reads its figures in place of the last evaluation's.
"""
from __future__ import annotations

import json
import os

from . import rundir
from .data import FolderData
from .evaluation import evaluate
from .fileio import write_output
from .views import batch_pictures, view_of, words

FILE = rundir.FINAL_TEST


def due(recipe: dict, data) -> dict | None:
    """The recipe's test view (a :func:`views.view_of` table) where a run on ``data`` ends with a test in it: an
    image folder, and another view than the single center crop of the run's evaluations."""
    view = view_of(recipe.get("test"))
    return view if isinstance(data, FolderData) and view != view_of(None) else None


def plan_words(recipe: dict, data) -> str | None:
    """The banner's line on how a run is tested, where it ends with a final test."""
    view = due(recipe, data)
    if view is None:
        return None
    center = words(view_of(None), data.shape[1])
    return f"test {center} at each evaluation, then {words(view, data.shape[1])} at the end ({FILE})"


def written(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, FILE))


def missing(run_dir: str, config: dict) -> bool:
    """Whether a run's record (config.json) says a final test is due and its file is not there yet."""
    return bool(config.get("final_test")) and not written(run_dir)


def read(run_dir: str) -> dict | None:
    """A run's final-test.json (None when it has none, or it cannot be read)."""
    try:
        with open(os.path.join(run_dir, FILE), encoding="utf-8") as fh:
            found = json.load(fh)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("test_error"), (int, float)) else None


def run(s, run_dir: str, iteration: int, say) -> dict:
    """Test the session's current weights in its recipe's view; write and say the figures."""
    from .session import test_batches  # the session imports the evaluation this module uses

    view = view_of(s.recipe.get("test"))
    side = s.data.shape[1]
    batches = test_batches(s.data, s.pipeline, s.opts, batch_pictures(view, max(s.recipe["batch"], 256)),
                           test=view, device=s.device)
    res = evaluate(s.model, batches, s.device, s.amp_dtype, s.opts.channels_last)
    found = {"iter": iteration, "view": words(view, side), "test": view, "test_loss": res["loss"],
             "test_error": res["error"], "test_top5_error": res["top5_error"], "images": res["images"]}
    write_output(os.path.join(run_dir, FILE), json.dumps(found, indent=2) + "\n")
    say(f"final test ({found['view']}): top-1 error {res['error']:.2f}%, top-5 error {res['top5_error']:.2f}% on "
        f"{res['images']:,} test images ({FILE})")
    return found
