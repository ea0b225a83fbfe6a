"""Source spans and user-facing diagnostics (``file:line:col: error: message``)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .train.dataerror import printable  # a text on one line: defined in the trainer, which imports no resdsl


@dataclass(frozen=True)
class Span:
    """A position in a spec file: 1-based line and column, with the end column on the same line."""

    path: str
    line: int
    column: int
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class SpecError(Exception):
    """A problem in a spec, located at a span; the only exception users should ever see."""

    def __init__(self, message: str, span: Span | None, hint: str | None = None, source: str | None = None, *,
                 show_source: bool = True):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.source = source  # the full text of span.path, for the caret line
        self.show_source = show_source  # False for a file that is not a spec: none of its text is ever shown
        self.notes: list[str] = []  # where the file was reached from: "rec.res is included by net.res:3:1"

    def render(self) -> str:
        """The diagnostic as printed: location line, source line, caret, hint, notes."""
        return render_diagnostic("error", self.message, self.span, self.hint,
                                 self.source if self.show_source else None, self.notes)

    def __str__(self) -> str:  # an uncaught error in a notebook or script says where, as the CLI does
        return self.render()

    def __reduce__(self):  # picklable (a process pool's worker sends it back) and copyable, with all it holds
        return type(self), (self.message, self.span, self.hint, self.source), self.__dict__


class SpecWarning(UserWarning):
    """What compiles but is most likely not meant (``CheckedNetwork.warnings``), raised by ``compile_spec`` through
    Python's warnings; the command line says it as a located warning of its own."""


def render_diagnostic(kind: str, message: str, span: Span | None, hint: str | None, source: str | None,
                      notes: list[str] = ()) -> str:
    """Format ``PATH:LINE:COL: kind: MESSAGE`` plus the source line with a caret, an optional hint and notes."""
    if span is None:
        lines = [printable(f"resdsl: {kind}: {message}")]
    else:
        lines = [printable(f"{span}: {kind}: {message}")]
        text = _source_line(source, span.line)
        if text is not None:
            lines += _with_caret(text, span)
    if hint:
        lines.append(printable(f"hint: {hint}"))
    lines += [printable(f"note: {note}") for note in notes]
    return "\n".join(lines)


def few(names: list[str], sep: str = ", ", most: int = 12) -> str:
    """``names`` joined by ``sep``; a longer list as its first and last few around '... (N in all) ...', so that a
    message stays a line however many names a spec holds."""
    if len(names) <= most:
        return sep.join(names)
    return sep.join([*names[:most // 2], f"... ({len(names)} in all) ...", *names[-(most // 2):]])


def env_limit(name: str, default: float) -> float:
    """A size limit the user may lift through the environment variable ``name`` (a number, or ``inf``)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:  # also refuses nan
        raise SpecError(f"{name}={raw!r} is not a limit: give a non-negative number such as {default:.0f}, or inf",
                        None)
    return value


SHOWN_WIDTH = 200  # characters of a source line shown above the caret: a window around it on a longer line


def _with_caret(text: str, span: Span) -> list[str]:
    """The source line (a window of it around the column, marked by '...' where it is cut) and the caret line."""
    text = text.expandtabs(1)  # one column a tab, as the parser counts
    col = max(span.column, 1)
    start = 0
    if len(text) > SHOWN_WIDTH:
        start = max(0, min(col - 1 - SHOWN_WIDTH // 2, len(text) - SHOWN_WIDTH))
    part = text[start:start + SHOWN_WIDTH]
    head, tail = "..." if start else "", "..." if start + SHOWN_WIDTH < len(text) else ""
    width = span.end_column - col if span.end_column and span.end_column > col else 1
    width = max(1, min(width, len(part) - (col - 1 - start)))
    return [f"    {head}{part}{tail}", "    " + " " * (len(head) + col - 1 - start) + "^" * width]


def _source_line(source: str | None, line: int) -> str | None:
    if source is None or line < 1:
        return None
    lines = source.split("\n")  # as the parser counts lines: only \n ends one
    if line > len(lines):
        return None
    text = lines[line - 1].removesuffix("\r")
    # keep the caret line readable for binary junk (render_diagnostic shows a window of a long line)
    return "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in text)
