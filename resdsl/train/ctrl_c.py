"""A Ctrl-C before a run's loop takes it (stopping.Stop checkpoints and stops): one line and exit 130, never a
traceback. Standard library only, so that a front end can set it up before torch loads.

Python's own handler raises KeyboardInterrupt wherever the program is, and while torch loads that is inside an
import: the exception can leave modules half made and be swallowed on the way up (numpy's C module then refuses
to load a second time, a lazy import of numpy.linalg recursed without end, one start went on to load its data), so
the program ended in an unrelated traceback or kept running. So inside an import the handler ends the process
there and then, after the clean-ups that code under way registered with :func:`before_exit` (a run being prepared
removes the folder it made); elsewhere it raises, as Python's does, so that what is under way cleans up itself.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Callable

EXIT_SIGINT = 130  # 128 + SIGINT, as a shell reports a process that Ctrl-C ended
CTRL_C = "SIGINT received (Ctrl-C)"  # what a front end's line and a run's train.log say after "stopped: "
_BEFORE_EXIT: list[Callable[[], None]] = []  # the clean-ups of the blocks under way, innermost last


@contextlib.contextmanager
def before_exit(clean_up: Callable[[], None]):
    """While the block runs, a Ctrl-C that ends the process inside an import first calls ``clean_up``: what the
    block's own handling of the exception would have done."""
    _BEFORE_EXIT.append(clean_up)
    try:
        yield
    finally:
        _BEFORE_EXIT.remove(clean_up)


def on_ctrl_c(line: str, interrupt: bool = False) -> None:
    """From now on a Ctrl-C inside an import prints ``line`` and ends the process with EXIT_SIGINT; elsewhere it
    raises KeyboardInterrupt (``interrupt``: for a front end that says ``line`` where it catches it) or prints
    ``line`` and raises SystemExit(EXIT_SIGINT). Nothing changes where SIGINT is ignored (a background job)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    own = os.getpid()

    def handler(signum, frame):
        if os.getpid() != own:  # a forked child (a DataLoader worker): Python's own, as its code expects
            raise KeyboardInterrupt
        if _importing(frame):
            for clean_up in reversed(_BEFORE_EXIT):
                try:
                    clean_up()
                except Exception:  # noqa: BLE001 - the others and the exit come first
                    pass
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
