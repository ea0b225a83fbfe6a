"""resdsl.train.ctrl_c: a Ctrl-C before a run's loop takes it. Inside an import (torch loading) the process ends
at once with its line and 130: raised there, the exception could leave modules half made and be swallowed (a
start that went on to load its data, an unrelated ImportError). Elsewhere it raises, so that cleanups run."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")

LINE = "prog: stopped: SIGINT received (Ctrl-C)"


def _run(tmp_path, body: str, interrupt: bool = False):
    """A program that installs the handler, then runs ``body`` (which sends itself SIGINT), from ``tmp_path``."""
    (tmp_path / "heavy.py").write_text(textwrap.dedent("""\
        import os, signal, sys
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came while this module loads
        for _ in range(10 ** 6):
            pass
        print("the import went on", flush=True)
        """))
    code = (f"from resdsl.train.ctrl_c import on_ctrl_c\non_ctrl_c({LINE!r}, interrupt={interrupt})\n"
            + textwrap.dedent(body))
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: __import__("signal").signal(2, __import__("signal").SIG_DFL))


@pytest.mark.parametrize("interrupt", [False, True])
def test_inside_an_import_the_process_ends_at_once_with_its_line(tmp_path, interrupt):
    r = _run(tmp_path, """\
        try:
            import heavy
        except BaseException:
            print("caught", flush=True)
        print("after", flush=True)
        """, interrupt)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip() == LINE and r.stdout == "", (r.stdout, r.stderr)


def test_elsewhere_it_exits_through_cleanups_with_its_line(tmp_path):
    r = _run(tmp_path, """\
        import os, signal
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10 ** 6):
                pass
            print("went on", flush=True)
        finally:
            print("cleaned up", flush=True)
        """)
    assert r.returncode == 130 and r.stdout == "cleaned up\n" and r.stderr.strip() == LINE, (r.stdout, r.stderr)


def test_elsewhere_a_front_end_that_says_the_line_gets_a_keyboard_interrupt(tmp_path):
    r = _run(tmp_path, """\
        import os, signal
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10 ** 6):
                pass
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """, interrupt=True)
    assert r.returncode == 0 and r.stdout == "interrupted\n" and r.stderr == "", (r.stdout, r.stderr)


def test_an_ignored_ctrl_c_stays_ignored(tmp_path):
    code = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            f"from resdsl.train.ctrl_c import on_ctrl_c\non_ctrl_c({LINE!r})\n"
            "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
