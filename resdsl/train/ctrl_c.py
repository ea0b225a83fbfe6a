"""A Ctrl-C before a run's loop takes it (stopping.Stop checkpoints and stops): one line and exit 130, never a
traceback. Standard library only, so that a front end can set it up before torch loads.

Python's own handler raises KeyboardInterrupt wherever the program is, and while torch loads that is inside an
import: the exception can leave modules half made and be swallowed on the way up (numpy's C module then refuses
to load a second time, a lazy import of numpy.linalg recursed without end, one start went on to load its data), so
the program ended in an unrelated traceback or kept running. Inside an import nothing of a run exists yet, so the
handler ends the process there and then; elsewhere it raises, as Python's does, so that what is under way cleans up.
"""
from __future__ import annotations

import os
import signal
import sys

EXIT_SIGINT = 130  # 128 + SIGINT, as a shell reports a process that Ctrl-C ended


def on_ctrl_c(line: str, interrupt: bool = False) -> None:
    """From now on a Ctrl-C inside an import prints ``line`` and ends the process with EXIT_SIGINT; elsewhere it
    raises KeyboardInterrupt (``interrupt``: for a front end that says ``line`` where it catches it) or prints
    ``line`` and raises SystemExit(EXIT_SIGINT). Nothing changes where SIGINT is ignored (a background job)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def handler(signum, frame):
        if _importing(frame):
            _say(line)
            os._exit(EXIT_SIGINT)  # flushed above; no module is left half made for anything to trip over
        if interrupt:
            raise KeyboardInterrupt
        _say(line)
        raise SystemExit(EXIT_SIGINT)

    signal.signal(signal.SIGINT, handler)


def _importing(frame) -> bool:
    """Whether the interrupted code runs inside an import (importlib's frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _say(line: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the line matters more
            pass
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
