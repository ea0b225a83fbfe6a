"""The data error: what every dataset module of the trainer raises when the user must fix something (a missing
folder, no internet and no local copy, an unknown dataset, a corrupt file), and :func:`one_line`, which turns a
foreign exception into one short line for such a message. Defined once here, below every other data module, so
that all of them (and :mod:`.data`, which re-exports it) raise the same class; imports nothing from the rest of
resdsl.
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
