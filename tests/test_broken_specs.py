"""A corpus of broken specs (tests/broken/*.res): each one exits 1 with the right located error, no traceback.

Each file's first line says what it checks: `# expect-error: LINE: MESSAGE FRAGMENT`, or
`# expect-error: LINE@FILE: ...` when the error is located in another file (relative to tests/broken/).
Binary and empty files have their expectations below.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from resdsl_cli.main import main

BROKEN = Path(__file__).resolve().parent / "broken"
CASES = sorted(p.name for p in BROKEN.glob("*.res"))
SIDECAR = {
    "empty.res": (1, None, "the spec never says 'network'"),
    "junk_bytes.res": (1, None, "not UTF-8 text (byte 0xff)"),
    "invalid_utf8.res": (3, None, "not UTF-8 text (byte 0xc3)"),
    "nul_bytes.res": (2, None, "NUL byte"),
}
HEADER = re.compile(r"# expect-error: (\d+)(?:@(\S+))?: (.+)")


def expectation(name: str):
    if name in SIDECAR:
        return SIDECAR[name]
    first = (BROKEN / name).read_text().splitlines()[0]
    m = HEADER.match(first)
    assert m, f"{name}: first line must be '# expect-error: LINE: MESSAGE'"
    return int(m.group(1)), m.group(2), m.group(3)


def test_corpus_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", CASES)
def test_broken_spec_gives_located_error(name, monkeypatch):
    monkeypatch.chdir(BROKEN.parent.parent)
    path = f"tests/broken/{name}"
    line, other, fragment = expectation(name)
    where = f"tests/broken/{other}" if other else path
    r = CliRunner().invoke(main, ["compile", path])
    assert r.exit_code == 1, (r.exit_code, r.output)
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.splitlines()
    m = re.match(r"^(.+):(\d+):(\d+): error: (.+)$", lines[0])
    assert m, lines[0]
    assert (m.group(1), int(m.group(2))) == (where, line), lines[0]
    assert fragment in m.group(4), lines[0]
    if len(lines) > 1 and not lines[1].startswith("hint:"):
        assert lines[2].strip() and set(lines[2].strip()) == {"^"}, r.stderr


@pytest.mark.parametrize("name", ["junk_bytes.res", "option_a_shrinks.res", "cycle_start.res", "unclosed_recipe.res"])
def test_real_process_exit_code(name):
    r = subprocess.run([sys.executable, "-m", "resdsl_cli.main", "compile", f"tests/broken/{name}"],
                       capture_output=True, text=True, cwd=BROKEN.parent.parent)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert re.match(r"^tests/broken/\S+:\d+:\d+: error: ", r.stderr)
