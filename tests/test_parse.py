"""Parser: text to AST with spans; syntax errors name the word, the place and what was expected."""
from __future__ import annotations

import pytest

import resdsl
from conftest import CIFAR20
from resdsl import syntax as ast
from resdsl.errors import SpecError
from resdsl.parse import parse_text


def test_statements_and_spans():
    f = parse_text("# c\nnetwork n   # trailing comment\n\nstages 64x3, 128x4 /2\n", "x.res")
    net, stages = f.statements
    assert isinstance(net, ast.Network) and net.name == "n"
    assert (net.span.path, net.span.line, net.span.column) == ("x.res", 2, 1)
    e = stages.entries[1]
    assert (e.width.value, e.units.value, e.stride.value) == (128, 4, 2)
    assert (e.span.line, e.span.column) == (4, 14)


def test_shortcut_options_and_gate():
    (sc,) = parse_text("shortcut A scale 0.5 residual 0.5 gate exclusive bias -6 dropout 0.1\n").statements
    assert sc.kind == "A" and sc.scale.value == 0.5 and sc.residual_scale.value == 0.5
    assert sc.gate.kind == "exclusive" and sc.gate.bias.value == -6 and sc.dropout.value == 0.1


def test_bottleneck_options_and_stage_override():
    unit, over = parse_text("unit bottleneck expansion 2 stride-at 3x3\nstage 2: order preact\n").statements
    assert unit.kind == "bottleneck" and unit.expansion.value == 2 and unit.stride_at.value == "3x3"
    assert over.index.value == 2 and isinstance(over.statement, ast.Order) and over.statement.name == "preact"


def test_stem_kinds():
    a, b, c, d, e = parse_text("stem imagenet\nstem cifar 16\nstem conv 5x5 /2 32 pool max 3x3 /2\n"
                               "stem deep width 128\nstem conv 3x3 /2 24, conv 3x3 32, conv 3x3 64\n").statements
    assert (a.kind, a.width.value) == ("imagenet", 64)
    assert (b.kind, b.width.value) == ("cifar", 16)
    (conv,) = c.convs
    assert conv.kernel.value == (5, 5) and conv.stride.value == 2 and conv.width.value == 32 and c.width.value == 32
    assert c.pool.kind == "max" and c.pool.stride.value == 2
    assert (d.kind, d.width.value, d.convs) == ("deep", 128, ())
    assert [(x.stride.value, x.width.value) for x in e.convs] == [(2, 24), (1, 32), (1, 64)]
    assert e.width.value == 64 and e.pool is None


def test_recipe_block():
    (r,) = parse_text("recipe x extends y {\n  lr 0.1\n  schedule step 10, 20 gamma 0.2\n"
                      "  warmup 5 lr 0.01 until-error 80%\n  augment pad-crop 4, flip\n}\n").statements
    fields = {f.key: f.value for f in r.fields}
    assert r.name == "x" and r.base.value == "y"
    assert fields["schedule"] == {"kind": "step", "milestones": [10, 20], "gamma": 0.2}
    assert fields["warmup"]["until_error"] == 80.0
    assert fields["augment"] == [{"kind": "pad-crop", "padding": 4}, {"kind": "flip"}]


def test_expect_items():
    (e,) = parse_text("expect params 21.8M, macs ~3.6G, output 64x8x8\n").statements
    assert [(i.what, i.text, i.approx) for i in e.items] == [
        ("params", "21.8M", False), ("macs", "3.6G", True), ("output", "64x8x8", False)]


def _err(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_text(text, "s.res")
    return info.value


def test_unknown_statement_suggests():
    err = _err("network n\nstagez 64x3\n")
    assert err.render().splitlines()[0] == "s.res:2:1: error: unknown statement 'stagez'"
    assert "did you mean 'stage" in err.hint


def test_statements_the_language_does_not_have_say_what_it_builds():
    err = _err("network n\nnorm group 32\n")
    assert err.message == "unknown statement 'norm'" and err.hint.startswith("resdsl builds BatchNorm only")


def test_hints_quote_punctuation_and_suggest_a_word_in_another_case():
    assert _err("expect params 0.27M layers 20\n").hint == "expected one of: ',', end of file, end of line"
    assert _err("shortcut a\n").hint.startswith("did you mean 'A'? expected one of: A, B, C")
    assert _err("order Post\n").hint.startswith("did you mean 'post'?")


@pytest.mark.parametrize("line, says", [
    ("unit basic width-factor 10", "'width-factor' is an option of 'unit bottleneck'; a basic unit's width is its "
                                   "stage's width in 'stages', a Wide ResNet's too (WRN-28-10: 'stages 160x4,"),
    ("stage 2: unit single cardinality 4", "'cardinality' is an option of 'unit bottleneck'; expected one of:"),
    ("unit basic se 4 expansion 2", "'expansion' is an option of 'unit bottleneck'; expected one of: at,"),
])
def test_a_bottleneck_option_on_another_unit_says_whose_it_is(line, says):
    assert _err(f"network n\n{line}\n").hint.startswith(says)


@pytest.mark.parametrize("line, says", [
    ("stages 16×3, 32x3 /2", "write 'x' for '×' (U+00D7); expected a pair"),
    ("expect params 0,27M", "',' separates items: a decimal point is '.' (0.27M); expected one of:"),
    ("expect params 21,797,672, layers 34", "',' separates items: write 21797672, without thousands separators;"),
])
def test_what_a_line_copied_from_a_paper_holds_is_named(line, says):
    assert _err(f"network n\n{line}\n").hint.startswith(says)


@pytest.mark.parametrize("line", ["unit basic sse 4  # 16×3 in the paper", "expect params 269722, 20"])
def test_a_comment_or_a_list_is_not_taken_for_what_a_paper_holds(line):
    hint = _err(f"network n\n{line}\n").hint
    assert "U+00D7" not in hint and "decimal point" not in hint, hint


def test_unknown_order_lists_choices():
    err = _err("order preactivation\n")
    assert (err.span.line, err.span.column) == (1, 7)
    assert "preact" in err.hint and "bn-after-add" in err.hint


def test_caret_under_the_word():
    lines = _err("shortcut D\n").render().splitlines()
    assert lines[0] == "s.res:1:10: error: unexpected 'D'"
    assert lines[1].strip() == "shortcut D" and lines[2] == "    " + " " * 9 + "^"
    assert lines[3].startswith("hint: expected one of: A, B, C")


def test_missing_value_at_end_of_line():
    err = _err("unit bottleneck expansion\n")
    assert err.message == "unexpected end of line" and "integer" in err.hint


def test_unclosed_recipe_is_end_of_file():
    assert _err("recipe a {\n lr 0.1\n").message == "unexpected end of file"


def test_nul_byte_and_huge_number():
    assert "NUL" in _err("network a\x00\n").message
    assert "out of range" in _err("recipe a {\n lr 1e999\n}\n").message


def test_grammar_words_are_the_tables_words():
    """The grammar's words for units, shortcuts and orders are exactly the keys of units.py's tables, and the
    hints name the grammar's words (read from grammar.lark, never restated)."""
    from resdsl.grammar import alternatives, terminal_words
    from resdsl.units import ORDERS, SHORTCUT_KINDS, UNIT_KINDS

    assert sorted(alternatives("unit").values()) == sorted(UNIT_KINDS)
    assert sorted(terminal_words()["SHORTCUT_KIND"]) == sorted(SHORTCUT_KINDS)
    assert sorted(terminal_words()["ORDER"]) == sorted(ORDERS)
    with pytest.raises(SpecError) as e:
        parse_text("network n\norder sideways\n", "s.res")
    assert all(word in e.value.hint for word in ORDERS)


def test_every_shortcut_path_is_built_named_and_drawn():
    """Each path a shortcut kind builds is a PATHS entry, with a class word (every path but the identity) and a
    line style in the drawings: a new path missing from either table failed only in `resdsl viz` (a KeyError)."""
    from resdsl.backends.drawing_words import LINES
    from resdsl.units import PATHS, SHORTCUT_KINDS

    built = {p for k in SHORTCUT_KINDS.values() for p in (k.same, k.changes) if p is not None}
    assert built <= set(PATHS) and set(LINES) == set(PATHS)
    assert all(path.class_word for name, path in PATHS.items() if name != "identity")


def test_every_op_is_drawn_and_emitted():
    """Each op kind's colour group is one the drawings have, and each op the emitter writes has a Python form (a
    module or a call): a new op missing either compiled and counted, then failed when drawn (a KeyError) or
    emitted (an internal error)."""
    from resdsl.backends.graphviz import COLOURS
    from resdsl.ops import OPS

    for op in OPS.values():
        assert op.look is None or op.look[0] in COLOURS, op.kind
        assert op.kind in ("input", "output") or op.module or op.call, op.kind


def test_drop_path_words_in_either_order_each_once():
    """`drop-path P RULE PER` or `drop-path P PER RULE`; a second rule or a second per-word is named where it is
    (it was 'unexpected ...', with no word of what drop-path takes)."""
    for text in ("drop-path 0.5 linear per-batch\n", "drop-path 0.5 per-batch linear\n"):
        dp = next(s for s in parse_text(text, "s.res").statements if isinstance(s, ast.DropPath))
        assert (dp.rate.value, dp.rule, dp.per) == (0.5, "linear", "batch")
    dp = next(s for s in parse_text("drop-path 0.2\n", "s.res").statements if isinstance(s, ast.DropPath))
    assert (dp.rule, dp.per) == ("linear", "sample")  # the defaults: [SD]'s rule, timm's per-sample drop
    err = _err("drop-path 0.5 per-batch per-sample\n")
    assert (err.span.column, err.message) == (25, "drop-path takes one 'per-sample' or 'per-batch'; 'per-batch' "
                                                  "was given already")
    assert _err("drop-path 0.5 linear from-zero\n").message.startswith("drop-path takes one rule (linear")


def test_long_digit_runs_in_names_and_paths_are_not_numbers(tmp_path):
    """Only numbers are held to MAX_DIGITS: a name or a quoted path may hold any run of digits (or a '#')."""
    digits = "1" * 101
    parent = tmp_path / f"v{digits}#.res"
    parent.write_text(CIFAR20, encoding="utf-8")
    net = resdsl.compile_spec(text=f'extends "{parent.as_posix()}"\nnetwork v{digits}\n', name="t.res")
    assert net.name == f"v{digits}" and net.params == 269_722
    for glued in ("fc ", "fc"):  # a keyword glued to its number is two tokens: still a number, still refused
        with pytest.raises(SpecError, match="has 5000 digits"):
            resdsl.compile_spec(text=CIFAR20.replace("fc 10", glued + "1" * 5000), name="t.res")


def test_the_caret_underlines_exactly_the_offending_word():
    """The caret line is as long as the word it points at, under it (a misplaced or longer one misleads)."""
    with pytest.raises(SpecError) as info:
        parse_text(CIFAR20 + "unitt basic\n", "t.res")
    lines = info.value.render().splitlines()
    source = next(i for i, ln in enumerate(lines) if ln.strip() == "unitt basic")
    assert lines[source + 1] == lines[source].replace("unitt basic", "^^^^^").rstrip(), lines


@pytest.mark.parametrize("before,after", [(100, 0), (0, 100), (60, 60)])
def test_the_caret_is_under_the_error_on_a_long_line(before, after):
    """A line too long to show whole is shown as a window around the error (cut ends marked '...'), with the
    caret under the offending word, wherever on the line it is."""
    stages = "stages " + "16x1, " * before + "0x1" + ", 16x1" * after
    with pytest.raises(SpecError) as info:
        resdsl.compile_spec(text=CIFAR20.replace("stages 16x3, 32x3 /2, 64x3 /2", stages), name="t.res")
    lines = info.value.render().splitlines()
    shown, caret = lines[1], lines[2]
    assert len(shown) <= 4 + 200 + 6 and (shown.startswith("    ...") == (before > 30)), shown
    assert shown.endswith("...") == (after > 30), shown
    at = caret.index("^")
    assert shown[at:at + 3] == "0x1" and caret[at:] == "^^^", (shown, caret)


def test_a_file_with_lines_ended_by_cr_alone_says_so():
    """Old Mac line ends (CR alone) make the file one line: the error says why, not only what was unexpected."""
    with pytest.raises(SpecError) as info:
        parse_text(CIFAR20.replace("\n", "\r"), "t.res")
    assert info.value.span.line == 1 and "carriage return (CR) that does not end it" in info.value.hint
    with pytest.raises(SpecError) as info:  # CR LF is a line end, and no CR is named for an error elsewhere
        parse_text(CIFAR20.replace("\n", "\r\n") + "unitt basic\r\n", "t.res")
    assert "carriage return" not in (info.value.hint or "")
