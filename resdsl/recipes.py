"""Training recipes: a `recipe` block merged with the recipes it extends, filled with defaults and checked
(:func:`resolve_recipe`), and `resdsl train --set FIELD=VALUE` applied to one (:func:`recipe_with_settings`)."""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from . import catalog
from . import syntax as ast
from .errors import Span, SpecError, few
from .parse import parse_text
from .reading import STATEMENT_WORDS
from .train.vocabulary import RECIPE_DATASETS  # the trainer's own words (a torch-free module)

if TYPE_CHECKING:
    from .resolve import ResolvedSpec  # which imports this module

OPTIMIZERS = ("sgd",)

RECIPE_DEFAULTS = {
    "optimizer": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "schedule": {"kind": "constant"},
    "warmup": None, "augment": [], "normalize": "none", "dataset": None, "split": None, "label_smoothing": 0.0,
    "test": "single-view",
}
RECIPE_REQUIRED = ("lr", "batch", "length")
MAX_SIDE = 4096  # a side in pixels that an augmentation or a test view resizes to, crops or pads by


def resolve_recipe(name: str, recipes: dict[str, ast.RecipeDef], span: Span, recorded: bool = False) -> dict:
    """Merge a recipe with its bases, fill defaults, validate ranges; returns a JSON-ready dict. ``recorded``: the
    spec is a run's record of the one it trained from, which rules newer than resdsl's first runs do not refuse
    (see _newer_rules)."""
    chain: list[ast.RecipeDef] = []
    seen: set[str] = set()
    current, where = name, span
    while current is not None:
        if current in seen:
            names = [c.name for c in chain]
            cycle = [*names[names.index(current):], current]  # the loop itself, not the way into it
            raise SpecError(f"cyclic recipe extends: {few(cycle, ' -> ')}", where)
        rdef = recipes.get(current)
        if rdef is None:
            known = few(sorted(recipes)) or "none defined"
            raise SpecError(f"unknown recipe '{current}'", where,
                            hint=f"known recipes: {known}; define one with 'recipe NAME {{ ... }}' or include a file")
        seen.add(current)
        chain.append(rdef)
        current, where = (rdef.base.value, rdef.base.span) if rdef.base else (None, None)
    fields: dict[str, ast.RecipeField] = {}
    for rdef in reversed(chain):
        local: dict[str, ast.RecipeField] = {}
        for f in rdef.fields:
            if f.key in local:
                raise SpecError(f"recipe field '{f.key}' is given twice (first at line {local[f.key].span.line})",
                                f.span)
            local[f.key] = f
        fields.update(local)
    out = dict(RECIPE_DEFAULTS)
    out.update({k: f.value for k, f in fields.items()})
    for key in RECIPE_REQUIRED:
        if key not in fields:
            raise SpecError(f"recipe '{name}' does not set '{key}'", chain[0].span,
                            hint={"lr": "e.g. 'lr 0.1'", "batch": "e.g. 'batch 128'",
                                  "length": "e.g. 'length 64000 iterations'"}[key])
    _validate_recipe(out, fields, chain[0].span, recorded)
    out["name"] = name
    return out


def _validate_recipe(r: dict, fields: dict[str, ast.RecipeField], default_span: Span, recorded: bool) -> None:
    def at(key):
        return fields[key].span if key in fields else default_span

    def bad(key, msg, hint=None):
        raise SpecError(msg, at(key), hint=hint)

    if r["optimizer"] not in OPTIMIZERS:
        bad("optimizer", f"unknown optimizer '{r['optimizer']}'", hint="supported: " + ", ".join(OPTIMIZERS))
    if not r["lr"] > 0:
        bad("lr", "learning rate must be positive")
    if not 0 <= r["momentum"] < 1:
        bad("momentum", "momentum must be in [0, 1)")
    if r["weight_decay"] < 0:
        bad("weight_decay", "weight decay cannot be negative")
    if r["batch"] < 1:
        bad("batch", "batch size must be at least 1")
    if r["length"]["value"] < 1:
        bad("length", "training length must be at least 1")
    if not 0 <= r["label_smoothing"] < 1:
        bad("label_smoothing", "label smoothing must be in [0, 1)")
    sched = r["schedule"]
    if sched["kind"] == "step":
        ms = sched["milestones"]
        if any(b <= a for a, b in zip(ms, ms[1:])):
            bad("schedule", "schedule milestones must increase")
        if ms and ms[-1] >= r["length"]["value"]:
            bad("schedule", f"milestone {ms[-1]} is not before the end of training "
                            f"({r['length']['value']} {r['length']['unit']})",
                hint="milestones are counted in the same unit as 'length'")
    if sched["kind"] in ("step", "plateau") and not 0 < sched["gamma"] <= 1:
        bad("schedule", "gamma must be in (0, 1]")
    if sched["kind"] == "plateau" and sched["patience"] < 1:
        bad("schedule", "patience must be at least 1")
    if r["warmup"] is not None:
        _validate_warmup(r["warmup"], r["length"], lambda msg, hint=None: bad("warmup", msg, hint))
    if not recorded:
        _newer_rules(r, bad)
    for aug in r["augment"]:
        if aug["kind"] == "scale" and not 0 < aug["min"] <= aug["max"]:
            bad("augment", "scale augmentation needs 0 < min <= max")
        if aug["kind"] == "scale" and aug["crop"] > aug["min"]:
            bad("augment", f"crop {aug['crop']} is larger than the shortest resized side {aug['min']}")
        if aug["kind"] == "random-resized-crop" and aug["size"] < 1:
            bad("augment", "crop size must be positive")
    _validate_test(r["test"], lambda msg: bad("test", msg))
    if r["dataset"] is not None and r["dataset"] not in RECIPE_DATASETS:
        bad("dataset", f"unknown dataset '{r['dataset']}'", hint="known datasets: " + ", ".join(RECIPE_DATASETS))
    if r["split"] is not None and min(r["split"]) < 1:
        bad("split", "both parts of a train/val split must be positive")
    for key in ("lr", "momentum", "weight_decay", "label_smoothing"):
        if not math.isfinite(r[key]):
            bad(key, f"{key} is not a finite number")


def _validate_warmup(w: dict, length: dict, bad) -> None:
    """A warm-up's lr, length (in the run's unit where it gives none) and until-error rule."""
    if w["unit"] is None:
        w["unit"] = length["unit"]
    if not (w["lr"] > 0 and math.isfinite(w["lr"])):
        bad("warm-up learning rate must be a positive number")
    if w["unit"] == length["unit"] and w["length"] is not None and w["length"] >= length["value"]:
        bad("warm-up is not shorter than the whole run")
    if w["until_error"] is not None and not 0 < w["until_error"] <= 100:
        bad("until-error is a percentage in (0, 100]")


def _newer_rules(r: dict, bad) -> None:
    """Rules added after resdsl had trained runs that they refuse: a run's record of its spec is not held to them, so
    that the run is still resumed and evaluated. An augmentation's sizes above MAX_SIDE, as a test view's (a batch
    padded or resized beyond that does not fit in memory). One crop step at most (the trainer cut by the last alone)."""
    crops = [aug["kind"] for aug in r["augment"] if aug["kind"] in ("pad-crop", "scale", "random-resized-crop")]
    if len(crops) > 1:
        bad("augment", f"an augment list takes one crop step, not {len(crops)} ({', '.join(crops)}): the trainer "
                       "would cut by the last alone")
    for aug in r["augment"]:
        sizes = {"pad-crop": [aug.get("padding")], "scale": [aug.get("max"), aug.get("crop")],
                 "random-resized-crop": [aug.get("size")]}.get(aug["kind"], [])
        if any(n > MAX_SIDE for n in sizes):
            bad("augment", f"{aug['kind']} sizes are at most {MAX_SIDE} pixels")


def _validate_test(test, bad) -> None:
    """A test view's sizes: a crop cut from a shorter side at least as long, scales each given once."""
    if not isinstance(test, dict):
        return
    sides = [test["scale"], test["crop"]] if "crop" in test else test["scales"]
    if not all(0 < n <= MAX_SIDE for n in sides):
        bad(f"test sizes are between 1 and {MAX_SIDE} pixels")
    if "crop" in test and test["crop"] > test["scale"]:
        bad(f"the test crop {test['crop']} is larger than the shorter side {test['scale']} it is cut from")
    if "scales" in test and len(set(sides)) < len(sides):
        bad("a multi-scale test names a scale twice")


# ---------------------------------------------------------------------------------------------
# `resdsl train --set FIELD=VALUE`: recipe overrides written and checked exactly as in a recipe block

SET_PATH = "--set"
# what a spec without a recipe is told to add (`include "recipes"` finds the packaged recipes.res from anywhere)
NO_RECIPE_HINT = "add e.g. 'include \"recipes\"' and 'recipe cifar_resnet'"


def recipe_with_settings(resolved: ResolvedSpec, settings: list[str], length: tuple[int, str] | None = None) -> dict:
    """The spec's recipe with each ``FIELD=VALUE`` of ``settings`` (``momentum=0.95``, ``schedule=step 100, 150``)
    applied: the settings become the fields of a recipe that extends the spec's, parsed by the same grammar and
    validated by the same rules; an error is located at the offending setting (``--set:N:COL``, N counting the
    --set flags). ``length``: the run's length from ``--iters``/``--epochs`` as (value, unit); where the settings
    give the schedule (and not the length), its milestones count in that length as written (the recipe's own
    milestones are scaled to an overridden length, but these the user wrote for it), and so does a warm-up
    given in the settings."""
    if resolved.recipe is None:
        raise SpecError("--set changes the training recipe, but the spec names none", Span(resolved.path, 1, 1),
                        hint=NO_RECIPE_HINT)
    lines = [_setting_line(item, number, resolved.path) for number, item in enumerate(settings, start=1)]
    keys = {line.split(" ", 1)[0] for line in lines}
    if length is not None and "schedule" in keys and "length" not in keys:
        lines.append(f"length {length[0]} {length[1]}")  # last, so that errors keep their --set numbers
    body = "\n".join(lines)
    source = f"recipe cli_settings extends {resolved.recipe['name']} {{\n{body}\n}}\n"
    try:
        (rdef,) = parse_text(source, SET_PATH).statements
        unit_written = next((f.value["unit"] for f in rdef.fields if f.key == "warmup" and f.value), None)
        recipe = resolve_recipe("cli_settings", {**resolved.recipes, "cli_settings": rdef}, rdef.span)
    except SpecError as err:
        raise _setting_error(err, body) from None
    recipe["name"] = resolved.recipe["name"]  # the run records its --set list beside the recipe
    if length is not None and "warmup" in keys and "length" not in keys and recipe["warmup"] is not None:
        at = [ln.split(" ", 1)[0] for ln in lines].index("warmup") + 1  # its --set number
        _warmup_as_written(recipe["warmup"], unit_written, length, at)
    return recipe


def _warmup_as_written(w: dict, unit_written: str | None, length: tuple[int, str], at: int) -> None:
    """A warm-up given with the run's length counts in that length, as written (see schedule.from_recipe): its
    unit, where it names none, is the run's, and it must be shorter than the run."""
    w["as_written"] = True
    if unit_written is None:
        w["unit"] = length[1]
    if w["length"] is not None and w["unit"] == length[1] and w["length"] >= length[0]:
        raise SpecError(f"warm-up is not shorter than the whole run ({length[0]} {length[1]})",
                        Span(SET_PATH, at, 1))


def _setting_line(item: str, number: int, spec_path: str) -> str:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip() or "\n" in item or "{" in item or "}" in item:
        raise SpecError(f"--set {item!r}: write one recipe field as FIELD=VALUE, e.g. --set momentum=0.95 or "
                        "--set 'schedule=step 32000, 48000'", Span(SET_PATH, number, 1))
    word = key.strip().replace("_", "-")
    line = f"{word} {value.strip()}"
    if word in STATEMENT_WORDS - {"recipe"}:  # a run's network is its spec file's, kept in the run folder
        # located in the setting's line as written below (FIELD VALUE), as every other error of a setting is
        lines = [f'extends "{catalog.named(spec_path)}"'] + ["network NAME"] * (word != "network") + [line]
        raise SpecError(f"'{word}' is a line of the network, and a setting changes only the training recipe",
                        Span(SET_PATH, number, 1, 1 + len(word)), source="\n" * (number - 1) + line,
                        hint="write a spec that extends this one, one line each: "
                             + ", ".join(f"'{ln}'" for ln in lines))
    return line


def setting_column(item: str, column: int) -> int:
    """Where column ``column`` of the recipe line a ``FIELD=VALUE`` setting becomes (``FIELD VALUE``, see
    _setting_line) lies in the setting as written, spaces around '=' included (1-based)."""
    key, _, value = item.partition("=")
    k = len(key.strip())
    if column <= k:
        return len(key) - len(key.lstrip()) + column
    return len(key) + 1 + len(value) - len(value.lstrip()) + column - k - 1


def _setting_error(err: SpecError, body: str) -> SpecError:
    """Re-locate an error in the synthetic recipe at the setting it came from (line 1 is the recipe's header)."""
    span = err.span
    if span is None or span.path != SET_PATH or not 2 <= span.line <= body.count("\n") + 2:
        return SpecError(err.message, Span(SET_PATH, 1, 1), hint=err.hint)
    message = re.sub(r"\(first at line (\d+)\)", lambda m: f"(first at line {int(m[1]) - 1})", err.message)
    return SpecError(message, Span(SET_PATH, span.line - 1, span.column, span.end_column), hint=err.hint,
                     source=body)


# ---------------------------------------------------------------------------------------------
# `resdsl eval --test VIEW`: a test view written and checked as a recipe's `test`

TEST_PATH = "--test"


def test_view_words(text: str):
    """The test view ``text`` names in a recipe's words: a bare kind (``10-crop``, which eval takes with the
    recipe's own sizes where its view is of that kind) or a table with sizes (``single-view scale 256 crop 224``,
    ``multi-scale 224, 320``), parsed by the recipe grammar and checked by its rules; an error is located in
    ``--test``."""
    line = text.strip()
    if not line or any(c in line for c in "\n{}#"):
        raise SpecError(f"--test {text!r}: write one test view as a recipe's `test` does", Span(TEST_PATH, 1, 1),
                        hint="e.g. --test 10-crop, --test 'single-view scale 320 crop 320', --test 'multi-scale 224, "
                             "256, 384, 480, 640'")
    (rdef,) = _relocated(lambda: parse_text(f"recipe cli_test {{\ntest {line}\n}}\n", TEST_PATH).statements, line)
    (field,) = rdef.fields

    def bad(msg):
        raise SpecError(msg, field.span)

    _relocated(lambda: _validate_test(field.value, bad), line)
    return field.value


def _relocated(fn, line: str):
    """``fn()``, its SpecError located in the --test text itself (line 2 of the recipe it was wrapped in, after
    ``test ``)."""
    try:
        return fn()
    except SpecError as err:
        span = err.span
        column = max(1, span.column - len("test ")) if span is not None and span.line == 2 else 1
        end = max(column + 1, span.end_column - len("test ")) if span is not None and span.end_column else None
        raise SpecError(err.message, Span(TEST_PATH, 1, column, end), hint=err.hint, source=line) from None
