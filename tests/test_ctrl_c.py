"""resdsl.train.ctrl_c: a Ctrl-C before a run's loop takes it. Inside an import (torch loading) the process ends
at once with its line and 130: raised there, the exception could leave modules half made and be swallowed (a
start that went on to load its data, an unrelated ImportError). Elsewhere it raises, so that cleanups run."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.mark.parametrize("interrupt, ends", [(False, (130, "cleaned up\n", LINE)),  # SystemExit, its line said
                                              (True, (0, "interrupted\ncleaned up\n", ""))])  # the front end says it
def test_elsewhere_it_raises_so_that_cleanups_run(tmp_path, interrupt, ends):
    r = _run(tmp_path, """\
        import os, signal
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10 ** 6):
                pass
            print("went on", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        finally:
            print("cleaned up", flush=True)
        """, interrupt)
    assert (r.returncode, r.stdout, r.stderr.strip()) == ends


def test_an_ignored_ctrl_c_stays_ignored(tmp_path):
    code = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            f"from resdsl.train.ctrl_c import on_ctrl_c\non_ctrl_c({LINE!r})\n"
            "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_clean_ups_of_the_blocks_under_way_run_before_the_exit(tmp_path):
    r = _run(tmp_path, """\
        from resdsl.train.ctrl_c import before_exit
        with before_exit(lambda: print("left block", flush=True)):
            pass
        with before_exit(lambda: print("outer", flush=True)), before_exit(lambda: 1 / 0):
            import heavy
        """)
    assert r.returncode == 130 and r.stdout == "outer\n" and r.stderr.strip() == LINE, (r.stdout, r.stderr)


# An import finder that sends SIGINT when the module ``name`` is looked for (inside importlib, as when Ctrl-C
# comes while torch loads) and swallows the exception, as some library code does: a front end whose handler raises
# there would go on as if nothing had happened.
SWALLOWED = """\
import os, signal, sys, time
class Finder:
    def find_spec(self, name, path=None, target=None):
        if name == {name!r} and {when}:
            sys.meta_path.remove(self)
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except BaseException:
                pass
        return None
sys.meta_path.insert(0, Finder())
"""


def _front_end(code: str, cwd=None):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: __import__("signal").signal(2, __import__("signal").SIG_DFL))


def test_resdsl_takes_ctrl_c_before_it_loads_its_commands():
    code = SWALLOWED.format(name="resdsl_cli.main", when=True) + (
        "import resdsl_cli\nsys.argv = ['resdsl', 'list']\nresdsl_cli.run()\n")
    r = _front_end(code)
    assert (r.returncode, r.stdout) == (130, ""), r.stdout[-300:]
    assert r.stderr.strip() == "resdsl: stopped: SIGINT received (Ctrl-C)", r.stderr


def test_an_emitted_trainer_takes_ctrl_c_before_it_loads_its_model(tmp_path):
    from resdsl import compile_spec
    from resdsl.backends.trainer_folder import emit_trainer

    emit_trainer(compile_spec("tests/specs/tiny.res"), str(tmp_path / "t"))
    code = SWALLOWED.format(name="model", when=True) + (
        "import runpy\nsys.argv = ['train.py', '--data', 'synthetic', '--iters', '2', '--out', 'run']\n"
        "runpy.run_path('train.py', run_name='__main__')\n")
    r = _front_end(code, cwd=tmp_path / "t")
    assert r.returncode == 130 and r.stderr.strip() == "train.py: stopped: SIGINT received (Ctrl-C)", r.stderr
    assert not (tmp_path / "t" / "run").exists()


def test_ctrl_c_while_a_run_loads_a_module_leaves_no_folder(tmp_path):
    """The run's folder exists (its banner is in train.log) when torchvision or TensorBoard load: a Ctrl-C there
    ends the process at once, and the folder, which holds no record yet, goes with it."""
    run = tmp_path / "run"
    code = SWALLOWED.format(name="torchvision", when=f"os.path.exists({str(run / 'train.log')!r})") + (
        "import resdsl_cli\n"
        f"sys.argv = ['resdsl', 'train', 'tests/specs/tiny.res', '--data', 'synthetic', '--iters', '2', "
        f"'--device', 'cpu', '--out', {str(run)!r}]\nresdsl_cli.run()\n")
    r = _front_end(code, cwd=ROOT)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "resdsl: stopped: SIGINT received (Ctrl-C)", r.stderr
    assert "run directory" in r.stdout + r.stderr and not run.exists(), (r.stdout, r.stderr)


def test_a_forked_child_gets_pythons_own_keyboard_interrupt(tmp_path):
    """A DataLoader worker forked from the front end expects Python's KeyboardInterrupt (it passes it over quietly),
    not the front end's line and exit."""
    r = _run(tmp_path, """\
        import os, signal
        pid = os.fork()
        if pid == 0:
            try:
                import heavy
            except KeyboardInterrupt:
                os._exit(7)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
        """)
    assert (r.returncode, r.stdout, r.stderr) == (0, "7\n", ""), (r.stdout, r.stderr)
