"""What a run's config.json must hold for the run to be resumed or evaluated: the kinds of value the trainer
reads back from it (and those of its metrics.jsonl rows and final-test.json). A record edited by hand (or cut
short, or written by something else) is refused here, naming the field, rather than failing deep inside the
trainer. Imports nothing from resdsl: it is shipped beside emitted trainers."""
from __future__ import annotations

import math

NUMBER, WHOLE, TEXT, FLAG = "a number", "a whole number", "a text", "true or false"
BOUND = "a number or an infinity"  # a plateau schedule's best error before any evaluation: inf
TEXTS = "a table of texts"  # {text: text, ...}
VIEW = "a test view's name or table"  # views.view_of: "10-crop", {"view": "multi-scale", "scales": [...]}
_OPTIONAL = object()  # marks a kind that may also be null


def optional(kind):
    """``kind``, or null."""
    return (_OPTIONAL, kind)


# the recipe as the trainer ran it (effective_recipe); its own rules (lr > 0, ...) were checked when it started.
# What the trainer reads with a default (records of older resdsl versions may lack it) may be missing
RECIPE = {
    "optimizer": TEXT, "momentum": NUMBER, "weight_decay": NUMBER, "batch": WHOLE, "lr": NUMBER,
    "schedule": {"kind": TEXT, "milestones": optional([int]), "gamma": optional(NUMBER),
                 "patience": optional(WHOLE)},
    "warmup": optional({"lr": NUMBER, "length": optional(WHOLE), "until_error": optional(NUMBER)}),
    "length": {"value": WHOLE, "unit": TEXT}, "nesterov": optional(FLAG), "augment": optional([dict]),
    "normalize": optional(TEXT), "label_smoothing": optional(NUMBER), "test": optional(VIEW),
}
# what else a recipe holds: the spec's name for it, its dataset and train/held-out split (a run records these
# under options and dataset); a field outside these is a misspelling the trainer would not read
RECIPE_FIELDS = (*RECIPE, "dataset", "split", "name")
# the options a resumed run takes from its record (loop.RESUMED_OPTIONS and data_dir)
OPTIONS = {
    "data": optional(TEXT), "data_dir": optional(TEXT), "seed": WHOLE, "amp": optional(TEXT),
    "channels_last": FLAG, "deterministic": FLAG, "decode": optional(TEXT),
    **{key: optional(WHOLE) for key in ("train_subset", "test_subset", "iters", "epochs", "eval_every",
                                            "checkpoint_every")},
}
# the spec's files as the run compiled them (pipeline.CheckedNetwork.files): path -> text (a path it lacks is
# said when the spec is compiled)
SPEC_FILES = {"path": TEXT, "files": TEXTS, "aliases": optional(TEXTS)}
RECORD = {"recipe": RECIPE, "options": OPTIONS, "iterations": WHOLE, "spec_files": optional(SPEC_FILES),
          "final_test": optional(VIEW), "network": optional(TEXT)}

# final-test.json (final.run writes it) as its readers take it: the figures and the view's words
FINAL_FIGURES = {"test_error": NUMBER, "test_top5_error": optional(NUMBER), "view": optional(TEXT),
              "iter": optional(WHOLE)}
# a row of metrics.jsonl (points.evaluate_and_log writes it): its figures, each null where it was not finite
FIGURES = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "test_top5_error", "seconds")
METRICS_ROW = {"iter": WHOLE, **{key: optional(NUMBER) for key in FIGURES}}


def metrics_row(value) -> dict | None:
    """A metrics.jsonl row (parsed) with every figure (null where the row lacks it), or None where it is not one:
    a row of text, or of a figure that is not a number, counts as damaged."""
    if problem(value, METRICS_ROW) is not None:
        return None
    return {**dict.fromkeys(FIGURES), **value}


def recipe_problem(recipe) -> str | None:
    """What is wrong with a recipe given to the trainer as a plain dict (from Python, or an emitted trainer's
    edited recipe.json), which no spec grammar checked: a field it does not know, or a value of the wrong kind."""
    unknown = sorted(set(recipe) - set(RECIPE_FIELDS)) if isinstance(recipe, dict) else []
    if unknown:
        return f"the recipe has no field {unknown[0]!r} (its fields: {', '.join(RECIPE_FIELDS)})"
    return problem(recipe, RECIPE, "recipe")


def problem(record, kind=None, where: str = "") -> str | None:
    """The first field of ``record`` that is not of its kind, as 'FIELD is X, not KIND', else None."""
    kind = RECORD if kind is None else kind
    if isinstance(kind, tuple):  # optional(kind)
        return None if record is None else problem(record, kind[1], where)
    if isinstance(kind, dict):
        if not isinstance(record, dict):
            return f"{where or 'the record'} is {_shown(record)}, not a table of fields"
        for key, sub in kind.items():
            if key not in record and not (isinstance(sub, tuple) and sub[0] is _OPTIONAL):
                return f"{where + '.' if where else ''}{key} is missing"
            found = problem(record.get(key), sub, f"{where + '.' if where else ''}{key}")
            if found:
                return found
        return None
    if isinstance(kind, list):
        if not isinstance(record, list) or not all(isinstance(item, kind[0]) and not isinstance(item, bool)
                                                   if isinstance(kind[0], type) else _is(item, kind[0])
                                                   for item in record):
            each = {dict: "tables", int: "whole numbers", NUMBER: "numbers"}[kind[0]]
            return f"{where} is {_shown(record)}, not a list of {each}"
        return None
    return None if _is(record, kind) else f"{where} is {_shown(record)}, not {kind}"


def _is(value, kind: str) -> bool:
    if kind == FLAG:
        return isinstance(value, bool)
    if kind == TEXT:
        return isinstance(value, str)
    if kind == VIEW:
        return _is_view(value)
    if kind == TEXTS:
        return isinstance(value, dict) and all(isinstance(text, str) for text in value.values())
    if isinstance(value, bool):  # JSON's true is no number
        return False
    if kind == WHOLE:
        return isinstance(value, int)
    if kind == BOUND:
        return isinstance(value, (int, float)) and not math.isnan(value)
    return isinstance(value, (int, float)) and math.isfinite(value)


def _is_view(value) -> bool:
    """A test view's name, or its table: {"view": name, "scale"/"crop": whole or null, "scales": whole numbers}."""
    if isinstance(value, str):
        return True
    if not isinstance(value, dict) or not isinstance(value.get("view"), str):
        return False
    sizes = [value[k] for k in ("scale", "crop") if value.get(k) is not None]
    scales = value.get("scales") if value.get("scales") is not None else []
    return isinstance(scales, list) and all(_is(n, WHOLE) for n in sizes + scales)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
