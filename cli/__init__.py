"""Command-line interface of resdsl (installed as the ``resdsl_cli`` package)."""
import sys

from resdsl.train.ctrl_c import CTRL_C, EXIT_SIGINT, on_ctrl_c  # the standard library only: a few ms

STOPPED = "resdsl: stopped: " + CTRL_C  # said where no run's own stop handler took the Ctrl-C


def run() -> None:
    """The `resdsl` program (its console script, and `python -m resdsl_cli`). Loading the commands takes a moment;
    a Ctrl-C meanwhile ends it as one during a command does (cli.common.guard), with STOPPED and exit 130, not a
    KeyboardInterrupt traceback."""
    try:
        stop_on_ctrl_c()
        from .main import main
    except KeyboardInterrupt:  # one that came just outside the import (inside it, the handler ends the process)
        print(STOPPED, file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    main()


def stop_on_ctrl_c() -> None:
    """A Ctrl-C while a module loads (torch takes seconds) prints STOPPED and ends the process at once; elsewhere
    it is a KeyboardInterrupt, which cli.common.guard says as STOPPED (see resdsl.train.ctrl_c)."""
    on_ctrl_c(STOPPED, interrupt=True)
