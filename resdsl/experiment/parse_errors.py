"""An experiment file's reading and syntax errors: the reader's errors said of an experiment file, and a Lark
error as 'unexpected WORD' (or 'unknown statement WORD') located at the whole word, with what the parser expected
there and the closest word to the one written."""
from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path

from lark import Lark, UnexpectedInput
from lark.exceptions import UnexpectedEOF

from ..errors import Span, SpecError
from ..parse import expected_terminals

_TERMINAL_WORDS = {"NAME": "a name", "STRING": 'a quoted string such as "ResNet-20"', "INT": "a whole number",
                   "SPEC_REF": "a spec name such as resnet20, or a path", "NUMBER": "a number such as 6.43",
                   "PAPER_KEY": "best, mean, std, median, error, top5", "_NL": "end of line", "$END": "end of file"}
_STATEMENT_KEYWORDS = {"EXPERIMENT", "ROW", "DATASET", "FIGURE"}
_WORD = re.compile(r"[A-Za-z0-9_.\-/%]+")


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False)


_REWORD_MESSAGE = (("cannot read spec ", "cannot read experiment file "), ("spec is not UTF-8", "experiment file "
                   "is not UTF-8"), ("spec '", "experiment file '"))
_REWORD_HINT = {"specs are read only from regular files; save the spec to a file and name that":
                "experiment files are read only from regular files",
                "spec files are plain text; check the path": "experiment files are plain text; check the path"}


def reworded(err: SpecError) -> SpecError:
    """The reader's error about a spec, said of an experiment file."""
    message = err.message
    for old, new in _REWORD_MESSAGE:
        if message.startswith(old):
            message = new + message[len(old):]
            break
    if message.endswith(", not a spec file"):
        message = message.removesuffix(", not a spec file") + ", not an experiment file"
    return SpecError(message, err.span, hint=_REWORD_HINT.get(err.hint, err.hint), source=err.source)


def line_col(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def syntax_error(exc: UnexpectedInput, text: str, name: str) -> SpecError:
    """A Lark error as 'unexpected WORD' (or 'unknown statement WORD') with what the parser expected there."""
    token = getattr(exc, "token", None)
    if isinstance(exc, UnexpectedEOF) or token is not None and token.type == "$END":
        body = text.rstrip("\r\n")
        line, col = line_col(body, len(body))
        return SpecError("unexpected end of file", Span(name, line, col), hint=_hint(_expected_at(text, len(text)),
                                                                                     None), source=text)
    line, col = exc.line, exc.column
    src = text.split("\n")[line - 1]
    if token is not None and token.type == "_NL":
        return SpecError("unexpected end of line", Span(name, line, col),
                         hint=_hint(_expected_at(text, _offset(text, line, col)), None), source=text)
    if src[col - 1: col] == '"':
        return SpecError("unterminated string", Span(name, line, col), source=text,
                         hint='a quoted string ends with " on its own line')
    start, end = next(((m.start(), m.end()) for m in _WORD.finditer(src) if m.start() <= col - 1 < m.end()),
                      (col - 1, col))  # the whole word: the lexer may have split 'rows' into 'row' + 's'
    word = src[start:end][:40]
    expected = _expected_at(text, _offset(text, line, start + 1))
    statement = bool(expected and _STATEMENT_KEYWORDS <= expected)
    message = f"unknown statement '{word}'" if statement else f"unexpected '{word}'"
    return SpecError(message, Span(name, line, start + 1, end + 1), hint=_hint(expected, word), source=text)


def _offset(text: str, line: int, col: int) -> int:
    lines = text.split("\n")
    return sum(len(s) + 1 for s in lines[: line - 1]) + col - 1


def _expected_at(text: str, offset: int) -> set[str] | None:
    return expected_terminals(parser(), text, offset)


def _describe(term: str) -> list[str]:
    if term in _TERMINAL_WORDS:
        words = _TERMINAL_WORDS[term]
        return words.split(", ") if term == "PAPER_KEY" else [words]
    pattern = parser().get_terminal(term).pattern
    return [pattern.value] if pattern.type == "str" else [term.lower()]


def _hint(expected: set[str] | None, word: str | None) -> str | None:
    if not expected:
        return None
    words = sorted({w for term in expected for w in _describe(term)}, key=lambda w: (" " in w, w))
    hint = "expected " + (words[0] if len(words) == 1 else "one of: " + ", ".join(words))
    close = difflib.get_close_matches(word or "", [w for w in words if " " not in w], n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? {hint}" if close else hint
