"""What a spec may make resdsl read, and what of it is shown.

Specs are read only from regular files: a named pipe, /dev/stdin, /dev/zero or a folder is refused at the
`extends`/`include` statement (or, for the spec named on the command line, at its line 1) and nothing blocks. A
file reached through `extends`/`include` that is not recognisably a spec (its first word is no statement keyword,
or its error lies on its first line of code) is never quoted: the error gives its location, no text of it, and the
offending word only when that is a near miss of a keyword. The spec the user named is shown as usual.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import resdsl
from resdsl_cli.main import main

ROOT = Path(__file__).resolve().parent.parent
CHILD = "network n\ninput 3x32x32\nstem cifar 16\nunit basic\nshortcut A\nstages 16x1\nhead avgpool fc 10\n"
LOCATION = re.compile(r"^(.+):(\d+):(\d+): error: (.+)$")


def compile_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The real entry point in its own process, so that a read that blocks fails the test instead of hanging it."""
    return subprocess.run([sys.executable, "-m", "resdsl_cli.main", "compile", *args], capture_output=True, text=True,
                          timeout=60, **kwargs)


def spec_reaching(tmp_path: Path, target: str, how: str) -> Path:
    """A spec whose line 2 extends or includes ``target``."""
    text = f'network n\n{how} "{target}"\n' if how == "extends" else CHILD[:10] + f'include "{target}"\n' + CHILD[10:]
    path = tmp_path / f"via_{how}.res"
    path.write_text(text)
    return path


def first_line(stderr: str) -> tuple[str, int, str]:
    m = LOCATION.match(stderr.splitlines()[0])
    assert m, stderr
    return m.group(1), int(m.group(2)), m.group(4)


# ---- only regular files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["extends", "include"])
def test_named_pipe_is_refused_without_blocking(tmp_path, how):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    os.mkfifo(tmp_path / "ff")
    r = compile_cli(str(spec_reaching(tmp_path, "ff", how)))
    assert r.returncode == 1, r.stderr
    path, line, message = first_line(r.stderr)
    assert path.endswith(f"via_{how}.res") and line == 2 and "named pipe" in message


def test_named_pipe_as_the_spec_itself(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    os.mkfifo(tmp_path / "ff.res")
    r = compile_cli(str(tmp_path / "ff.res"))
    assert r.returncode == 1 and "named pipe" in first_line(r.stderr)[2], r.stderr


@pytest.mark.skipif(not Path("/dev/stdin").exists(), reason="no /dev/stdin")
def test_dev_stdin_on_a_pipe_is_refused(tmp_path):
    """stdin is a pipe nobody writes to: reading it would wait forever."""
    spec = spec_reaching(tmp_path, "/dev/stdin", "include")
    for args in ([str(spec)], ["/dev/stdin"]):
        r = compile_cli(*args, stdin=subprocess.PIPE)
        assert r.returncode == 1 and "named pipe" in first_line(r.stderr)[2], r.stderr


@pytest.mark.parametrize("target,word", [("/dev/zero", "character device"), (".", "is a directory")])
def test_devices_and_folders_are_refused(tmp_path, target, word):
    if not os.path.exists(target):
        pytest.skip(f"no {target}")
    for how in ("extends", "include"):
        spec = spec_reaching(tmp_path, target, how)
        r = CliRunner().invoke(main, ["compile", str(spec)])
        assert r.exit_code == 1, r.output
        path, line, message = first_line(r.stderr)
        assert path == str(spec) and line == 2 and word in message


def test_api_raises_located_error_for_a_device(tmp_path):
    spec = spec_reaching(tmp_path, "/dev/null", "extends")
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec(spec)
    assert info.value.span.line == 2 and "character device" in info.value.message


# ---- a file that is not a spec is never quoted ------------------------------------------------------------------


FOREIGN = {"env": "SECRET=hunter2\nMORE=x\n", "word": "hunter2\n", "after_comment": "# a comment\nhunter2 stays\n",
           "keyword_first": "include hunter2\n", "keyword_line": "network hunter2 x\n",
           "long_number": "9" * 150 + " hunter2\n", "nul": "hunter2\x00\n"}


@pytest.mark.parametrize("content", FOREIGN.values(), ids=FOREIGN.keys())
@pytest.mark.parametrize("how", ["extends", "include"])
def test_foreign_file_text_is_not_shown(tmp_path, content, how):
    (tmp_path / "creds.txt").write_text(content)
    spec = spec_reaching(tmp_path, "creds.txt", how)
    r = CliRunner().invoke(main, ["compile", str(spec)])
    assert r.exit_code == 1, r.output
    assert "hunter2" not in r.output and "SECRET" not in r.output and "9999" not in r.output, r.output
    path, line, message = first_line(r.stderr)
    assert path == str(tmp_path / "creds.txt") and line == content[:content.index("hunter2")].count("\n") + 1
    assert "not a resdsl spec" in message
    assert f"{spec}:2:1" in r.stderr  # and which statement read it


def test_foreign_binary_file_byte_is_not_shown(tmp_path):
    (tmp_path / "blob").write_bytes(b"\xfe\xedkey")
    r = CliRunner().invoke(main, ["compile", str(spec_reaching(tmp_path, "blob", "include"))])
    assert r.exit_code == 1 and "not UTF-8" in r.stderr and "0xfe" not in r.stderr, r.output


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="no /proc")
def test_proc_environ_is_not_echoed(tmp_path):
    """/proc files stat as regular files: the quoting rule, not the file type, keeps the environment secret."""
    spec = spec_reaching(tmp_path, "/proc/self/environ", "include")
    r = compile_cli(str(spec), env={**os.environ, "RESDSL_TEST_SECRET": "hunter2"})
    assert r.returncode == 1 and "hunter2" not in r.stderr and "PATH=" not in r.stderr, r.stderr
    assert first_line(r.stderr)[0] == "/proc/self/environ"


def test_near_miss_keyword_is_named(tmp_path):
    """A typo in the first word of one's own recipe file is a typo, not content: it is shown with the fix."""
    (tmp_path / "rec.res").write_text("recipy r {\n  lr 0.1\n}\n")
    r = CliRunner().invoke(main, ["compile", str(spec_reaching(tmp_path, "rec.res", "include"))])
    assert r.exit_code == 1
    assert "'recipy'" in r.stderr and "did you mean 'recipe'?" in r.stderr and "lr 0.1" not in r.stderr, r.stderr


def test_a_spec_with_a_mistake_is_shown(tmp_path):
    """A file that starts as a spec is one: a later mistake is quoted with its line and caret."""
    (tmp_path / "parent.res").write_text("network p\nstagez 16x3\n")
    r = CliRunner().invoke(main, ["compile", str(spec_reaching(tmp_path, "parent.res", "extends"))])
    lines = r.stderr.splitlines()
    assert r.exit_code == 1 and "unknown statement 'stagez'" in lines[0] and lines[1] == "    stagez 16x3", r.stderr


def test_the_users_own_spec_is_shown(tmp_path):
    (tmp_path / "mine.res").write_text("SECRET=hunter2\n")
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "mine.res")])
    assert r.exit_code == 1 and "    SECRET=hunter2" in r.stderr.splitlines(), r.stderr


def test_diagnostic_location_stays_on_one_line(tmp_path):
    """A line break or an undecodable byte in a file name is written as an escape in the message."""
    name = os.fsdecode(b"a\nb\r\xc2\x85\xff.res")  # U+0085 NEL, then a byte that is no UTF-8
    try:
        Path(tmp_path / name).write_text("network n\nstagez 1\n")
    except (OSError, UnicodeEncodeError):
        pytest.skip("the filesystem refuses the name")
    err = pytest.raises(resdsl.SpecError, resdsl.compile_spec, str(tmp_path / name)).value
    first = err.render().splitlines()[0]
    assert first.endswith(":2:1: error: unknown statement 'stagez'") and "a\\nb\\r\\x85\\udcff.res" in first
