"""Resolve a spec file with its `extends` parents and `include`d recipe files into one settled spec."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import syntax as ast
from .catalog import close_names, packaged_file, packaged_names_like
from .errors import Span, SpecError
from .parse import parse_file, parse_text
from .recipes import resolve_recipe

MAX_CHAIN = 32

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
    override_at: dict[int, Span] = field(default_factory=dict)  # stage N -> where a `stage N:` writes its N
    implied: set[str] = field(default_factory=set)  # settings no file says, taken at their defaults (order, init)
    files: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    reached: dict[str, tuple[Span, str]] = field(default_factory=dict)  # see _Reading
    aliases: dict[str, str] = field(default_factory=dict)  # see _Reading

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
    statement that reached it first and that statement's verb (``reached``). ``aliases``: each spelling of an
    `extends`/`include` that read a file under another path (a packaged file named by name; a file already read
    under another spelling, as the memo finds by real path), to that path. ``recorded``: the texts to read instead
    of the files on disk (a run's record of its spec files), whose ``aliases`` then stand for the disk's paths."""

    sources: dict[str, str]
    recorded: dict[str, str] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    memo: dict = field(default_factory=dict)  # by _key: (the path read, its recipes)
    reached: dict[str, tuple[Span, str]] = field(default_factory=dict)


def resolve_path(path: str, recorded: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None) -> ResolvedSpec:
    """Parse ``path`` and everything it extends or includes, and settle every setting; with ``recorded`` (path ->
    text, as ``ResolvedSpec.sources`` holds them, and ``aliases`` as ``ResolvedSpec.aliases``) the files' texts
    are taken from there instead of the disk."""
    spec_file = parse_file(path, recorded=recorded)
    return _resolve(spec_file, chain=(), recorded=recorded, aliases=aliases)


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


def _resolve(spec_file: ast.SpecFile, chain: tuple[str, ...], recorded=None, aliases=None) -> ResolvedSpec:
    reading = _Reading({spec_file.path: spec_file.source}, recorded=recorded, aliases=dict(aliases or {}))
    try:
        resolved = _resolve_inner(spec_file, chain, reading)
        resolved.sources.update(reading.sources)
        resolved.reached.update(reading.reached)
        resolved.aliases.update(reading.aliases)
        _settle(resolved, recorded is not None)
    except SpecError as err:
        raise _located(err, reading.sources, reading.reached) from None
    return resolved


def _spelling(base_file: str, rel: str) -> str:
    """The path an `extends`/`include` of ``rel`` in ``base_file`` names: relative to ``base_file``'s folder."""
    if os.path.isabs(rel):
        return rel
    base_dir = os.path.dirname(base_file) if base_file and not base_file.startswith("<") else ""
    return os.path.normpath(os.path.join(base_dir, rel)) if base_dir else os.path.normpath(rel)


def _child_path(base_file: str, rel: str, reading: _Reading) -> str:
    """The file an `extends`/`include` reads: the one it names, else, where nothing is there and ``rel`` is a
    packaged spec's name (no .res: `extends "resnet20"`), the packaged file. Replaying a run's record, the path
    the record's aliases give the spelling."""
    child = _spelling(base_file, rel)
    if reading.recorded is not None:
        return reading.aliases.get(child, child)
    if os.path.lexists(child):
        return child
    return packaged_file(rel) or child


def _key(path: str, reading: _Reading) -> str:
    """What identifies a file for cycles and the include memo: its real path on disk; in a replayed record,
    where nothing is read from disk, the path it was first read under (the record's aliases lead there)."""
    if reading.recorded is not None:  # as recorded: normpath would take d/lnk/.. for d, as the disk did not
        return reading.aliases.get(path, path)
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path


def _load_child(stmt, spec_file: ast.SpecFile, chain, reading: _Reading, what: str) -> ast.SpecFile:
    child = _child_path(spec_file.path, stmt.path, reading)
    if _key(child, reading) in chain or _key(child, reading) == _key(spec_file.path, reading):
        names = " -> ".join(os.path.basename(c) for c in (*chain, _key(child, reading)))
        verb = "extend" if what == "extends" else what
        raise SpecError(f"cyclic {what}: {names}", stmt.span, hint=f"a spec cannot {verb} itself, directly or not")
    if len(chain) >= MAX_CHAIN:
        raise SpecError(f"{what} chain deeper than {MAX_CHAIN} files", stmt.span)
    if reading.recorded is None and not os.path.lexists(child):
        _refuse_missing(stmt, child, what)
    reading.reached.setdefault(child, (stmt.span, "extended" if what == "extends" else "included"))
    parsed = parse_file(child, stmt.span, reading.recorded)
    _read(reading, _spelling(spec_file.path, stmt.path), parsed)
    return parsed


def _read(reading: _Reading, spelling: str, parsed: ast.SpecFile) -> None:
    """Keep a file's text under its path, and the spelling that reached it where that differs (a packaged file
    reached by name): a run's record then replays every `extends`/`include` without looking at the disk."""
    reading.sources[parsed.path] = parsed.source
    _alias(reading, spelling, parsed.path)


def _alias(reading: _Reading, spelling: str, path: str) -> None:
    if reading.recorded is None and spelling != path:
        reading.aliases.setdefault(spelling, path)


def _refuse_missing(stmt, child: str, what: str) -> None:
    """A missing `extends`/`include` file: the reader's error, with the packaged files of that name as a hint."""
    names, verb = packaged_names_like(stmt.path), "extends" if what == "extends" else "include"
    if names:
        raise SpecError(f"cannot read spec '{child}': no such file", stmt.span,
                        hint="packaged files are named without .res: " + " or ".join(f'{verb} "{n}"' for n in names))
    close = close_names(stmt.path) if not stmt.path.endswith(".res") else []
    if close:  # a mistyped packaged name, as the command line suggests for it
        raise SpecError(f"cannot read spec '{child}': no such file", stmt.span,
                        hint="did you mean " + ", ".join(f'{verb} "{n}"' for n in close) + "?")


def _resolve_inner(spec_file: ast.SpecFile, chain: tuple[str, ...], reading: _Reading) -> ResolvedSpec:
    chain = (*chain, _key(spec_file.path, reading))
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
    local_overrides: dict[tuple[int, str], Span] = {}  # (stage, setting) -> where this file first sets it
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
            kind = _SINGULAR[type(stmt.statement)]
            first = local_overrides.setdefault((idx, kind), stmt.span)
            if first is not stmt.span:
                raise SpecError(f"'stage {idx}: {kind.replace('_', '-')}' is given twice in this file (first at line "
                                f"{first.line})", stmt.span, hint="each setting appears once per file; a spec "
                                "that extends another overrides it")
            resolved.overrides.setdefault(idx, {})[kind] = stmt.statement
            resolved.override_at[idx] = stmt.index.span
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
    key, memo = _key(_child_path(parent.path, stmt.path, reading), reading), reading.memo
    if key in memo and key not in chain:
        path, recipes = memo[key]
        _alias(reading, _spelling(parent.path, stmt.path), path)  # the path whose reading the memo holds
        return recipes
    inc = _load_child(stmt, parent, chain, reading, "include")
    memo[key] = (inc.path, _recipes_of_include(inc, chain, reading))
    return memo[key][1]


def _recipes_of_include(inc: ast.SpecFile, chain, reading: _Reading) -> dict[str, ast.RecipeDef]:
    out: dict[str, ast.RecipeDef] = {}
    for stmt in inc.statements:
        if isinstance(stmt, ast.RecipeDef):
            _add_recipe(out, stmt.name, stmt)
        elif isinstance(stmt, ast.Include):
            for name, rdef in _included_recipes(stmt, inc, (*chain, _key(inc.path, reading)), reading).items():
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


def _settle(r: ResolvedSpec, recorded: bool = False) -> None:
    top = Span(r.path, 1, 1)
    for key in REQUIRED:
        if key not in r.settings:
            raise SpecError(f"the spec never says '{key}'", top, hint=_REQUIRED_HINTS[key])
    if "order" not in r.settings:
        r.settings["order"] = ast.Order(top, "post")
        r.implied.add("order")
    if "init" not in r.settings:
        r.settings["init"] = ast.Init(top)
        r.implied.add("init")
    n_stages = len(r.settings["stages"].entries)
    for idx in sorted(r.overrides):
        if idx > n_stages:
            raise SpecError(f"stage {idx} does not exist: the network has {n_stages} stage(s)", r.override_at[idx])
    if "recipe" in r.settings:
        use = r.settings["recipe"]
        r.recipe = resolve_recipe(use.name, r.recipes, use.span, recorded)


_REQUIRED_HINTS = {
    "network": "start the spec with 'network NAME'",
    "input": "say the input shape, e.g. 'input 3x32x32'",
    "stem": "e.g. 'stem cifar 16' or 'stem imagenet'",
    "unit": "e.g. 'unit basic' or 'unit bottleneck'",
    "shortcut": "e.g. 'shortcut A', 'shortcut B' or 'shortcut none' for a plain net",
    "stages": "e.g. 'stages 16x3, 32x3 /2, 64x3 /2'",
    "head": "e.g. 'head avgpool fc 10'",
}

def stage_setting(r: ResolvedSpec, stage: int, key: str) -> ast.Statement:
    """The unit/order/shortcut statement in force for a stage (1-based), override first."""
    return r.overrides.get(stage, {}).get(key) or r.settings[key]


__all__ = ["ResolvedSpec", "resolve_path", "resolve_text", "resolve_recipe", "stage_setting"]
