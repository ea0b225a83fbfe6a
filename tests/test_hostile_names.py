"""Hostile file names and paths never become code: as the spec's own name, as an `extends` parent or as an
`include`d recipe file, each goes through `resdsl compile --emit-python / --emit-trainer / --onnx`,
`resdsl.build_model` and `resdsl viz`. Every emitted .py file compiles, executing it runs no payload, and the
name still shows (escaped) where it says where the code came from."""
from __future__ import annotations

import ast
import errno
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

import resdsl  # noqa: E402
from resdsl.backends.escape import py_doc, py_ident, py_str, py_text  # noqa: E402
from resdsl.backends.trainer_folder import emit_trainer  # noqa: E402
from resdsl_cli.main import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE = (ROOT / "specs" / "resnet20.res").read_text().replace('"recipes.res"', f'"{ROOT / "specs" / "recipes.res"}"')
RECIPES = (ROOT / "specs" / "recipes.res").read_text()
MARK = "PWNED"
RUN = f"__import__('os').system('touch {MARK}')"

# id -> file name; each payload, if it escaped its literal, comment or docstring, would create ./PWNED
HOSTILE = {
    "triple_double": f'x""";{RUN};""".res',
    "triple_single": f"x''';{RUN};'''.res",
    "single_quote": f"x';{RUN};'.res",
    "backslash_quote": f"p\\';{RUN};#.res",
    "backslashes": "C:\\Users\\p\\N.res",
    "trailing_backslash": "tail\\",
    "newline": f"a\n{RUN}\n.res",
    "carriage_return": f"a\r{RUN}\r.res",
    "crlf": f"a\r\n{RUN}\r\n.res",
    "form_feed_vtab": f"a\x0c{RUN}\x0b.res",
    "file_group_record_sep": f"a\x1c{RUN}\x1d{RUN}\x1e.res",
    "nel_line_para_sep": f"a\x85{RUN}\u2028{RUN}\u2029.res",
    "braces": "{name}{spec!r}{0}}{{.res",
    "dot_escapes": "\\N\\G\\l<b>&amp;.res",
    "unicode": "réseau γ.res",
}
# what a spec's text can name: a STRING token holds no '"' and no line feed
IN_TEXT = [k for k, v in HOSTILE.items() if '"' not in v and "\n" not in v]
CASES = [(k, "file") for k in HOSTILE] + [(k, p) for k in IN_TEXT for p in ("extends", "include")]
NON_UTF8 = b"bad\xff\xfe\x80name.res"


def write(name: str | bytes, text: str) -> None:
    """Create a file by name; on Linux names are bytes (os.fsencode), so skip where the filesystem refuses one."""
    try:
        fd = os.open(name if isinstance(name, bytes) else os.fsencode(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError as exc:
        pytest.skip(f"the filesystem refuses the name {name!r}: {exc}")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def make_spec(name: str, placement: str) -> str:
    """Write the case into the current folder; returns the spec path to compile."""
    if placement == "file":
        write(name, BASE)
        return name
    if placement == "extends":
        write(name, BASE)
        write("child.res", f'extends "{name}"\nnetwork child\n')
    else:
        write(name, RECIPES)
        write("child.res", BASE.replace(f'"{ROOT / "specs" / "recipes.res"}"', f'"{name}"'))
    return "child.res"


def invoke(*args: str):
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, (r.exit_code, r.output)  # never 70 (an internal error): every case here is valid
    return r


def execute(path: Path) -> None:
    """Compile and run an emitted file as a module (not as __main__), as `import` would; no payload may run."""
    source = path.read_bytes()
    source.decode("ascii")  # pure ASCII: no line separator Python or an editor could see
    code = compile(source, str(path), "exec")
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    try:
        exec(code, {"__name__": "emitted", "__file__": str(path)})  # noqa: S102 - the point of the test
    finally:
        sys.path[:] = saved_path
        for mod in set(sys.modules) - saved_modules:  # the trainer's `model` and `resdsl_train` stay per case
            del sys.modules[mod]
    assert not Path(MARK).exists(), f"{path} ran the payload"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("key,placement", CASES, ids=[f"{k}-{p}" for k, p in CASES])
def test_hostile_name(key, placement, in_tmp):
    name = HOSTILE[key]
    spec = make_spec(name, placement)
    shown = py_text(os.path.normpath(name))  # how the location reads in emitted code
    invoke("compile", spec, "--emit-python", "m.py", "--emit-trainer", "tr")
    for path in (in_tmp / "m.py", in_tmp / "tr" / "model.py", in_tmp / "tr" / "train.py"):
        execute(path)
    if placement != "include":  # the recipe file's name is no part of the model
        assert shown in (in_tmp / "m.py").read_text()
    if placement == "file":
        assert f"SPEC = {py_str(name)}" in (in_tmp / "m.py").read_text()
        assert py_str(name) in (in_tmp / "tr" / "train.py").read_text()
    model = resdsl.build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == 269722 and not Path(MARK).exists()
    for view in ("overview", "unit"):
        invoke("viz", spec, "--view", view, "--format", "dot", "-o", f"{view}.dot")
        dot = (in_tmp / f"{view}.dot").read_text(encoding="utf-8")
        assert all(line.isprintable() for line in dot.splitlines())  # one DOT statement per line


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz program not installed")
@pytest.mark.parametrize("key", ["dot_escapes", "nel_line_para_sep", "triple_double"])
def test_hostile_name_renders(key, in_tmp):
    """A real graphviz run on the unit view, whose captions hold the file name."""
    spec = make_spec(HOSTILE[key], "file")
    invoke("viz", spec, "--view", "unit", "-o", "u.svg")
    svg = (in_tmp / "u.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "cluster" in svg


@pytest.mark.parametrize("key", ["carriage_return", "nel_line_para_sep"])
def test_hostile_name_onnx(key, in_tmp):
    pytest.importorskip("onnx")
    spec = make_spec(HOSTILE[key], "extends")
    invoke("compile", spec, "--onnx", "m.onnx")
    assert (in_tmp / "m.onnx").stat().st_size > 100_000 and not Path(MARK).exists()


def test_non_utf8_file_name(in_tmp):
    """Undecodable bytes (surrogate escapes after os.fsdecode) in the spec's name: every backend works and the
    emitted files carry the name as escapes."""
    write(NON_UTF8, BASE)
    spec = os.fsdecode(NON_UTF8)
    # --json: the summary table prints the name raw, which a strict UTF-8 stdout cannot take (cli/main.py's)
    invoke("compile", spec, "--emit-python", "m.py", "--emit-trainer", "tr", "--json")
    for path in (in_tmp / "m.py", in_tmp / "tr" / "model.py", in_tmp / "tr" / "train.py"):
        execute(path)
    assert "\\udcff\\udcfe\\udc80name.res" in (in_tmp / "m.py").read_text()
    for view in ("overview", "unit"):
        invoke("viz", spec, "--view", view, "--format", "dot", "-o", f"{view}.dot")
    assert "\\\\udcff" in (in_tmp / "unit.dot").read_text()
    resdsl.build_model(spec)


def test_escaping_contract():
    """py_text/py_str/py_doc: printable ASCII, no line break, round trip through Python; py_ident: an identifier."""
    values = [*HOSTILE.values(), os.fsdecode(NON_UTF8), "\x00\x7f\t", "\\", "'", '"', '"""', "\\'"]
    for value in values:
        lit = py_str(value)
        assert lit.isascii() and lit.isprintable() and '"""' not in py_text(value)
        assert eval(lit) == value  # noqa: S307 - our own literal
        assert eval(f'"""{py_text(value)}"""') == value  # noqa: S307 - safe inside a docstring too
        assert eval(f'"""{py_doc(value)}"""') == py_text(value)  # noqa: S307 - a docstring's value is ASCII
        assert ast.parse(f"# {py_text(value)}\n").body == []  # a comment stays one comment
        ident = py_ident(value)
        assert ident.isidentifier() and ident.isascii()
    assert py_ident("class") == "_class" and py_ident("3net") == "_3net" and py_ident("") == "model"


# ---- a failed --emit-trainer leaves nothing half-written and never deletes what was there ------------------------


def disk_full_after(monkeypatch, calls: int) -> None:
    """Make the trainer's writes fail with ENOSPC after ``calls`` files."""
    real, count = os.fsync, [0]

    def fsync(fd):
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_trainer_failure_leaves_no_folder(in_tmp, monkeypatch):
    write("net.res", BASE)
    disk_full_after(monkeypatch, 5)
    r = CliRunner().invoke(main, ["compile", "net.res", "--emit-trainer", "new/parent/tr"])
    assert r.exit_code == 1 and "No space left on device" in r.stderr, r.output
    assert sorted(os.listdir(in_tmp)) == ["net.res"]  # neither the folder, its new parents nor a temporary one


def test_trainer_into_existing_folder_keeps_its_files(in_tmp, monkeypatch):
    write("net.res", BASE)
    (in_tmp / "tr").mkdir()
    (in_tmp / "tr" / "notes.txt").write_text("mine")
    (in_tmp / "tr" / "model.py").write_text("OLD")
    with monkeypatch.context() as m:
        disk_full_after(m, 5)
        r = CliRunner().invoke(main, ["compile", "net.res", "--emit-trainer", "tr", "--overwrite"])
        assert r.exit_code == 1, r.output
    assert sorted(os.listdir(in_tmp / "tr")) == ["model.py", "notes.txt"]  # untouched, no temporary left
    assert (in_tmp / "tr" / "model.py").read_text() == "OLD"
    invoke("compile", "net.res", "--emit-trainer", "tr", "--overwrite")  # model.py is not resdsl's: --overwrite
    assert (in_tmp / "tr" / "notes.txt").read_text() == "mine"
    assert {"model.py", "train.py", "recipe.json", "spec.json", "resdsl_train", "notes.txt", "resdsl-trainer.json"} == \
        set(os.listdir(in_tmp / "tr"))
    execute(in_tmp / "tr" / "model.py")


@pytest.mark.parametrize("in_the_way", ["tr/model.py/", "tr/resdsl_train", "tr"])
def test_trainer_refuses_what_is_in_the_way(in_tmp, in_the_way):
    """A folder where a file goes (or a file where a folder goes) is refused before anything is written."""
    write("net.res", BASE)
    (in_tmp / "tr").mkdir(exist_ok=in_the_way == "tr")
    if in_the_way.endswith("/"):
        (in_tmp / in_the_way).mkdir()
    elif in_the_way == "tr/resdsl_train":
        (in_tmp / in_the_way).write_text("a file")
    else:
        (in_tmp / "tr").rmdir()
        (in_tmp / "tr").write_text("a file")
    before = sorted(p.name for p in in_tmp.rglob("*"))
    r = CliRunner().invoke(main, ["compile", "net.res", "--emit-trainer", "tr"])
    if in_the_way == "tr":  # click itself refuses a file for a folder option (a usage error)
        assert r.exit_code == 2, r.output
        with pytest.raises(NotADirectoryError):
            emit_trainer(resdsl.compile_spec("net.res"), "tr")
    else:
        assert r.exit_code == 1 and "cannot write tr" in r.stderr, r.output
    assert sorted(p.name for p in in_tmp.rglob("*")) == before


def test_names_in_messages_are_escaped(in_tmp):
    """A line break or a terminal's escape sequence in a name on the command line is shown escaped in what resdsl
    says of it (a wrote line, an error), never written raw to the terminal."""
    write("r20.res", BASE)
    r = invoke("compile", "r20.res", "--emit-python", "q\nb\x1b[31m.py")
    assert "wrote q\\nb\\x1b[31m.py\n" in r.output, r.output
    r = CliRunner().invoke(main, ["compile", "r20.res", "--emit-python", "nodir\n/x.py"])
    assert r.exit_code == 1 and "cannot write nodir\\n/x.py: " in r.output, r.output
    r = CliRunner().invoke(main, ["eval", "r20.res", "--checkpoint", "q\x1b[31m.pt", "--data", "synthetic"])
    assert r.exit_code == 1 and "no checkpoint at q\\x1b[31m.pt" in r.output, r.output
