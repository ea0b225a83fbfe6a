"""Hypothesis mutates the real specs; whatever comes out is a checked network or a located SpecError, never a crash.

Every spec under specs/ (torchvision/, timm/ and family/ included) is mutated (characters, spec words, random bytes,
lines, numbers) and written beside the originals in a per-module copy of specs/, so its `extends`/`include` lines
still resolve.
Budget: well under a minute on a 2-core machine (see the max_examples below).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import resdsl
from resdsl_cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SPEC_ROOT = ROOT / "specs"
SPECS = sorted(p.relative_to(SPEC_ROOT).as_posix() for p in SPEC_ROOT.rglob("*.res"))
LOCATED = re.compile(r"^.+:\d+:\d+: error: .+$")
FUZZ_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SPEC_CHARS = "abcxyzABC0123456789 \t\n#,:/x~.-_{}\"%"
ODD_CHARS = "\x00\x0b\x0c\r\x85\u2028\u00e9\ufeff\U0001f600"
WORDS = ["network", "input", "stem", "unit", "basic", "bottleneck", "order", "preact", "shortcut", "A", "B", "C",
         "none", "identity", "stages", "stage 1:", "stage 2:", "head avgpool fc", "init he", "expect", "params",
         "output", "~", "recipe", "extends", "include", '"recipes.res"', '"resnet20.res"', '"torchvision"', "{",
         "}", "lr", "batch", "length", "epochs", "scale", "gate exclusive bias", "dropout", "projection-bn",
         "/2", "/0", "0x0", "3x32", "3x32x32", "64x8x8", "21.8M", ",", ",,", "yes", "no",
         # the family's words (issue 13)
         "cardinality", "base-width", "width-factor", "se", "divisor", "at pre", "at post", "avg-down", "deep",
         "conv 3x3", "drop-path", "from-zero", "per-batch", "layer-count wrn", "final-activation", "first-shortcut raw"]
PIECE = st.one_of(st.text(SPEC_CHARS, min_size=1, max_size=6), st.sampled_from(WORDS),
                  st.text(ODD_CHARS, min_size=1, max_size=2))
# Mostly small numbers (large unit counts only make examples slow: resdsl builds up to 5000 units), plus the
# edges: 0, negatives, past every range, past 64 bits, past Python's 4300-digit int/str limit, and things
# that are not integers at all.
NUMBER = st.one_of(st.integers(-3, 70).map(str),
                   st.sampled_from(["0", "1", "64", "65536", "65537", "5001", "99999999999999999999",
                                    "-99999999999999999999", str(2 ** 64), "9" * 150, "9" * 5000, "0.5", ".5", "-0",
                                    "1e999", "1e-400", "2x2", "3x3x3", "1_000", "nan"]))
POS = st.integers(min_value=0, max_value=100_000)
OP = st.one_of(
    st.tuples(st.just("delete"), POS, st.integers(1, 12)),
    st.tuples(st.just("insert"), POS, PIECE),
    st.tuples(st.just("replace"), POS, PIECE),
    st.tuples(st.just("drop_line"), POS),
    st.tuples(st.just("dup_line"), POS),
    st.tuples(st.just("swap_lines"), POS, POS),
    st.tuples(st.just("number"), POS, NUMBER),
)
OPS = st.lists(OP, min_size=1, max_size=5)
JUNK = st.one_of(st.just(b""), st.binary(min_size=1, max_size=12))


def mutate(text: str, ops) -> str:
    for op in ops:
        kind, pos = op[0], op[1]
        if not text:
            text = op[2] if kind in ("insert", "replace") else "network x\n"
            continue
        i = pos % (len(text) + 1)
        lines = text.split("\n")
        j = pos % len(lines)
        if kind == "delete":
            text = text[:i] + text[i + op[2]:]
        elif kind == "insert":
            text = text[:i] + op[2] + text[i:]
        elif kind == "replace":
            text = text[:i] + op[2] + text[i + len(op[2]):]
        elif kind == "drop_line":
            text = "\n".join(lines[:j] + lines[j + 1:])
        elif kind == "dup_line":
            text = "\n".join(lines[:j + 1] + lines[j:])
        elif kind == "swap_lines":
            k = op[2] % len(lines)
            lines[j], lines[k] = lines[k], lines[j]
            text = "\n".join(lines)
        elif kind == "number":
            numbers = list(re.finditer(r"\d+", text))
            if numbers:
                m = numbers[pos % len(numbers)]
                text = text[:m.start()] + op[2] + text[m.end():]
    return text


def splice(data: bytes, pos: int, junk: bytes) -> bytes:
    i = pos % (len(data) + 1)
    return data[:i] + junk + data[i:]


@pytest.fixture(scope="module")
def spec_copy(tmp_path_factory) -> Path:
    """One copy of specs/ per test module; mutants are written beside the originals so includes resolve."""
    folder = tmp_path_factory.mktemp("fuzz") / "specs"
    shutil.copytree(SPEC_ROOT, folder)
    return folder


def write_mutant(spec_copy: Path, spec: str, ops, junk: bytes, junk_pos: int, prefix: str) -> tuple[Path, bytes]:
    original = (SPEC_ROOT / spec).read_text(encoding="utf-8")
    data = splice(mutate(original, ops).encode("utf-8"), junk_pos, junk)
    target = spec_copy / Path(spec).parent / f"{prefix}{Path(spec).name}"
    target.write_bytes(data)
    return target, data


def outcome(**kwargs):
    """('ok', params) or ('error', rendered first line, span); anything but SpecError propagates and fails."""
    try:
        net = resdsl.compile_spec(**kwargs)
    except resdsl.SpecError as err:
        first = err.render().splitlines()[0]
        assert LOCATED.match(first), first
        assert err.span is not None and Path(err.span.path).is_file(), err.span
        n_lines = Path(err.span.path).read_bytes().count(b"\n") + 1
        assert 1 <= err.span.line <= n_lines and err.span.column >= 1, (err.span, n_lines)
        return "error", first, err.span
    return "ok", net.params, net.macs


@settings(max_examples=500, **FUZZ_SETTINGS)
@given(spec=st.sampled_from(SPECS), ops=OPS, junk=JUNK, junk_pos=POS)
def test_mutated_specs_compile_or_fail_located(spec_copy, spec, ops, junk, junk_pos):
    target, data = write_mutant(spec_copy, spec, ops, junk, junk_pos, "_fuzz_")
    by_path = outcome(path=str(target))
    event(f"outcome: {by_path[0]}")
    try:
        text = data.decode("utf-8-sig")  # a file's leading byte order mark is not part of its text
    except UnicodeDecodeError:
        assert by_path[0] == "error" and "not UTF-8" in by_path[1], by_path
        return
    # the text API, named as the file, resolves includes the same way and must reach the same verdict
    assert outcome(text=text, name=str(target)) == by_path


@settings(max_examples=100, **FUZZ_SETTINGS)
@given(spec=st.sampled_from(SPECS), ops=OPS, junk=JUNK, junk_pos=POS)
def test_cli_on_mutants_exits_0_or_1(spec_copy, spec, ops, junk, junk_pos):
    target, _ = write_mutant(spec_copy, spec, ops, junk, junk_pos, "_cli_fuzz_")
    r = CliRunner().invoke(main, ["compile", str(target), "--json"])
    assert r.exit_code in (0, 1), (r.exit_code, r.output)
    event(f"exit code: {r.exit_code}")
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    if r.stdout:
        json.loads(r.stdout)  # compiled: the --json report is whole, even when an expect line fails
    if r.exit_code == 1:
        first = r.stderr.splitlines()[0]
        assert LOCATED.match(first), first
    else:
        assert r.stderr == "", r.stderr
