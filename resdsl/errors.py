"""Source spans and user-facing diagnostics (``file:line:col: error: message``)."""
from __future__ import annotations

from dataclasses import dataclass


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

    def __init__(self, message: str, span: Span | None, hint: str | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.source = source  # the full text of span.path, for the caret line

    def render(self) -> str:
        """The diagnostic as printed: location line, source line, caret, hint."""
        return render_diagnostic("error", self.message, self.span, self.hint, self.source)


class ExpectFailed(Exception):
    """Raised by strict API calls when one or more `expect` lines do not hold."""

    def __init__(self, failures):
        super().__init__("; ".join(f"{f.what}: expected {f.expected}, got {f.actual}" for f in failures))
        self.failures = failures


def render_diagnostic(kind: str, message: str, span: Span | None, hint: str | None, source: str | None) -> str:
    """Format ``PATH:LINE:COL: kind: MESSAGE`` plus the source line with a caret and an optional hint."""
    if span is None:
        lines = [f"resdsl: {kind}: {message}"]
    else:
        lines = [f"{span}: {kind}: {message}"]
        text = _source_line(source, span.line)
        if text is not None:
            shown = text.expandtabs(1)
            lines.append(f"    {shown}")
            col = max(span.column, 1)
            width = 1
            if span.end_column and span.end_column > col:
                width = span.end_column - col
            width = max(1, min(width, max(1, len(shown) - col + 1)))
            lines.append("    " + " " * (col - 1) + "^" * width)
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)


def _source_line(source: str | None, line: int) -> str | None:
    if source is None or line < 1:
        return None
    lines = source.split("\n")  # as the parser counts lines: only \n ends one
    if line > len(lines):
        return None
    text = lines[line - 1].removesuffix("\r")
    # keep the caret line readable for binary junk or absurdly long lines
    text = "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in text)
    return text[:200]
