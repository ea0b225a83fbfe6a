"""The trainer's errors for the user and how they are shown. :class:`OneParagraph` keeps an error's message one
paragraph, and :class:`Message` is the trainer's error that has one; :class:`DataError` is what every dataset
module raises when the user must fix something (a missing folder, no internet and no local copy, an unknown
dataset, a corrupt file); :func:`one_line` turns a foreign exception into one short line for such a message;
:func:`printable` shows any text on one line (resdsl.errors uses it too), and :func:`shown` shows a message line by
line (the command line uses it for every message). Defined once here, below every other module of the trainer, so
that all of them raise the same classes; imports nothing from the rest of resdsl.
"""
from __future__ import annotations


class OneParagraph:
    """What makes an error's message one paragraph for the user: ``str(err)`` writes a line break or a terminal's
    escape sequence in what it names (a file name, a run record's text) as its escape, wherever the message goes
    (printed, logged, wrapped in another message). ``err.args`` keep the text as given. Mixed into
    :class:`Message` and into the trainer's ``Interrupted``, a KeyboardInterrupt."""

    def __str__(self) -> str:
        return printable(super().__str__())


class Message(OneParagraph, Exception):
    """An error of the trainer for the user, its message one paragraph (:class:`OneParagraph`)."""


class DataError(Message):
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
