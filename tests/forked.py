"""`resdsl` command lines for the tests, each in a process of its own, forked from a warm one.

A test that runs `python -m resdsl_cli.main train ...` pays about 5 s before the first iteration on a 2-core
machine: the interpreter, torch, torch._dynamo (which the first optimizer imports), torchvision, matplotlib and
TensorBoard. The suite runs such commands about a hundred times. Here one process per test worker imports those
libraries once (never resdsl itself, so nothing of resdsl's outlives a command) and forks a child per command,
which runs the command line as `python -m resdsl_cli.main` would (the same argv, working directory, environment,
exit status and output, in a process of its own) and is gone when it ends.

Only commands with the tests' usual environment come here (PYTHONHASHSEED and OMP_NUM_THREADS act at interpreter
start, so they are the warm process's); others, and commands that a test signals or kills, start a fresh
interpreter as before. Run as a script, this file is the warm process: one JSON request per line on stdin, one
JSON answer per line on stdout.
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
    warm = _warm(env)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        warm.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "out": out, "err": err, "timeout": timeout})
                         + "\n")
        warm.stdin.flush()
        answer = warm.stdout.readline()
        if not answer:
            raise RuntimeError(f"the warm process ended (exit {warm.wait()})")
        rc = json.loads(answer)["rc"]
        if rc == "timeout":
            raise subprocess.TimeoutExpired(argv, timeout)
        with open(out, encoding="utf-8") as o, open(err, encoding="utf-8") as e:
            return SimpleNamespace(returncode=rc, stdout=o.read(), stderr=e.read(), args=argv)


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
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.write(json.dumps({"rc": _fork_and_wait(request)}) + "\n")
        sys.stdout.flush()


def _fork_and_wait(request: dict):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request)  # never returns
    deadline = time.monotonic() + request["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.01)


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
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # what -m puts first
        sys.argv = [os.path.join(request["cwd"], "resdsl_cli", "main.py"), *request["argv"]]
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
