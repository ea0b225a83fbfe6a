"""`resdsl` command lines for the tests, each in a process of its own, forked from a warm one.

A test that runs `python -m resdsl_cli.main train ...` pays about 5 s before the first iteration on a 2-core
machine: the interpreter, torch, torch._dynamo (which the first optimizer imports), torchvision, matplotlib and
TensorBoard. The suite runs such commands about a hundred times. Here one process per test worker imports those
libraries once (never resdsl itself, so nothing of resdsl's outlives a command) and forks a child per command,
which runs the command line as `python -m resdsl_cli.main` would (the same argv, working directory, environment,
exit status and output, in a process of its own) and is gone when it ends.

`run` waits for the command; `start` returns at once with a handle that a test signals, kills and waits for as
it would a subprocess.Popen (the child is a session leader, as `start_new_session=True` makes one). Only commands
with the tests' usual environment come here (PYTHONHASHSEED and OMP_NUM_THREADS act at interpreter start, so
they are the warm process's); others start a fresh interpreter as before. Processes that a command starts itself
(torchrun's workers, an experiment's runs) are fresh interpreters either way. Run as a script, this file is the
warm process: one JSON request per line on stdin, one JSON answer per line on stdout.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

_WARM: dict = {}  # (tuple of the environment's items) -> the warm process for it
# forking a process that imported torch is safe on Linux (no CUDA context yet); on macOS it is not
AVAILABLE = sys.platform.startswith("linux")


def run(argv: list[str], cwd, env: dict, timeout: float) -> SimpleNamespace:
    """``python -m resdsl_cli.main *argv`` in a child of the warm process for ``env``: returncode, stdout and
    stderr (text), as subprocess.run(..., capture_output=True, text=True) gives them."""
    proc = start(argv, cwd, env)
    try:
        out, err = proc.communicate(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return SimpleNamespace(returncode=proc.returncode, stdout=out, stderr=err, args=argv)


def start(argv: list[str], cwd, env: dict, later_env: dict | None = None) -> "Started":
    """``python -m resdsl_cli.main *argv`` started in a child of the warm process for ``env``; ``later_env`` adds
    variables that are read only once the command runs (TMPDIR, say), set in the child alone."""
    return Started(argv, cwd, env, later_env or {})


class Started:
    """A started command, handled as a subprocess.Popen(..., text=True) with both outputs piped: pid, poll, wait,
    send_signal, kill, communicate (which gives the outputs once the command has ended) and returncode."""

    def __init__(self, argv: list[str], cwd, env: dict, later_env: dict):
        self.args, self.returncode = argv, None
        self._warm = _warm(env)
        self._tmp = tempfile.TemporaryDirectory()
        self._out, self._err = (os.path.join(self._tmp.name, name) for name in ("out", "err"))
        self.pid = self._ask({"start": argv, "cwd": str(cwd), "out": self._out, "err": self._err,
                              "env": later_env})["pid"]

    def _ask(self, request: dict) -> dict:
        self._warm.stdin.write(json.dumps(request) + "\n")
        self._warm.stdin.flush()
        answer = self._warm.stdout.readline()
        if not answer:
            raise RuntimeError(f"the warm process ended (exit {self._warm.wait()})")
        return json.loads(answer)

    def poll(self):
        return self.wait(0, raising=False)

    def wait(self, timeout: float | None = None, raising: bool = True):
        if self.returncode is None:
            self.returncode = self._ask({"wait": self.pid, "timeout": timeout})["rc"]
            if self.returncode is None and raising:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # as Popen: never a signal to a pid that may have been reused
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        with open(self._out, encoding="utf-8") as o, open(self._err, encoding="utf-8") as e:
            return o.read(), e.read()


def _warm(env: dict) -> subprocess.Popen:
    key = tuple(sorted(env.items()))
    proc = _WARM.get(key)
    if proc is None or proc.poll() is not None:
        proc = subprocess.Popen([sys.executable, __file__], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        _WARM[key] = proc
        atexit.register(_close, proc)
    return proc


def _close(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------------------------------------------
# the warm process


# what a run imports before its first iteration (torch._dynamo: the first optimizer), never resdsl's own modules
# (matplotlib without pyplot, whose backend choice a command makes for itself)
PRELOAD = ("torch", "torch._dynamo", "torch.utils.tensorboard", "torchvision", "matplotlib.figure",
           "matplotlib.backends.backend_agg")


def _serve() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    ended: dict[int, int] = {}  # pid -> exit status of a child that has been waited for
    for line in sys.stdin:
        request = json.loads(line)
        if "start" in request:
            answer = {"pid": _fork(request)}
        else:
            answer = {"rc": _wait(request["wait"], request["timeout"], ended)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def _fork(request: dict) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request)  # never returns
    return pid


def _wait(pid: int, timeout: float | None, ended: dict) -> int | None:
    """The child's exit status (negative: the signal that ended it), or None if it runs on after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while pid not in ended:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            ended[pid] = os.waitstatus_to_exitcode(status)
        elif deadline is not None and time.monotonic() >= deadline:
            return None
        else:
            time.sleep(0.01)
    return ended[pid]


def _child(request: dict) -> None:
    """The command line as `python -m resdsl_cli.main` runs it; ends the process with its exit status."""
    import runpy

    code = 1
    try:
        os.setsid()  # like a fresh process, not in the warm one's group
        for fd, path in ((1, request["out"]), (2, request["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        # the streams a fresh interpreter would make (its encoding and errors: stderr backslash-escapes)
        sys.stdin = open(0, encoding=sys.stdin.encoding, errors=sys.stdin.errors, closefd=False)
        sys.stdout = open(1, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors, closefd=False)
        sys.stderr = open(2, "w", encoding=sys.stderr.encoding, errors=sys.stderr.errors, closefd=False,
                          buffering=1)
        os.environ.update(request.get("env", {}))
        tempfile.tempdir = None  # TMPDIR is read again
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # what -m puts first
        sys.argv = [os.path.join(request["cwd"], "resdsl_cli", "main.py"), *request["start"]]
        try:
            runpy.run_module("resdsl_cli.main", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = _exit_status(exc.code)
        except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    _serve()
