"""The data error: what every dataset module of the trainer raises when the user must fix something (a missing
folder, no internet and no local copy, an unknown dataset, a corrupt file), :func:`one_line`, which turns a
foreign exception into one short line for such a message, :func:`printable`, which shows any text on one line
(resdsl.errors uses it too), and :func:`shown`, which shows a message line by line (the command line uses it for
every message). Defined once here, below every other data module, so that all of them (and :mod:`.data`, which
re-exports it) raise the same class; imports nothing from the rest of resdsl.
"""
from __future__ import annotations


class DataError(Exception):
    """A data problem the user must fix: a missing folder, no internet and no local copy, an unknown dataset,
    a corrupt file. ``str(err)`` is a complete, actionable one-paragraph message that names the ``--data`` /
    ``--data-dir`` flags where they are the fix."""


def one_line(exc: BaseException) -> str:
    """An exception as one short line (torchvision's download errors span several)."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def printable(text: str) -> str:
    """``text`` on one line, each unprintable character (a line break or a terminal's escape sequence in a file
    name or a run record, an undecodable file-name byte) written as its escape."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def shown(text: str) -> str:
    """A message as resdsl prints and logs it: its lines kept, each as :func:`printable` writes it."""
    return "\n".join(printable(line) for line in text.split("\n"))
