"""Command-line interface of resdsl (installed as the ``resdsl_cli`` package)."""
import sys

STOPPED = "resdsl: stopped: SIGINT received (Ctrl-C)"  # said where no run's own stop handler took the Ctrl-C
EXIT_SIGINT = 130  # 128 + SIGINT, as a shell reports a process that Ctrl-C ended


def run() -> None:
    """The `resdsl` program (its console script). Loading the commands takes a moment; a Ctrl-C meanwhile ends it
    as one during a command does (cli.common.guard), with STOPPED and exit 130, not a KeyboardInterrupt traceback."""
    try:
        from .main import main
    except KeyboardInterrupt:
        print(STOPPED, file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    main()
