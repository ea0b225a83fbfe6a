"""Resolve a spec file with its `extends` parents and `include`d recipe files into one settled spec."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from . import syntax as ast
from .errors import Span, SpecError
from .parse import parse_file, parse_text
from .train.vocabulary import RECIPE_DATASETS as DATASETS  # the trainer's own words (a torch-free module)

MAX_CHAIN = 32
OPTIMIZERS = ("sgd",)

# statements that appear at most once per file and that a child file overrides
_SINGULAR = {
    ast.Network: "network", ast.Input: "input", ast.Stem: "stem", ast.Unit: "unit", ast.Order: "order",
    ast.Shortcut: "shortcut", ast.Stages: "stages", ast.Head: "head", ast.Init: "init",
    ast.RecipeUse: "recipe", ast.Extends: "extends", ast.DropPath: "drop_path", ast.LayerCount: "layer_count",
}
REQUIRED = ("network", "input", "stem", "unit", "shortcut", "stages", "head")


@dataclass
class ResolvedSpec:
    """Every setting of a network after inheritance, each still pointing at the statement that set it."""

    path: str
    source: str
    settings: dict[str, ast.Statement] = field(default_factory=dict)
    overrides: dict[int, dict[str, ast.Statement]] = field(default_factory=dict)
    expects: list[ast.ExpectItem] = field(default_factory=list)
    recipes: dict[str, ast.RecipeDef] = field(default_factory=dict)
    recipe: dict | None = None
    recipe_span: Span | None = None
    files: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    reached: dict[str, tuple[Span, str]] = field(default_factory=dict)  # see _Reading

    def get(self, key: str):
        return self.settings.get(key)

    def locate(self, err: SpecError) -> SpecError:
        """``err`` with its file's text (for the caret line) and, for a file this spec extends or includes, where
        it was reached from."""
        return _located(err, self.sources, self.reached)


@dataclass
class _Reading:
    """What one resolution has read: each file's text, the recipes of each included file (``memo``, by real path,
    so a file included many times is read once) and, for every file but the first, the `include` or `extends`
    statement that reached it first and that statement's verb (``reached``)."""

    sources: dict[str, str]
    memo: dict = field(default_factory=dict)
    reached: dict[str, tuple[Span, str]] = field(default_factory=dict)


def resolve_path(path: str) -> ResolvedSpec:
    """Parse ``path`` and everything it extends or includes, and settle every setting."""
    spec_file = parse_file(path)
    return _resolve(spec_file, chain=())


def resolve_text(text: str, path: str = "<spec>") -> ResolvedSpec:
    """Like ``resolve_path`` for text in memory; relative includes resolve against the current directory."""
    return _resolve(parse_text(text, path), chain=())


def _located(err: SpecError, sources: dict[str, str], reached: dict[str, tuple[Span, str]]) -> SpecError:
    """The one place an error in a spec gets its file's text and the notes on how that file was reached (an error
    in rec.res means little without "rec.res is included by net.res:3:1")."""
    if err.span is None:
        return err
    if err.source is None:
        err.source = sources.get(err.span.path)
    if not err.notes:
        path, seen = err.span.path, set()
        while path in reached and path not in seen:
            seen.add(path)
            span, verb = reached[path]
            err.notes.append(f"{path} is {verb} by {span}")
            path = span.path
    return err


def _resolve(spec_file: ast.SpecFile, chain: tuple[str, ...]) -> ResolvedSpec:
    reading = _Reading({spec_file.path: spec_file.source})
    try:
        resolved = _resolve_inner(spec_file, chain, reading)
        resolved.sources.update(reading.sources)
        resolved.reached.update(reading.reached)
        _settle(resolved)
    except SpecError as err:
        raise _located(err, reading.sources, reading.reached) from None
    return resolved


def _child_path(base_file: str, rel: str) -> str:
    if os.path.isabs(rel):
        return rel
    base_dir = os.path.dirname(base_file) if base_file and not base_file.startswith("<") else ""
    return os.path.normpath(os.path.join(base_dir, rel)) if base_dir else os.path.normpath(rel)


def _key(path: str) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path


def _load_child(stmt, spec_file: ast.SpecFile, chain, reading: _Reading, what: str) -> ast.SpecFile:
    child = _child_path(spec_file.path, stmt.path)
    if _key(child) in chain or _key(child) == _key(spec_file.path):
        names = " -> ".join(os.path.basename(c) for c in (*chain, _key(child)))
        verb = "extend" if what == "extends" else what
        raise SpecError(f"cyclic {what}: {names}", stmt.span, hint=f"a spec cannot {verb} itself, directly or not")
    if len(chain) >= MAX_CHAIN:
        raise SpecError(f"{what} chain deeper than {MAX_CHAIN} files", stmt.span)
    reading.reached.setdefault(child, (stmt.span, "extended" if what == "extends" else "included"))
    parsed = parse_file(child, stmt.span)
    reading.sources[parsed.path] = parsed.source
    return parsed


def _resolve_inner(spec_file: ast.SpecFile, chain: tuple[str, ...], reading: _Reading) -> ResolvedSpec:
    chain = (*chain, _key(spec_file.path))
    own: dict[str, ast.Statement] = {}
    for stmt in spec_file.statements:
        key = _SINGULAR.get(type(stmt))
        if key is None:
            continue
        if key in own:
            first = own[key].span
            word = key.replace("_", "-")  # the statement's keyword: drop_path is `drop-path`
            raise SpecError(f"'{word}' is given twice in this file (first at line {first.line})", stmt.span,
                            hint="each setting appears once per file; a spec that extends another overrides it")
        own[key] = stmt

    if "extends" in own:
        parent_file = _load_child(own["extends"], spec_file, chain, reading, "extends")
        resolved = _resolve_inner(parent_file, chain, reading)
        resolved.expects = []  # expectations are about one file; they are never inherited
    else:
        resolved = ResolvedSpec(spec_file.path, spec_file.source)
    resolved.path = spec_file.path
    resolved.source = spec_file.source
    resolved.files.append(spec_file.path)

    local_recipes: dict[str, ast.RecipeDef] = {}
    for stmt in spec_file.statements:
        if isinstance(stmt, ast.Include):
            for name, rdef in _included_recipes(stmt, spec_file, chain, reading).items():
                _add_recipe(resolved.recipes, name, rdef)
        elif isinstance(stmt, ast.RecipeDef):
            if stmt.name in local_recipes:
                raise SpecError(f"recipe '{stmt.name}' is defined twice in this file "
                                f"(first at line {local_recipes[stmt.name].span.line})", stmt.span)
            local_recipes[stmt.name] = stmt
        elif isinstance(stmt, ast.StageOverride):
            idx = stmt.index.value
            if idx < 1:
                raise SpecError("stages are numbered from 1", stmt.index.span)
            slot = resolved.overrides.setdefault(idx, {})
            kind = _SINGULAR[type(stmt.statement)]
            slot[kind] = stmt.statement
        elif isinstance(stmt, ast.Expect):
            resolved.expects.extend(stmt.items)
    for name, rdef in local_recipes.items():
        resolved.recipes[name] = rdef  # a file's own definition overrides an inherited one
    for key, stmt in own.items():
        if key != "extends":
            resolved.settings[key] = stmt
    return resolved


def _included_recipes(stmt: ast.Include, parent: ast.SpecFile, chain, reading: _Reading) -> dict[str, ast.RecipeDef]:
    """The recipes an `include` statement brings in (read once per file and resolution)."""
    key, memo = _key(_child_path(parent.path, stmt.path)), reading.memo
    if key in memo and key not in chain:
        return memo[key]
    inc = _load_child(stmt, parent, chain, reading, "include")
    memo[key] = _recipes_of_include(inc, chain, reading)
    return memo[key]


def _recipes_of_include(inc: ast.SpecFile, chain, reading: _Reading) -> dict[str, ast.RecipeDef]:
    out: dict[str, ast.RecipeDef] = {}
    for stmt in inc.statements:
        if isinstance(stmt, ast.RecipeDef):
            _add_recipe(out, stmt.name, stmt)
        elif isinstance(stmt, ast.Include):
            for name, rdef in _included_recipes(stmt, inc, (*chain, _key(inc.path)), reading).items():
                _add_recipe(out, name, rdef)
        else:
            raise SpecError("an included file may only define recipes (and include other recipe files)",
                            stmt.span, hint="use 'extends' to inherit a network")
    return out


def _add_recipe(table: dict[str, ast.RecipeDef], name: str, rdef: ast.RecipeDef) -> None:
    prev = table.get(name)
    if prev is not None and prev.span != rdef.span:
        raise SpecError(f"recipe '{name}' is defined twice (also at {prev.span})", rdef.span)
    table[name] = rdef


# ---------------------------------------------------------------------------------------------
# settling: required statements, value ranges, recipe


def _settle(r: ResolvedSpec) -> None:
    top = Span(r.path, 1, 1)
    for key in REQUIRED:
        if key not in r.settings:
            raise SpecError(f"the spec never says '{key}'", top, hint=_REQUIRED_HINTS[key])
    if "order" not in r.settings:
        r.settings["order"] = ast.Order(top, "post")
    if "init" not in r.settings:
        r.settings["init"] = ast.Init(top)
    n_stages = len(r.settings["stages"].entries)
    for idx, slot in sorted(r.overrides.items()):
        if idx > n_stages:
            stmt = next(iter(slot.values()))
            raise SpecError(f"stage {idx} does not exist: the network has {n_stages} stage(s)", stmt.span)
    if "recipe" in r.settings:
        use = r.settings["recipe"]
        r.recipe = resolve_recipe(use.name, r.recipes, use.span)
        r.recipe_span = use.span


_REQUIRED_HINTS = {
    "network": "start the spec with 'network NAME'",
    "input": "say the input shape, e.g. 'input 3x32x32'",
    "stem": "e.g. 'stem cifar 16' or 'stem imagenet'",
    "unit": "e.g. 'unit basic' or 'unit bottleneck'",
    "shortcut": "e.g. 'shortcut A', 'shortcut B' or 'shortcut none' for a plain net",
    "stages": "e.g. 'stages 16x3, 32x3 /2, 64x3 /2'",
    "head": "e.g. 'head avgpool fc 10'",
}

RECIPE_DEFAULTS = {
    "optimizer": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "schedule": {"kind": "constant"},
    "warmup": None, "augment": [], "normalize": "none", "dataset": None, "split": None, "label_smoothing": 0.0,
    "test": "single-view",
}
RECIPE_REQUIRED = ("lr", "batch", "length")


def resolve_recipe(name: str, recipes: dict[str, ast.RecipeDef], span: Span) -> dict:
    """Merge a recipe with its bases, fill defaults, validate ranges; returns a JSON-ready dict."""
    chain: list[ast.RecipeDef] = []
    seen: set[str] = set()
    current, where = name, span
    while current is not None:
        if current in seen:
            raise SpecError(f"cyclic recipe extends: {' -> '.join([*[c.name for c in chain], current])}", where)
        rdef = recipes.get(current)
        if rdef is None:
            known = ", ".join(sorted(recipes)) or "none defined"
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
    _validate_recipe(out, fields, chain[0].span)
    out["name"] = name
    return out


def _validate_recipe(r: dict, fields: dict[str, ast.RecipeField], default_span: Span) -> None:
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
    w = r["warmup"]
    if w is not None:
        if w["unit"] is None:
            w["unit"] = r["length"]["unit"]
        if not w["lr"] > 0:
            bad("warmup", "warm-up learning rate must be positive")
        total = r["length"]["value"] if w["unit"] == r["length"]["unit"] else None
        if total is not None and w["length"] >= total:
            bad("warmup", "warm-up is not shorter than the whole run")
        if w["until_error"] is not None and not 0 < w["until_error"] <= 100:
            bad("warmup", "until-error is a percentage in (0, 100]")
    for aug in r["augment"]:
        if aug["kind"] == "scale" and not 0 < aug["min"] <= aug["max"]:
            bad("augment", "scale augmentation needs 0 < min <= max")
        if aug["kind"] == "scale" and aug["crop"] > aug["min"]:
            bad("augment", f"crop {aug['crop']} is larger than the shortest resized side {aug['min']}")
        if aug["kind"] == "random-resized-crop" and aug["size"] < 1:
            bad("augment", "crop size must be positive")
    if r["dataset"] is not None and r["dataset"] not in DATASETS:
        bad("dataset", f"unknown dataset '{r['dataset']}'", hint="known datasets: " + ", ".join(DATASETS))
    if r["split"] is not None and min(r["split"]) < 1:
        bad("split", "both parts of a train/val split must be positive")
    for key in ("lr", "momentum", "weight_decay", "label_smoothing"):
        if not math.isfinite(r[key]):
            bad(key, f"{key} is not a finite number")


def stage_setting(r: ResolvedSpec, stage: int, key: str) -> ast.Statement:
    """The unit/order/shortcut statement in force for a stage (1-based), override first."""
    return r.overrides.get(stage, {}).get(key) or r.settings[key]


__all__ = ["ResolvedSpec", "resolve_path", "resolve_text", "resolve_recipe", "stage_setting"]


# ---------------------------------------------------------------------------------------------
# `resdsl train --set FIELD=VALUE`: recipe overrides written and checked exactly as in a recipe block

SET_PATH = "--set"


def recipe_with_settings(resolved: ResolvedSpec, settings: list[str], length: tuple[int, str] | None = None) -> dict:
    """The spec's recipe with each ``FIELD=VALUE`` of ``settings`` (``momentum=0.95``, ``schedule=step 100, 150``)
    applied: the settings become the fields of a recipe that extends the spec's, parsed by the same grammar and
    validated by the same rules; an error is located at the offending setting (``--set:N:COL``, N counting the
    --set flags). ``length``: the run's length from ``--iters``/``--epochs`` as (value, unit); where the settings
    give the schedule (and not the length), its milestones count in that length as written (the recipe's own
    milestones are scaled to an overridden length, but these the user wrote for it)."""
    if resolved.recipe is None:
        raise SpecError("--set changes the training recipe, but the spec names none", Span(resolved.path, 1, 1),
                        hint="add e.g. 'include \"recipes.res\"' and 'recipe cifar_resnet'")
    lines = [_setting_line(item, number) for number, item in enumerate(settings, start=1)]
    keys = {line.split(" ", 1)[0] for line in lines}
    if length is not None and "schedule" in keys and "length" not in keys:
        lines.append(f"length {length[0]} {length[1]}")  # last, so that errors keep their --set numbers
    body = "\n".join(lines)
    source = f"recipe cli_settings extends {resolved.recipe['name']} {{\n{body}\n}}\n"
    try:
        (rdef,) = parse_text(source, SET_PATH).statements
        recipe = resolve_recipe("cli_settings", {**resolved.recipes, "cli_settings": rdef}, rdef.span)
    except SpecError as err:
        raise _setting_error(err, body) from None
    recipe["name"] = resolved.recipe["name"]  # the run records its --set list beside the recipe
    return recipe


def _setting_line(item: str, number: int) -> str:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip() or "\n" in item or "{" in item or "}" in item:
        raise SpecError(f"--set {item!r}: write one recipe field as FIELD=VALUE, e.g. --set momentum=0.95 or "
                        "--set 'schedule=step 32000, 48000'", Span(SET_PATH, number, 1))
    return f"{key.strip().replace('_', '-')} {value.strip()}"


def _setting_error(err: SpecError, body: str) -> SpecError:
    """Re-locate an error in the synthetic recipe at the setting it came from (line 1 is the recipe's header)."""
    span = err.span
    if span is None or span.path != SET_PATH or not 2 <= span.line <= body.count("\n") + 2:
        return SpecError(err.message, Span(SET_PATH, 1, 1), hint=err.hint)
    return SpecError(err.message, Span(SET_PATH, span.line - 1, span.column, span.end_column), hint=err.hint,
                     source=body)
