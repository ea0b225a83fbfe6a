"""`resdsl viz`: the DOT drawn from the IR (nodes, edges, labels, collapsed repeats, limits) and real rendering
through graphviz, whose warnings come back; its words (line styles, captions, legends) are test_viz_words'."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

import resdsl
from resdsl import units
from resdsl.backends import graphviz as gv
from resdsl_cli.main import main

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz program not installed")


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_overview_collapses_repeats_and_marks_projections(at_root):
    dot = gv.overview_dot(resdsl.compile_spec("specs/resnet1001_preact.res"))
    assert "[1x1, 16; 3x3, 16; 1x1, 64] x 110" in dot
    assert "[1x1, 32; 3x3, 32; 1x1, 128]\\n/2 (downsampling)" in dot
    assert dot.count("[style=dashed, label=\"1x1 projection\"]") == 3
    assert dot.count("[style=solid, label=\"identity x 110\"]") == 3
    assert "10,327,706 params" in dot and "1001 layers" in dot
    assert len(dot.splitlines()) < 80  # as small as ResNet-20's drawing
    small = gv.overview_dot(resdsl.compile_spec("specs/resnet20.res"))
    assert abs(len(small.splitlines()) - len(dot.splitlines())) <= 10
    assert "zero-pad (A)" in small and "[3x3, 32; 3x3, 32] x 2" in small


def test_the_overview_names_each_stages_order(at_root):
    """[I] Fig. 4's five nets differ only in their order: the overview says it per stage (a plain net has none)."""
    orders = ["", "_bn_after_add", "_relu_before_add", "_relu_preact", "_preact"]
    captions = {gv.overview_dot(resdsl.compile_spec(f"specs/resnet110{o}.res")).split('label="layer1: ')[1]
                .split(", out")[0] for o in orders}
    assert len(captions) == 5 and "18 basic units, full pre-activation ([I] Fig. 4e)" in captions


def test_overview_of_plain_net_has_no_shortcuts(at_root):
    dot = gv.overview_dot(resdsl.compile_spec("specs/plain34.res"))
    assert "identity" not in dot.split("cluster_legend")[0] and "+" not in dot.split("cluster_legend")[0]
    assert "stem: 7x7 conv, 64, /2, BN, ReLU, 3x3 max pool, /2" in dot


def test_unit_view_shows_every_op_in_order(at_root):
    net = resdsl.compile_spec("specs/resnet110_preact.res")
    assert [(name, len(records)) for name, records in units.distinct(net.graph)] == [
        ("PreactBasicUnitPreactShared", 1), ("PreactBasicUnit", 51), ("PreactBasicUnitZeroPad", 2)]
    dot = gv.unit_dot([(net, "resnet110_preact")], typical_only=False)
    assert dot.count("subgraph cluster_s0u") == 3
    assert "zero-pad to 32, /2" in dot
    assert "(e) full pre-activation; identity shortcut\\nbasic [3x3, 16; 3x3, 16] x 17 (layer1)\\n" in dot


def test_fig4_side_by_side(at_root):
    orders = ["", "_bn_after_add", "_relu_before_add", "_relu_preact", "_preact"]
    paths = [f"specs/resnet110{o}.res" for o in orders]
    r = run("viz", *paths, "--view", "unit", "--format", "dot", "-o", "-")
    assert r.exit_code == 0, r.output
    dot = r.stdout
    assert dot.count("subgraph cluster_s") == 5
    for o in orders:
        assert f"resnet110{o}\\n" in dot
    # the labels of cluster 4 (full pre-activation) in order: BN, ReLU, conv, BN, ReLU, conv, +
    cluster = dot.split("subgraph cluster_s4u0")[1].split("}")[0]
    labels = [line.split('label="')[1].split('"')[0] for line in cluster.splitlines() if "[label=" in line]
    assert labels[1:8] == ["BN", "ReLU", "3x3 conv, 16", "BN", "ReLU", "3x3 conv, 16", "+"]


def test_gates_and_scales_in_unit_view(at_root):
    dot = gv.unit_dot([(resdsl.compile_spec("specs/resnet110_exclusive_gate.res"), "g")], typical_only=True)
    assert "gate: 1x1 conv, 16 + bias (-6)" in dot and "g·F + (1-g)·h" in dot and "sigmoid g(x)" in dot


def test_full_view_has_shapes_on_edges_and_refuses_big_nets(at_root):
    dot = gv.full_dot(resdsl.compile_spec("specs/resnet20.res"))
    assert '[label="32x16x16"]' in dot and '[label="16x32x32", style=solid]' in dot
    r = run("viz", "specs/resnet1001_preact.res", "--view", "full", "--format", "dot", "-o", "-")
    assert r.exit_code == 1 and "use --view overview" in r.stderr.lower()
    with pytest.raises(ValueError, match="view='overview' or view='unit' draws it"):  # the API's words, not the CLI's
        resdsl.draw("resnet1001_preact", view="full")


def test_usage_errors(at_root, tmp_path):
    assert run("viz", "specs/resnet20.res", "specs/resnet32.res").exit_code == 2
    assert run("viz", "specs/resnet20.res", "-o", str(tmp_path / "x.bmp")).exit_code == 2
    r = run("viz", "specs/nope.res")
    assert r.exit_code == 1 and "specs/nope.res:1:1: error:" in r.stderr
    r = run("viz", "specs/resnet20.res", "--all-units", "-o", str(tmp_path / "x.svg"))  # was ignored
    assert r.exit_code == 2 and "--all-units goes with several specs and --view unit" in r.output
    closed = subprocess.run([sys.executable, "-m", "resdsl_cli.main", "viz", "resnet20", "-o", "-", "--format", "dot"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.close(1))  # no standard output: it was an internal error
    assert closed.returncode == 2 and "this command has none (it was closed)" in closed.stderr, closed.stderr


def test_missing_graphviz_program(at_root, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    r = run("viz", "specs/resnet20.res", "-o", str(tmp_path / "x.svg"))
    assert r.exit_code == 1 and "apt-get install graphviz" in r.stderr
    r = run("viz", "specs/resnet20.res", "-o", str(tmp_path / "x.dot"))
    assert r.exit_code == 0 and (tmp_path / "x.dot").read_text().startswith("digraph")


@needs_dot
@pytest.mark.parametrize("view", ["overview", "unit", "full"])
def test_renders_valid_svg_and_png(at_root, tmp_path, view):
    svg, png = tmp_path / "a.svg", tmp_path / "a.png"
    assert run("viz", "specs/resnet20.res", "--view", view, "-o", str(svg)).exit_code == 0
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}g")) > 5
    assert run("viz", "specs/resnet20.res", "--view", view, "-o", str(png)).exit_code == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@needs_dot
def test_pdf(at_root, tmp_path):
    out = tmp_path / "a.pdf"
    assert run("viz", "specs/resnet50.res", "-o", str(out)).exit_code == 0
    assert out.read_bytes().startswith(b"%PDF")


def _no_graphviz_run(monkeypatch):
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError("graphviz was started")

    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.mark.parametrize("view", ["overview", "unit", "full"])
def test_every_view_is_capped_before_graphviz_runs(at_root, tmp_path, monkeypatch, view):
    monkeypatch.setenv("RESDSL_VIZ_MAX_NODES", "10")
    _no_graphviz_run(monkeypatch)
    r = run("viz", "specs/resnet20.res", "--view", view, "-o", str(tmp_path / "x.svg"))
    assert r.exit_code == 1 and "RESDSL_VIZ_MAX_NODES" in r.stderr and "10 nodes" in r.stderr, r.output
    assert not (tmp_path / "x.svg").exists()
    r = run("viz", "specs/resnet20.res", "--view", view, "-o", str(tmp_path / "x.dot"))  # no layout, no cap
    assert r.exit_code == 0, r.output


def test_huge_overview_is_refused_quickly(tmp_path, monkeypatch):
    """1,100 stages draw as 2,200+ nodes: over the default cap, refused without starting graphviz."""
    _no_graphviz_run(monkeypatch)
    spec = tmp_path / "long.res"
    spec.write_text("network long\ninput 3x32x32\nstem cifar 16\nunit basic\nshortcut A\n"
                    f"stages {', '.join(['16x1'] * 1100)}\nhead avgpool fc 10\n")
    r = run("viz", str(spec), "-o", str(tmp_path / "x.svg"))
    assert r.exit_code == 1 and f"{gv.MAX_RENDER_NODES:,} nodes" in r.stderr, r.output
    nodes, edges = gv.dot_size(gv.overview_dot(resdsl.compile_spec(spec)))
    assert nodes > 2200 and edges > 3300


def test_bad_limit_value_is_a_clear_error(at_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RESDSL_VIZ_MAX_NODES", "lots")
    r = run("viz", "specs/resnet20.res", "-o", str(tmp_path / "x.svg"))
    assert r.exit_code == 1 and "RESDSL_VIZ_MAX_NODES='lots' is not a limit" in r.stderr, r.output


@needs_dot
def test_graphviz_timeout_is_a_clear_error(at_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RESDSL_VIZ_TIMEOUT", "0.000001")
    r = run("viz", "specs/resnet1001_preact.res", "--view", "unit", "-o", str(tmp_path / "x.svg"))
    assert r.exit_code == 1 and "did not finish" in r.stderr and "RESDSL_VIZ_TIMEOUT" in r.stderr, r.output


def test_captions_with_hostile_names_stay_one_dot_line(at_root):
    net = resdsl.compile_spec("specs/resnet20.res")
    dot = gv.unit_dot([(net, 'a\nb\r"c\\N\u2028\udcff')], typical_only=True)
    assert all(line.isprintable() for line in dot.splitlines())
    assert 'a\\\\nb\\\\r\\"c\\\\N\\\\u2028\\\\udcff\\n' in dot  # a line break in a name is drawn, not made


@needs_dot
def test_a_file_name_is_drawn_verbatim(at_root, tmp_path):
    """A file name cannot add caption lines (a line break in it is drawn as \\n) nor have graphviz read an HTML
    entity in it ("&#60;" drawn as those five characters, not as "<")."""
    names = ["resnet110\nFig. 4(e) full pre-activation", "lt&#60;x&amp;y"]
    for name in names:
        (tmp_path / f"{name}.res").write_text('extends "resnet110"\n')
    r = run("viz", *(str(tmp_path / f"{n}.res") for n in names), "--view", "unit", "-o", str(tmp_path / "u.svg"))
    assert r.exit_code == 0, r.output
    texts = [t.text for t in ET.parse(tmp_path / "u.svg").iter("{http://www.w3.org/2000/svg}text")]
    assert "resnet110\\nFig. 4(e) full pre-activation" in texts and "lt&#60;x&amp;y" in texts
    assert not any(t.startswith("Fig. 4(e)") for t in texts)


def test_graphviz_warnings_are_read_from_its_stderr():
    stderr = b"Warning: using box for unknown shape x\nWarning: using box for unknown shape x\n" \
             b"dot: graph is too large for cairo-renderer bitmaps. Scaling by 0.5 to fit\n\nodd \x1b byte\n"
    warnings = gv.graphviz_warnings(stderr)
    assert warnings[0] == "graphviz: using box for unknown shape x" and len(warnings) == 3
    assert warnings[1].startswith("graphviz: graph is too large for cairo-renderer bitmaps. Scaling by 0.5 to fit (")
    assert "--format svg" in warnings[1] and warnings[2] == "graphviz: odd \\x1b byte"


@needs_dot
def test_render_returns_graphviz_warnings(at_root):
    """graphviz shrinks a bitmap taller than its cairo limit and says so only on stderr: the words come back."""
    data, warnings = gv.render_with_warnings("digraph { graph [ranksep=1000]; a -> b; }", "png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(warnings) == 1 and "too large for cairo-renderer bitmaps. Scaling by" in warnings[0]
    assert gv.render_with_warnings('digraph { a [shape=nosuch]; }', "svg")[1] == [
        "graphviz: using box for unknown shape nosuch"]
    assert gv.render("digraph { graph [ranksep=1000]; a -> b; }", "png")[:8] == data[:8]  # bytes, as before
    net = resdsl.compile_spec("specs/resnet110_exclusive_gate.res")
    for dot in (gv.overview_dot(net), gv.unit_dot([(net, "g")], typical_only=False)):
        assert gv.render_with_warnings(dot, "svg")[1] == []  # the drawings themselves make graphviz say nothing


def test_cli_prints_graphviz_warnings(at_root, tmp_path, monkeypatch):
    monkeypatch.setattr(gv, "render_with_warnings", lambda dot, fmt: (b"PNG", ["graphviz: scaled"]))
    r = run("viz", "specs/resnet20.res", "-o", str(tmp_path / "x.png"))
    assert r.exit_code == 0 and "resdsl: warning: graphviz: scaled" in r.stderr
    assert (tmp_path / "x.png").read_bytes() == b"PNG"


def test_a_format_that_contradicts_the_file_name_is_refused(tmp_path, at_root):
    """`-o x.png --format svg` would write SVG into a .png file; an unknown extension takes --format as asked."""
    r = run("viz", "specs/resnet20.res", "-o", str(tmp_path / "x.png"), "--format", "svg")
    assert r.exit_code == 2 and "names a .png file but --format is svg" in r.output
    assert not (tmp_path / "x.png").exists()
    r = run("viz", "specs/resnet20.res", "-o", str(tmp_path / "x.gv"), "--format", "dot")
    assert r.exit_code == 0 and (tmp_path / "x.gv").read_text().startswith("digraph")


@needs_dot
def test_draw_gives_a_notebook_diagram():
    """resdsl.draw: the drawing `resdsl viz` makes, as a graphviz.Source that a notebook shows as SVG."""
    pytest.importorskip("graphviz")
    net = resdsl.compile_spec("resnet20")
    drawn = resdsl.draw(net)
    assert drawn.source == gv.overview_dot(net)
    assert "<svg" in drawn._repr_image_svg_xml()  # what Jupyter calls to show it
    assert resdsl.draw("resnet110_preact", view="unit").source.startswith("digraph")
    with pytest.raises(ValueError, match="not one of overview, full, unit"):
        resdsl.draw(net, view="units")
