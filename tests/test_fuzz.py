"""Hypothesis mutates the real specs; whatever comes out is a checked network or a located SpecError."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

import resdsl
from resdsl_cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(str(p.relative_to(ROOT / "specs")) for p in (ROOT / "specs").rglob("*.res"))
LOCATED = re.compile(r"^.+:\d+:\d+: error: .+")
ALPHABET = "abcxyzABC0123456789 \t\n#,:/x~.-_{}\"%" + "\x00\xff\u00e9"


@pytest.fixture(scope="module")
def spec_copy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("specs")
    shutil.copytree(ROOT / "specs", folder, dirs_exist_ok=True)
    return folder


def _mutate(text: str, ops) -> str:
    for kind, pos, payload in ops:
        if not text:
            text = payload
            continue
        i = pos % len(text)
        lines = text.split("\n")
        j = pos % len(lines)
        if kind == "delete":
            text = text[:i] + text[i + len(payload) + 1:]
        elif kind == "insert":
            text = text[:i] + payload + text[i:]
        elif kind == "replace":
            text = text[:i] + payload + text[i + len(payload):]
        elif kind == "drop_line":
            text = "\n".join(lines[:j] + lines[j + 1:])
        elif kind == "dup_line":
            text = "\n".join(lines[:j + 1] + lines[j:])
        elif kind == "swap_lines":
            k = (j + 1) % len(lines)
            lines[j], lines[k] = lines[k], lines[j]
            text = "\n".join(lines)
        elif kind == "number":
            text = re.sub(r"\d+", payload, text, count=1 + pos % 3)
    return text


NUMBERS = st.sampled_from(["0", "1", "-1", "3", "7", "99999999999999999999", "65537", "0.5", "1e999", "2x2"])
OPS = st.lists(st.tuples(st.sampled_from(["delete", "insert", "replace", "drop_line", "dup_line", "swap_lines",
                                          "number"]),
                         st.integers(min_value=0, max_value=10_000),
                         st.one_of(st.text(ALPHABET, min_size=1, max_size=6), NUMBERS)),
               min_size=1, max_size=4)


def _check(path: Path) -> None:
    try:
        resdsl.compile_spec(str(path))
    except resdsl.SpecError as err:
        first = err.render().splitlines()[0]
        assert LOCATED.match(first), first


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=st.sampled_from(SPECS), ops=OPS)
def test_mutated_specs_never_crash(spec_copy, spec, ops):
    original = (spec_copy / spec).read_text()
    target = spec_copy / Path(spec).parent / f"mutant_{Path(spec).name}"
    target.write_text(_mutate(original, ops), encoding="utf-8", errors="surrogatepass")
    _check(target)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=st.sampled_from(SPECS), ops=OPS, junk=st.binary(max_size=40))
def test_cli_on_mutants_exits_0_or_1(spec_copy, spec, ops, junk):
    original = (spec_copy / spec).read_text()
    target = spec_copy / Path(spec).parent / f"cli_mutant_{Path(spec).name}"
    target.write_bytes(_mutate(original, ops).encode("utf-8", "surrogatepass") + junk)
    r = CliRunner().invoke(main, ["compile", str(target), "--json"])
    assert r.exit_code in (0, 1), r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    if r.exit_code == 1 and r.stderr:
        assert LOCATED.match(r.stderr.splitlines()[0]) or "does not hold" in r.stderr
