"""A corpus of broken specs (tests/broken/*.res): each exits 1 with the RIGHT located error and no traceback.

Each file's first line says what it checks: `# expect-error: LINE: MESSAGE FRAGMENT`, or
`# expect-error: LINE@FILE: MESSAGE FRAGMENT` when the error belongs in another file (a parent, an included
file; FILE is relative to tests/broken/). Binary, empty and BOM files cannot carry that comment: their
expectations are in SIDECAR below. Helper files (parents, include targets, cycles) live in subfolders and are
not cases themselves.

The contract checked for every case: exit status 1; stderr's first line is `PATH:LINE:COL: error: MESSAGE`
with PATH the file that holds the mistake; when a source line is shown it is that file's LINE, followed by a
caret line under COL; no traceback, no internal error.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import resdsl
from resdsl_cli.main import main

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "broken"
CASES = sorted(p.name for p in BROKEN.glob("*.res"))
CONTRACT = re.compile(r"^.+:\d+:\d+: error: .+$")
FIRST = re.compile(r"^(.+):(\d+):(\d+): error: (.+)$")
HEADER = re.compile(r"^# expect-error: (\d+)(?:@(\S+))?: (.+)$")

# name -> (line, file relative to tests/broken or None for the case itself, message fragment or None for any)
SIDECAR = {
    "empty.res": (1, None, "the spec never says 'network'"),
    "only_whitespace.res": (1, None, "the spec never says 'network'"),
    "junk_bytes.res": (1, None, "not UTF-8 text (byte 0xff)"),
    "invalid_utf8.res": (3, None, "not UTF-8 text (byte 0xc3)"),
    "nul_bytes.res": (2, None, "NUL byte"),
    "utf8_bom.res": (1, None, "the spec never says 'input'"),  # the byte order mark itself is no error
    "invalid_utf8_after_bom.res": (3, None, "not UTF-8 text (byte 0xff)"),  # counted from the file's start
}

# Known compiler bugs, name -> reason: the case states the right behaviour and fails today. They are marked
# xfail(strict=True), so the test turns red (XPASS) once the compiler is fixed: then delete the entry.
# (Empty: the bugs this corpus found -- huge_digits_*, formfeed_line_end, lone_carriage_return, utf8_bom,
# expect_fails -- are fixed.)
XFAIL_CLI: dict[str, str] = {}
XFAIL_API: dict[str, str] = {}


def expectation(name: str) -> tuple[int, str | None, str | None]:
    if name in SIDECAR:
        return SIDECAR[name]
    first = (BROKEN / name).read_bytes().split(b"\n", 1)[0].decode("utf-8")
    m = HEADER.match(first)
    assert m, f"{name}: the first line must be '# expect-error: LINE: MESSAGE' (or add it to SIDECAR)"
    return int(m.group(1)), m.group(2), m.group(3)


def file_line(path: Path, line: int) -> str:
    """Line ``line`` of a file as the caret display shows it: lines end at \\n only (as the parser counts them),
    a leading byte order mark is not part of the text, unprintable characters show as '?'."""
    lines = path.read_bytes().decode("utf-8-sig", "replace").split("\n")
    text = lines[line - 1].removesuffix("\r") if line <= len(lines) else ""
    text = "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in text)
    return text.expandtabs(1)


def shows_the_column(shown: str, caret: str, text: str, col: int) -> bool:
    """The shown source line is the file's line, or on a line longer than 200 characters a window of it (cut ends
    marked '...'), with the caret under column ``col`` of the file's line."""
    if len(text) <= 200:
        return shown == text and re.fullmatch(r" {%d}\^+" % (col - 1), caret) is not None
    at = len(caret) - len(caret.lstrip(" "))
    for head in ("...", "")[0 if shown.startswith("...") else 1:]:
        for tail in ("...", "")[0 if shown.endswith("...") else 1:]:
            body = shown[len(head):len(shown) - len(tail)]
            start = col - 1 - (at - len(head))
            if 0 <= start and text[start:start + len(body)] == body and len(body) <= 200:
                return True
    return False


def check_diagnostic(stderr: str, where: str, line: int, fragment: str | None) -> None:
    """The whole contract for one error message, ``where`` being the path as the user wrote it."""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    assert CONTRACT.match(lines[0]), lines[0]
    assert re.match(rf"^{re.escape(where)}:\d+:\d+: error: ", lines[0]), (where, lines[0])
    m = FIRST.match(lines[0])
    got_line, col, message = int(m.group(2)), int(m.group(3)), m.group(4)
    assert got_line == line, (line, lines[0])
    if fragment is not None:
        assert fragment in message, (fragment, lines[0])
    if len(lines) > 1 and not lines[1].startswith("hint: "):
        # a source line is shown: it is the right line of the right file, with a caret under the column
        assert lines[1].startswith("    "), stderr
        assert len(lines) > 2 and lines[2].startswith("    "), stderr
        assert shows_the_column(lines[1][4:], lines[2][4:], file_line(ROOT / where, line), col), stderr
        rest = lines[3:]
    else:
        rest = lines[1:]
    hints = rest[:1] if rest and rest[0].startswith("hint: ") else []
    assert all(x.startswith("note: ") for x in rest[len(hints):]), stderr  # how another file was reached


def _params(xfails: dict[str, str]):
    return [pytest.param(n, marks=pytest.mark.xfail(reason=xfails[n], strict=True)) if n in xfails else n
            for n in CASES]


def test_corpus_is_large_enough_and_annotated():
    assert len(CASES) >= 45
    for name in CASES:
        line, other, _ = expectation(name)
        assert line >= 1
        if other is not None:
            assert (BROKEN / other).is_file(), (name, other)
    assert set(SIDECAR) <= set(CASES) and set(XFAIL_CLI) <= set(CASES)


@pytest.mark.parametrize("name", _params(XFAIL_CLI))
def test_cli_gives_located_error(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = f"tests/broken/{name}"
    line, other, fragment = expectation(name)
    r = CliRunner().invoke(main, ["compile", path])
    assert r.exit_code == 1, (r.exit_code, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    check_diagnostic(r.stderr, f"tests/broken/{other}" if other else path, line, fragment)
    if other:  # the error is in a file the spec reached: the notes lead back to the spec
        assert r.stderr.splitlines()[-1].startswith("note: ") and f" by {path}:" in r.stderr, r.stderr


@pytest.mark.parametrize("name", _params(XFAIL_API))
def test_api_raises_spec_error(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = f"tests/broken/{name}"
    line, other, fragment = expectation(name)
    if name == "expect_fails.res":  # `expect` lines are evaluated, not raised, by the API
        assert not resdsl.compile_spec(path).ok
        return
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec(path)
    err = info.value
    assert err.span is not None and err.span.path == (f"tests/broken/{other}" if other else path)
    assert err.span.line == line
    if fragment is not None:
        assert fragment in err.message
    assert CONTRACT.match(err.render().splitlines()[0])


SUBPROCESS_CASES = ["junk_bytes.res", "empty.res", "option_a_shrinks.res", "cycle_start.res", "unclosed_recipe.res",
                    "parent_semantic_error.res", "include_cycle.res"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_real_process(name):
    """The installed entry point's real exit status and stderr (CliRunner cannot see sys.exit plumbing bugs)."""
    path = f"tests/broken/{name}"
    line, other, fragment = expectation(name)
    r = subprocess.run([sys.executable, "-m", "resdsl_cli.main", "compile", path], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr)
    check_diagnostic(r.stderr, f"tests/broken/{other}" if other else path, line, fragment)
    if other:  # the error is in a file the spec reached: the notes lead back to the spec
        assert r.stderr.splitlines()[-1].startswith("note: ") and f" by {path}:" in r.stderr, r.stderr


def _oversized(tmp_path: Path):
    p = tmp_path / "big.res"
    p.write_text("# padding\n" * 110_000)
    return str(p), str(p), 1, "larger than 1000000 bytes"


def _long_line(tmp_path: Path):
    p = tmp_path / "long.res"
    p.write_text("# one absurdly long word on line 2\n" + "z" * 50_000 + "\n")
    return str(p), str(p), 2, "unknown statement"


def _directory(tmp_path: Path):
    return str(tmp_path), str(tmp_path), 1, "is a directory"


def _missing(tmp_path: Path):
    return str(tmp_path / "nope.res"), str(tmp_path / "nope.res"), 1, "no such file"


def _deep_chain(tmp_path: Path):
    """41 files, each extending the next: deeper than the 32 files resdsl follows."""
    for i in range(40):
        (tmp_path / f"c{i}.res").write_text(f'# link {i}\nextends "c{i + 1}.res"\n')
    (tmp_path / "c40.res").write_text("network end\n")
    return str(tmp_path / "c0.res"), str(tmp_path / "c31.res"), 2, "extends chain deeper than 32 files"


@pytest.mark.parametrize("make", [_oversized, _long_line, _directory, _missing, _deep_chain])
def test_generated_inputs(make, tmp_path):
    """Inputs better made on the fly than committed: too big, too long, not a file, too deep."""
    path, where, line, fragment = make(tmp_path)
    r = CliRunner().invoke(main, ["compile", path])
    assert r.exit_code == 1, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    first = r.stderr.splitlines()[0]
    assert re.match(rf"^{re.escape(where)}:{line}:\d+: error: ", first), first
    assert fragment in first, first


def test_what_an_error_shows_of_other_files_and_odd_bytes(tmp_path, monkeypatch):
    """A parent that opens with any statement (`drop-path` too) is a spec, so its offending line is shown; a
    shortcut that breaks a parent's stage is named by its own file, line and column; a byte that is not UTF-8
    is located in characters, as every column is."""
    monkeypatch.chdir(ROOT)
    r = CliRunner().invoke(main, ["compile", "tests/broken/parent_starts_with_drop_path.res"])
    assert r.stderr.splitlines()[1] == "    unit basci", r.stderr
    monkeypatch.chdir(tmp_path)
    base = (BROKEN / "helpers" / "good_parent.res").read_text(encoding="utf-8")
    (tmp_path / "parent.res").write_text(base, encoding="utf-8")
    (tmp_path / "child.res").write_text('extends "parent.res"\nnetwork c\n\n\nshortcut identity\n', encoding="utf-8")
    r = CliRunner().invoke(main, ["compile", "child.res"])
    assert r.exit_code == 1 and r.stderr.startswith("parent.res:"), r.stderr
    assert "(the shortcut is set at child.res:5:1)" in r.stderr, r.stderr
    (tmp_path / "accents.res").write_bytes("network éé".encode() + b"\xff\n")
    r = CliRunner().invoke(main, ["compile", "accents.res"])
    assert r.stderr.startswith("accents.res:1:11: error: spec is not UTF-8 text (byte 0xff)"), r.stderr
