"""Spec text -> AST (``syntax.SpecFile``); Lark errors become located ``SpecError`` diagnostics."""
from __future__ import annotations

import re

from lark import UnexpectedInput
from lark.exceptions import VisitError

from . import syntax as ast
from .errors import Span, SpecError
from .grammar import expected_terminals, parser
from .parse_errors import syntax_error
from .reading import foreign_file_error, read_spec_text, recorded_text, starts_like_spec
from .to_ast import ToAst

__all__ = ["parse_file", "parse_text", "expected_terminals"]  # expected_terminals: for the experiment parser too

MAX_DIGITS = 100
_LONG_NUMBER = re.compile(r"[0-9]{%d,}" % (MAX_DIGITS + 1))
# what is not a number: a quoted path, and a name where the grammar takes one (`network v111...`); a word glued
# to digits elsewhere is a keyword and its number (`fc1000`), which the lexer reads as two tokens
_NAME_OR_STRING = re.compile(r'(?P<string>"[^"\n]*")|(?P<word>\b(?:network|recipe|extends|optimizer|dataset)\s+)'
                             r'(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)')


def _blank(m: re.Match) -> str:
    """A quoted string or a name as spaces (a keyword before the name stays): the columns are kept."""
    return " " * len(m.group("string")) if m.group("string") else m.group("word") + " " * len(m.group("name"))


def parse_file(path: str, span: Span | None = None, recorded: dict[str, str] | None = None) -> ast.SpecFile:
    """Read and parse the spec at ``path``; ``span`` is the extends/include statement that reached it. With
    ``recorded`` (path -> text, a run's record of its spec files) the text is taken from there, not from disk."""
    text = read_spec_text(path, span) if recorded is None else recorded_text(recorded, path, span)
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
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        raise syntax_error(exc, text, path) from None
    try:
        statements = ToAst(path).transform(tree)
    except VisitError as exc:  # a rule method's error; Lark wraps it (not one from ToAst.__default__)
        if not isinstance(exc.orig_exc, SpecError):
            raise
        exc.orig_exc.source = text
        raise exc.orig_exc from None
    except SpecError as err:
        err.source = text
        raise
    return ast.SpecFile(path=path, source=text, statements=tuple(statements))


def _check_number_lengths(text: str, path: str) -> None:
    """Refuse absurdly long digit runs up front (outside comments): they mean nothing in a spec, and converting
    them would hit Python's int-size limit or take quadratic time."""
    for number, line in enumerate(text.split("\n"), start=1):
        code = _NAME_OR_STRING.sub(_blank, line).split("#", 1)[0]
        m = _LONG_NUMBER.search(code)
        if m:
            digits = m.end() - m.start()
            raise SpecError(f"number '{m.group()[:12]}...' has {digits} digits; resdsl reads numbers of at most "
                            f"{MAX_DIGITS} digits", Span(path, number, m.start() + 1, m.start() + 13), source=text)
