"""Lark syntax errors -> located ``SpecError`` diagnostics naming the offending word and what the grammar accepts
there (its words, read from the grammar by resdsl.grammar), with a 'did you mean' for a close word."""
from __future__ import annotations

import difflib
import functools
import re

from lark import UnexpectedInput
from lark.exceptions import UnexpectedEOF, UnexpectedToken

from .errors import Span, SpecError
from .grammar import alternatives, expected_terminals, parser, terminal_words

# How the terminals that are not keywords are named in hints (the keyword terminals' words come from the grammar)
TERMINAL_DESCRIPTIONS = {
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
}

# statements a researcher may reach for that the language does not have: what it builds instead
NOT_IN_THE_LANGUAGE = {
    "norm": "resdsl builds BatchNorm only (the papers' normalisation); 'order' places it",
    "normalization": "resdsl builds BatchNorm only (the papers' normalisation); 'order' places it",
    "activation": "resdsl builds ReLU only (the papers' activation); 'order' places it",
    "dilation": "resdsl builds no dilated convolutions; a stage's '/2' sets its stride",
}

# a Wide ResNet's width is written in its stages, not as a basic unit's width-factor (a bottleneck unit's word)
WIDE_BASIC = ("a basic unit's width is its stage's width in 'stages', a Wide ResNet's too (WRN-28-10: 'stages 160x4, "
              "320x4 /2, 640x4 /2', specs/family/wrn28_10.res)")
# characters a spec copied from a paper or a word processor holds for the ASCII ones the language reads
LOOKALIKES = {"×": "x", "–": "-", "—": "-", "−": "-", "“": '"', "”": '"', "‘": "'", "’": "'"}
_UNIT_LINE = re.compile(r"^\s*(?:stage\s+\d+\s*:\s*)?unit\s+([a-z]+)\b")

_WORD = re.compile(r"[A-Za-z0-9_.\-~%]+")


def syntax_error(exc: UnexpectedInput, text: str, path: str) -> SpecError:
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
        if word.lower() in NOT_IN_THE_LANGUAGE:
            hint = f"{NOT_IN_THE_LANGUAGE[word.lower()]}; {hint}"
    hint = _other_unit_hint(word, src_line, hint)
    hint = _typed_hint(src_line, start, word, hint)
    if "\r" in src_line.removesuffix("\r"):  # a line ended by CR alone (old Mac files) runs on into the next
        cr = ("this line holds a carriage return (CR) that does not end it: lines end with LF or CR LF (convert "
              "the file, e.g. with 'dos2unix -c mac')")
        hint = f"{cr}; {hint}" if hint else cr
    span = Span(path, line, start + 1, start + 1 + max(1, len(word)))
    return SpecError(message, span, hint=hint, source=text)


def _other_unit_hint(word: str, src_line: str, hint: str | None) -> str | None:
    """A unit option written for a unit kind that does not take it says which kinds do ('unit basic cardinality 32'
    says that cardinality is a bottleneck unit's)."""
    m = _UNIT_LINE.match(src_line)
    if m is None or not word:
        return hint
    kinds = [k for k in alternatives("unit").values() if k != m.group(1) and word in _unit_options(k)]
    if not kinds:
        return hint
    said = f"'{word}' is an option of " + " and ".join(f"'unit {k}'" for k in kinds)
    if word == "width-factor" and m.group(1) == "basic":
        said += f"; {WIDE_BASIC}"
    return f"{said}; {hint}" if hint else said


def _typed_hint(src_line: str, start: int, word: str, hint: str | None) -> str | None:
    """What a line copied from a paper may hold: a '×' for an 'x' (16×3), a decimal comma (0,27M)."""
    code = src_line.split("#", 1)[0]  # not a comment's text (a '#' inside a quoted path only shortens what is read)
    said = [f"write '{ascii_}' for '{c}' (U+{ord(c):04X})" for c, ascii_ in LOOKALIKES.items() if c in code]
    before = re.search(r"(\d+),$", src_line[:start])  # '0,27M': no space after a decimal comma ('64x3, 2' is a list)
    if before and re.fullmatch(r"\d+(\.\d+)?[KMGkmg]?", word):
        grouped = next((m.group() for m in re.finditer(r"\d+(?:,\d{3})+\b", src_line)
                        if m.start() < start < m.end()), None)  # 21,797,672: thousands; 0,27M: a decimal comma
        said.append(f"',' separates items: write {grouped.replace(',', '')}, without thousands separators" if grouped
                    else f"',' separates items: a decimal point is '.' ({before.group(1)}.{word})")
    return "; ".join(said + ([hint] if hint else [])) or None


@functools.lru_cache(maxsize=None)
def _unit_options(kind: str) -> tuple[str, ...]:
    """The words the grammar accepts right after `unit KIND`."""
    text = f"unit {kind} "
    return tuple(w for term in expected_terminals(parser(), text, len(text)) or () for w in _describe(term))


def _offset(text: str, line: int, col: int) -> int:
    """The offset in ``text`` of a 1-based line and column."""
    pos = 0
    for _ in range(line - 1):
        nxt = text.find("\n", pos)
        if nxt < 0:
            return len(text)
        pos = nxt + 1
    return pos + col - 1


def _expected_at(text: str, offset: int) -> set[str] | None:
    """The spec grammar's terminals accepted at this offset."""
    return expected_terminals(parser(), text, offset)


_STATEMENT_KEYWORDS = {"NETWORK", "STAGES", "UNIT", "SHORTCUT"}


def _is_statement_start(expected: set[str]) -> bool:
    """Whether the parser expected a new statement (so the word is an unknown statement)."""
    return _STATEMENT_KEYWORDS <= expected


def _describe(term: str) -> list[str]:
    """What a terminal means in a hint: its description, the grammar's words for it, or its literal text."""
    if term in TERMINAL_DESCRIPTIONS:
        return [TERMINAL_DESCRIPTIONS[term]]
    if term in terminal_words():
        return list(terminal_words()[term])
    try:
        pattern = parser().get_terminal(term).pattern
    except KeyError:
        return [term.lower()]
    if pattern.type == "str":  # punctuation quoted: "one of: ',', end of line", not "one of: ,, end of line"
        return [pattern.value if any(c.isalnum() for c in pattern.value) else f"'{pattern.value}'"]
    return [term.lower()]


def _expected_hint(text: str, offset: int, word: str | None, expected: set[str] | None = None) -> str | None:
    """'expected one of: ...' at this offset, with 'did you mean ...?' for a close word."""
    if expected is None:
        expected = _expected_at(text, offset)
    if not expected:
        return None
    words: list[str] = []
    for term in sorted(expected):
        for w in _describe(term):
            if w not in words:
                words.append(w)
    words.sort(key=lambda w: (w.startswith(("a ", "an ", "end ")), w.strip("'")))  # a quote does not sort
    hint = "expected " + (words[0] if len(words) == 1 else "one of: " + ", ".join(words))
    if word:
        plain = [w for w in words if " " not in w]
        close = [w for w in plain if w.lower() == word.lower()] or \
            difflib.get_close_matches(word, plain, n=1, cutoff=0.6)  # 'a' for 'A': by case first
        if close:
            hint = f"did you mean '{close[0]}'? " + hint
    return hint
