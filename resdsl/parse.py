"""Spec text -> AST (``syntax.SpecFile``); Lark errors become located ``SpecError`` diagnostics."""
from __future__ import annotations

import difflib
import functools
import math
import re
from pathlib import Path

from lark import Lark, Token, Transformer, UnexpectedInput, v_args
from lark.exceptions import UnexpectedEOF, UnexpectedToken, VisitError

from . import syntax as ast
from .errors import Span, SpecError
from .reading import foreign_file_error, read_spec_text, starts_like_spec

MAX_DIGITS = 100
_LONG_NUMBER = re.compile(r"[0-9]{%d,}" % (MAX_DIGITS + 1))

# How expected terminals are named in syntax errors.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": 'a quoted path such as "base.res"',
    "DIMS": "a shape such as 3x224x224",
    "PAIR": "a pair such as 64x3 or 3x3",
    "QUANTITY": "a number such as 21.8M or 269722",
    "NUMBER": "a number",
    "INT": "an integer",
    "BOOL": "yes or no",
    "_NL": "end of line",
    "$END": "end of file",
    "POOL_KIND": "max, avg",
    "STRIDE_CONV": "1x1, 3x3",
    "ORDER": "post, bn-after-add, relu-before-add, relu-preact, preact",
    "SHORTCUT_KIND": "A, B, C, none, identity",
    "GATE_KIND": "exclusive, shortcut-only",
    "FAN": "fan-out, fan-in",
    "EXPECT_KEY": "params, macs, flops, layers, output",
    "APPROX": "~",
    "LENGTH_UNIT": "iterations, epochs",
    "NORMALIZE": "per-pixel-mean, mean-std, none",
    "TEST_VIEW": "single-view, 10-crop",
}


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False,
                cache=True)


def parse_file(path: str, span: Span | None = None) -> ast.SpecFile:
    """Read and parse the spec at ``path``; ``span`` is the extends/include statement that reached it."""
    text = read_spec_text(path, span)
    try:
        return parse_text(text, path)
    except SpecError as err:
        if span is None or starts_like_spec(text, err):
            raise
        raise foreign_file_error(err, span) from None


def parse_text(text: str, path: str = "<spec>") -> ast.SpecFile:
    """Parse spec text into an AST; raise SpecError with a located message on any problem."""
    if "\x00" in text:
        idx = text.index("\x00")
        line = text.count("\n", 0, idx) + 1
        col = idx - (text.rfind("\n", 0, idx) + 1) + 1
        raise SpecError("spec contains a NUL byte; is it a binary file?", Span(path, line, col), source=text)
    text = text.removeprefix("\ufeff")  # a byte order mark is not part of the spec
    _check_number_lengths(text, path)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, path) from None
    try:
        statements = _ToAst(path).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, SpecError):
            err = exc.orig_exc
            err.source = text
            raise err from None
        raise
    return ast.SpecFile(path=path, source=text, statements=tuple(statements))


def _check_number_lengths(text: str, path: str) -> None:
    """Refuse absurdly long digit runs up front (outside comments): they mean nothing in a spec, and converting
    them would hit Python's int-size limit or take quadratic time."""
    for number, line in enumerate(text.split("\n"), start=1):
        code = line.split("#", 1)[0]
        m = _LONG_NUMBER.search(code)
        if m:
            digits = m.end() - m.start()
            raise SpecError(f"number '{m.group()[:12]}...' has {digits} digits; resdsl reads numbers of at most "
                            f"{MAX_DIGITS} digits", Span(path, number, m.start() + 1, m.start() + 13), source=text)


# ---------------------------------------------------------------------------------------------
# syntax errors

_WORD = re.compile(r"[A-Za-z0-9_.\-~%]+")


def _syntax_error(exc: UnexpectedInput, text: str, path: str) -> SpecError:
    """Turn a Lark error into a message naming the offending word and what was expected there."""
    lines = text.split("\n")
    if isinstance(exc, UnexpectedEOF) or getattr(exc, "token", None) is not None and exc.token.type == "$END":
        last = len(lines) - 1 if len(lines) > 1 and lines[-1] == "" else len(lines)  # the last line with text
        line = last
        col = len(lines[last - 1].removesuffix("\r")) + 1
        return SpecError("unexpected end of file", Span(path, line, col), hint=_expected_hint(text, len(text), None),
                         source=text)
    line, col = exc.line, exc.column
    if line is None or line < 1 or col is None or col < 1:
        return SpecError("syntax error", Span(path, 1, 1), source=text)
    src_line = lines[line - 1] if line <= len(lines) else ""
    # find the whole word around the error (the lexer may have split 'stagez' into 'stage' + 'z')
    start, end = col - 1, col
    for m in _WORD.finditer(src_line):
        if m.start() <= col - 1 < m.end():
            start, end = m.start(), m.end()
            break
    else:
        end = min(len(src_line), col)
    word = src_line[start:end] if end > start else (src_line[col - 1: col] or "?")
    offset = _offset(text, line, start + 1)
    if isinstance(exc, UnexpectedToken) and exc.token.type == "_NL":
        message = "unexpected end of line"
        start = col - 1
        word = ""
    elif word.strip() == "":
        message = "unexpected character"
    else:
        shown = word if len(word) <= 40 else word[:40] + "..."
        message = f"unexpected '{shown}'"
    expected = _expected_at(text, offset)
    hint = _expected_hint(text, offset, word, expected)
    if expected is not None and _is_statement_start(expected) and word:
        message = f"unknown statement '{word if len(word) <= 40 else word[:40] + '...'}'"
    span = Span(path, line, start + 1, start + 1 + max(1, len(word)))
    return SpecError(message, span, hint=hint, source=text)


def _offset(text: str, line: int, col: int) -> int:
    pos = 0
    for _ in range(line - 1):
        nxt = text.find("\n", pos)
        if nxt < 0:
            return len(text)
        pos = nxt + 1
    return pos + col - 1


def _expected_at(text: str, offset: int) -> set[str] | None:
    return expected_terminals(_parser(), text, offset)


def expected_terminals(parser, text: str, offset: int) -> set[str] | None:
    """The terminals a Lark LALR ``parser`` accepts after ``text[:offset]`` (None when the prefix itself fails):
    the words a syntax error's hint offers, for specs and experiment files alike."""
    try:
        ip = parser.parse_interactive(text[:offset])
        ip.exhaust_lexer()
        return set(ip.accepts())
    except Exception:  # noqa: BLE001 - any failure only means we give no expected list
        return None


_STATEMENT_KEYWORDS = {"NETWORK", "STAGES", "UNIT", "SHORTCUT"}


def _is_statement_start(expected: set[str]) -> bool:
    return _STATEMENT_KEYWORDS <= expected


def _describe(term: str) -> list[str]:
    if term in _TERMINAL_WORDS:
        desc = _TERMINAL_WORDS[term]
        return [w.strip() for w in desc.split(",")] if term.isupper() and "," in desc else [desc]
    try:
        pattern = _parser().get_terminal(term).pattern
    except KeyError:
        return [term.lower()]
    if pattern.type == "str":
        return [pattern.value]
    return [term.lower()]


def _expected_hint(text: str, offset: int, word: str | None, expected: set[str] | None = None) -> str | None:
    if expected is None:
        expected = _expected_at(text, offset)
    if not expected:
        return None
    words: list[str] = []
    for term in sorted(expected):
        for w in _describe(term):
            if w not in words:
                words.append(w)
    words.sort(key=lambda w: (w.startswith(("a ", "an ", "end ")), w))
    hint = "expected " + (words[0] if len(words) == 1 else "one of: " + ", ".join(words))
    if word:
        close = difflib.get_close_matches(word, [w for w in words if " " not in w], n=1, cutoff=0.6)
        if close:
            hint = f"did you mean '{close[0]}'? " + hint
    return hint


# ---------------------------------------------------------------------------------------------
# parse tree -> AST


def _span(path: str, item) -> Span:
    if isinstance(item, Token):
        return Span(path, item.line, item.column, item.end_column if item.end_line == item.line else None)
    meta = item
    end = meta.end_column if getattr(meta, "end_line", None) == meta.line else None
    return Span(path, meta.line, meta.column, end)


def _check_number(tok: Token, path: str) -> float:
    value = float(tok)
    if not math.isfinite(value):
        raise SpecError(f"number '{tok}' is out of range", _span(path, tok))
    return value


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds ``syntax`` dataclasses; statements carry their line's span."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    # helpers
    def _s(self, x):
        return _span(self.path, x)

    def _int(self, tok: Token) -> ast.Value:
        return ast.Value(int(tok), self._s(tok))

    def _num(self, tok: Token) -> ast.Value:
        return ast.Value(_check_number(tok, self.path), self._s(tok))

    def start(self, meta, children):
        return children

    def network(self, meta, c):
        return ast.Network(self._s(meta), str(c[0]))

    def extends(self, meta, c):
        return ast.Extends(self._s(meta), str(c[0])[1:-1])

    def include(self, meta, c):
        return ast.Include(self._s(meta), str(c[0])[1:-1])

    def input(self, meta, c):
        tok = c[0]
        ch, h, w = (int(x) for x in str(tok).split("x"))
        sp = self._s(tok)
        return ast.Input(self._s(meta), ast.Value(ch, sp), ast.Value(h, sp), ast.Value(w, sp))

    def stride(self, meta, c):
        return self._int(c[0])

    def stem(self, meta, c):
        kind, kw = c[0]
        return ast.Stem(self._s(meta), kind, **kw)

    def stem_imagenet(self, meta, c):
        width = self._int(c[0]) if c else ast.Value(64, self._s(meta))
        return "imagenet", {"width": width}

    def stem_cifar(self, meta, c):
        return "cifar", {"width": self._int(c[0])}

    def stem_conv(self, meta, c):
        kernel_tok = c[0]
        rest = c[1:]
        stride = ast.Value(1, self._s(kernel_tok))
        if rest and isinstance(rest[0], ast.Value):
            if len(rest) >= 2 and isinstance(rest[1], Token):
                stride, rest = rest[0], rest[1:]
        width_tok = rest[0]
        pool = rest[1] if len(rest) > 1 else None
        kh, kw = (int(x) for x in str(kernel_tok).split("x"))
        return "conv", {
            "width": self._int(width_tok),
            "kernel": ast.Value((kh, kw), self._s(kernel_tok)),
            "stride": stride,
            "pool": pool,
        }

    def stem_pool(self, meta, c):
        kind, kernel_tok = str(c[0]), c[1]
        kh, kw = (int(x) for x in str(kernel_tok).split("x"))
        stride = c[2] if len(c) > 2 else ast.Value(1, self._s(kernel_tok))
        return ast.Pool(kind, ast.Value((kh, kw), self._s(kernel_tok)), stride, self._s(meta))

    # units / orders / shortcuts
    def unit(self, meta, c):
        kind, kw = c[0]
        return ast.Unit(self._s(meta), kind, **kw)

    def unit_basic(self, meta, c):
        return "basic", {}

    def unit_single(self, meta, c):
        return "single", {}

    def unit_bottleneck(self, meta, c):
        kw = {}
        for key, val in c:
            kw[key] = val
        return "bottleneck", kw

    def expansion(self, meta, c):
        return "expansion", self._int(c[0])

    def stride_at(self, meta, c):
        return "stride_at", ast.Value(str(c[0]), self._s(c[0]))

    def order(self, meta, c):
        return ast.Order(self._s(meta), str(c[0]))

    def shortcut(self, meta, c):
        kind = str(c[0])
        kw = {}
        for key, val in c[1:]:
            if key in kw:
                raise SpecError(f"'{key.replace('_', ' ')}' given twice in one shortcut statement", val.span
                                if hasattr(val, "span") else self._s(meta))
            kw[key] = val
        return ast.Shortcut(self._s(meta), kind, **kw)

    def scale(self, meta, c):
        return "scale", self._num(c[0])

    def residual_scale(self, meta, c):
        return "residual_scale", self._num(c[0])

    def gate(self, meta, c):
        return "gate", ast.Gate(str(c[0]), self._num(c[1]), self._s(meta))

    def dropout(self, meta, c):
        return "dropout", self._num(c[0])

    def projection_bn(self, meta, c):
        return "projection_bn", ast.Value(str(c[0]) == "yes", self._s(c[0]))

    # stages
    def stages(self, meta, c):
        return ast.Stages(self._s(meta), tuple(c))

    def stage_entry(self, meta, c):
        tok = c[0]
        width, units = (int(x) for x in str(tok).split("x"))
        sp = self._s(tok)
        stride = c[1] if len(c) > 1 else ast.Value(1, sp)
        return ast.StageEntry(ast.Value(width, sp), ast.Value(units, sp), stride, self._s(meta))

    def stage_override(self, meta, c):
        return ast.StageOverride(self._s(meta), self._int(c[0]), c[1])

    # head / init / expect
    def head(self, meta, c):
        return ast.Head(self._s(meta), c[0] if c else None)

    def head_fc(self, meta, c):
        return self._int(c[0])

    def init(self, meta, c):
        kw = {}
        for key, val in c:
            kw[key] = val
        return ast.Init(self._s(meta), **kw)

    def init_he(self, meta, c):
        return "fan", str(c[0]) if c else "fan-out"

    def zero_last_bn(self, meta, c):
        return "zero_last_bn", True

    def expect(self, meta, c):
        return ast.Expect(self._s(meta), tuple(c))

    def expect_item(self, meta, c):
        what = str(c[0])
        approx = len(c) == 3
        tok = c[-1]
        return ast.ExpectItem(what, str(tok), approx, self._s(meta))

    # recipes
    def recipe_use(self, meta, c):
        return ast.RecipeUse(self._s(meta), str(c[0]))

    def recipe_def(self, meta, c):
        name = str(c[0])
        base = None
        fields = []
        for item in c[1:]:
            if isinstance(item, ast.Value):
                base = item
            else:
                fields.append(item)
        return ast.RecipeDef(self._s(meta), name, base, tuple(fields))

    def recipe_base(self, meta, c):
        return ast.Value(str(c[0]), self._s(c[0]))

    def _field(self, meta, key, value):
        return ast.RecipeField(key, value, self._s(meta))

    def r_optimizer(self, meta, c):
        return self._field(meta, "optimizer", str(c[0]))

    def r_lr(self, meta, c):
        return self._field(meta, "lr", _check_number(c[0], self.path))

    def r_momentum(self, meta, c):
        return self._field(meta, "momentum", _check_number(c[0], self.path))

    def r_nesterov(self, meta, c):
        return self._field(meta, "nesterov", str(c[0]) == "yes")

    def r_weight_decay(self, meta, c):
        return self._field(meta, "weight_decay", _check_number(c[0], self.path))

    def r_batch(self, meta, c):
        return self._field(meta, "batch", int(c[0]))

    def r_length(self, meta, c):
        return self._field(meta, "length", {"value": int(c[0]), "unit": str(c[1])})

    def r_schedule(self, meta, c):
        return self._field(meta, "schedule", c[0])

    def sched_step(self, meta, c):
        milestones = [int(x) for x in c if isinstance(x, Token)]
        out = {"kind": "step", "milestones": milestones, "gamma": 0.1}
        for x in c:
            if isinstance(x, tuple):
                out[x[0]] = x[1]
        return out

    def sched_plateau(self, meta, c):
        out = {"kind": "plateau", "gamma": 0.1, "patience": 5}
        for key, val in c:
            out[key] = val
        return out

    def sched_cosine(self, meta, c):
        return {"kind": "cosine"}

    def sched_constant(self, meta, c):
        return {"kind": "constant"}

    def gamma(self, meta, c):
        return "gamma", _check_number(c[0], self.path)

    def patience(self, meta, c):
        return "patience", int(c[0])

    def r_warmup(self, meta, c):
        out = {"length": int(c[0]), "unit": None, "lr": None, "until_error": None}
        rest = c[1:]
        if rest and isinstance(rest[0], Token) and rest[0].type == "LENGTH_UNIT":
            out["unit"] = str(rest[0])
            rest = rest[1:]
        out["lr"] = _check_number(rest[0], self.path)
        if len(rest) > 1:
            out["until_error"] = rest[1]
        return self._field(meta, "warmup", out)

    def until_error(self, meta, c):
        return _check_number(c[0], self.path)

    def r_augment(self, meta, c):
        return self._field(meta, "augment", list(c))

    def augmentation(self, meta, c):
        return c[0]

    def aug_pad_crop(self, meta, c):
        return {"kind": "pad-crop", "padding": int(c[0])}

    def aug_flip(self, meta, c):
        return {"kind": "flip"}

    def aug_scale(self, meta, c):
        return {"kind": "scale", "min": int(c[0]), "max": int(c[1]), "crop": int(c[2])}

    def aug_color(self, meta, c):
        return {"kind": "color"}

    def aug_resized_crop(self, meta, c):
        return {"kind": "random-resized-crop", "size": int(c[0])}

    def r_normalize(self, meta, c):
        return self._field(meta, "normalize", str(c[0]))

    def r_dataset(self, meta, c):
        return self._field(meta, "dataset", str(c[0]))

    def r_split(self, meta, c):
        return self._field(meta, "split", [int(c[0]), int(c[1])])

    def r_label_smoothing(self, meta, c):
        return self._field(meta, "label_smoothing", _check_number(c[0], self.path))

    def r_test(self, meta, c):
        return self._field(meta, "test", str(c[0]))
