"""Checked IR -> graphviz block diagrams: the stage overview of [R] Fig. 3, the units of [I] Fig. 2 and 4, and
the full layer graph. Produces DOT text; rendering to SVG/PNG/PDF goes through the graphviz program."""
from __future__ import annotations

import re
from collections import OrderedDict

from ..cost import human
from ..errors import env_limit
from ..ir import inputs_of
from .. import units
from ..ops import OPS, PORT_RESIDUAL, PORT_SHORTCUT, shape_text
from .drawing_words import (LINES, VARIANT_LEGEND, drop_path_words, is_shortcut_edge, op_label, shared_words,
                            unit_caption, unit_notation, variant_families, variants)

FONT = "Helvetica"
COLOURS = OrderedDict([
    ("conv", "#cfe2f3"), ("bn", "#fff2cc"), ("relu", "#d9ead3"), ("add", "#ffffff"), ("pool", "#e0e0e0"),
    ("fc", "#f9cb9c"), ("shortcut op", "#e6d0f0"), ("random", "#fce5cd"), ("gate", "#f4cccc"), ("se", "#d0e0e3"),
    ("stage", "#eef3fb"),
])
MAX_FULL_NODES = 600  # readability of --view full
MAX_RENDER_NODES = 2000  # what graphviz is asked to lay out (about 10 s); RESDSL_VIZ_MAX_NODES lifts it
RENDER_TIMEOUT_S = 120  # RESDSL_VIZ_TIMEOUT lifts it


def _op_colour(op: str) -> str:
    """The fill colour of an op's box: its colour group's (the op table's look); input and output are white."""
    look = OPS[op].look
    return COLOURS[look[0]] if look else "#ffffff"


def _q(text: str | list[str]) -> str:
    """A DOT double-quoted label, drawn verbatim: a list is drawn as its lines, and only a list breaks lines.
    Captions hold file names, so within a line every unprintable character (a line break, an undecodable byte) is
    drawn as its Python escape, backslashes stay literal (no \\N, \\G) and so does '&' (graphviz reads "&lt;",
    "&#8238;" as the characters they name)."""
    return '"' + "\\n".join(map(_line, [text] if isinstance(text, str) else text)) + '"'


def _line(text: str) -> str:
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "&":
            out.append("&amp;")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1].replace("\\", "\\\\"))
    return "".join(out)


def _header(title: str, rankdir: str = "TB") -> list[str]:
    return [
        "digraph resdsl {",
        f"  graph [rankdir={rankdir}, fontname={_q(FONT)}, fontsize=14, labelloc=t, label={_q(title)}, "
        "nodesep=0.25, ranksep=0.3];",
        f"  node [fontname={_q(FONT)}, fontsize=11, shape=box, style=\"rounded,filled\", color=\"#555555\"];",
        f"  edge [fontname={_q(FONT)}, fontsize=9, color=\"#444444\"];",
    ]


def _legend_items(ops: set[str], lines: set[str], families: set[str], how: str) -> list[tuple[list[str], str]]:
    """(DOT statements, the node the legend's column is chained through) for each entry the picture needs."""
    items = []
    for k, line in enumerate(LINES[k] for k in LINES if k in lines):
        a, b = f"legend_line{k}", f"legend_line{k}_text"
        items.append(([f"{a} [label=\"\", shape=point, width=0.05];",
                       f"{b} [label={_q(line.legend)}, shape=plaintext, style=\"\", fontsize=9];",
                       f"{{ rank=same; {a}; {b}; }}", f"{a} -> {b} [style={line.style}, minlen=2];"], a))
    if families:
        note = [line.format(", ".join(sorted(families))) for line in VARIANT_LEGEND[how]]
        items.append(([f"legend_variants [label={_q(note)}, shape=plaintext, style=\"\", fontsize=9];"],
                      "legend_variants"))
    colours: OrderedDict[str, list] = OrderedDict((c, []) for c in COLOURS)
    for op in OPS.values():
        if op.kind in ops and op.look:
            colours[op.look[0]].append(op.look[1])
    for k, (colour, words) in enumerate((c, w) for c, w in colours.items() if w):
        items.append(([f"legend_op{k} [label={_q(', '.join(words))}, fillcolor={_q(COLOURS[colour])}, "
                       "fontsize=9];"], f"legend_op{k}"))
    return items


def _legend(ops: set[str], lines: set[str], families: set[str], how: str) -> list[str]:
    """Only what the picture holds, in one column: a sample of each kind of shortcut line present, a note on
    [I] Fig. 2's variants ("ops" or "words": how they are drawn), one box per colour in use naming its ops."""
    items = _legend_items(ops, lines, families, how)
    if not items:
        return []
    out = ["  subgraph cluster_legend {", "    label=\"legend\"; fontsize=10; color=\"#bbbbbb\"; style=rounded;"]
    for k, (statements, anchor) in enumerate(items):
        out += [f"    {st}" for st in statements]
        if k:
            out.append(f"    {items[k - 1][1]} -> {anchor} [style=invis];")
    return out + ["  }"]


def _title(net) -> str:
    return (f"{net.name}: {net.params:,} params, {human(net.macs)} MACs, {net.layers} layers, "
            f"{shape_text(net.input_shape)} -> {shape_text(net.output_shape)}")


# ---- overview --------------------------------------------------------------------------------------

def _stage_runs(g, stage_units: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """Consecutive units of a stage that draw the same, as ((notation, line, variants, stride, shared, dropped),
    units): a pre-activation network's first unit, which activates before splitting ([I]), is a run of its own;
    units with stochastic depth are drawn with their rates' range."""
    runs: list[tuple[tuple, list[dict]]] = []
    for unit in stage_units:
        key = (unit_notation(g, unit), unit["shortcut"], tuple(variants(g, unit)), unit["args"]["stride"],
               shared_words(g, unit), any(g.nodes[n]["op"] == "drop_path" for n in unit["nodes"]))
        if runs and runs[-1][0] == key:
            runs[-1][1].append(unit)
        else:
            runs.append((key, [unit]))
    return runs


def _run_lines(g, name: str, prev: str, key: tuple, run: list[dict]) -> tuple[list[str], list[str], str]:
    """DOT of one run of identical units: (nodes inside the stage cluster, edges, the node the next run follows)."""
    notation, line, _, stride, shared, _ = key
    count = len(run)
    label = [notation + (f" x {count}" if count > 1 else "")] + ([f"/{stride} (downsampling)"] if stride > 1 else [])
    label += [words for words in (shared, drop_path_words(g, run), *variants(g, run[0], on="residual")) if words]
    nodes = [f"    {name} [label={_q(label)}, fillcolor=\"#ffffff\"];"]
    edges = [f"  {prev} -> {name};"]
    if line is None:  # plain net: no shortcut, no addition
        return nodes, edges, name
    add = f"{name}_add"
    nodes.append(f"    {add} [label=\"+\", shape=circle, width=0.3, fixedsize=true, fillcolor=\"#ffffff\"];")
    tag = [LINES[line].short + (f" x {count}" if count > 1 else ""), *variants(g, run[0], on="shortcut")]
    edges += [f"  {name} -> {add};", f"  {prev} -> {add} [style={LINES[line].style}, label={_q(tag)}];"]
    return nodes, edges, add


def _stem_head(net, part: str) -> list[dict]:
    """The stem's or the head's ops."""
    return [d for _, d in net.graph.nodes(data=True) if d["part"] == part and d["op"] not in ("input", "output")]


def _overview_stage(g, st: dict, row: dict, stage_units: list[dict], prev: str) -> tuple[list[str], str]:
    """One stage's cluster of runs and the edges through it; returns them and the node the next stage follows."""
    i = st["index"]
    order = "" if st["shortcut"] == "none" else f", {units.ORDERS[st['order']].doc}"  # [I] Fig. 4's, as the units'
    caption = (f"{st['name']}: {st['units']} {st['unit']} units{order}, out {shape_text(row['output'])}, "
               f"{row['params']:,} params, {human(row['macs'])} MACs")
    out = [f"  subgraph cluster_layer{i} {{",
           f"    label={_q(caption)}; fontsize=11; style=\"rounded,filled\"; "
           f"fillcolor={_q(COLOURS['stage'])}; color=\"#8aa4c8\";"]
    edges = []
    for k, (key, run) in enumerate(_stage_runs(g, stage_units)):
        inside, run_edges, prev = _run_lines(g, f"layer{i}_{k}", prev, key, run)
        out += inside
        edges += run_edges
    return out + ["  }"] + edges, prev


def overview_dot(net) -> str:
    """Stem, one block per run of identical units in each stage (repeats collapsed), shortcuts, head."""
    g = net.graph
    records = g.graph["units"]
    out = _header(_title(net))
    stem_nodes, gs = _stem_head(net, "stem"), net.parts["stem"]
    stem_label = ["stem: " + ", ".join(op_label(d) for d in stem_nodes), f"out {shape_text(stem_nodes[-1]['shape'])}",
                  f"{gs['params']:,} params, {human(gs['macs'])} MACs"]
    out.append(f"  input [label={_q('input ' + shape_text(net.input_shape))}, shape=plaintext, style=\"\"];")
    out.append(f"  stem [label={_q(stem_label)}, fillcolor={_q(COLOURS['conv'])}];")
    out.append("  input -> stem;")
    prev = "stem"
    for st, row in zip(g.graph["stages"], net.stages()):
        stage_lines, prev = _overview_stage(g, st, row, [u for u in records if u["stage"] == st["index"]], prev)
        out += stage_lines
    head_label = ["head: " + ", ".join(op_label(d) for d in _stem_head(net, "head")),
                  f"{net.parts['head']['params']:,} params"]
    out.append(f"  head [label={_q(head_label)}, fillcolor={_q(COLOURS['fc'])}];")
    out.append(f"  output [label={_q('output ' + shape_text(net.output_shape))}, shape=plaintext, style=\"\"];")
    out.append(f"  {prev} -> head;")
    out.append("  head -> output;")
    out += _legend(set(), {u["shortcut"] for u in records} - {None},
                   set().union(*(variant_families(g, u) for u in records)), "words")
    out.append("}")
    return "\n".join(out) + "\n"


# ---- units -------------------------------------------------------------------------------------------

def _edge_attrs(g, v: str, port: int, style: str | None, unit_view: bool) -> list[str]:
    """A shortcut edge takes its unit's line style; the unit view also names the addition's inputs."""
    attrs = [f"style={style}"] if style and is_shortcut_edge(g, v, port) else []
    if unit_view and g.nodes[v]["op"] == "add" and port != PORT_RESIDUAL:
        attrs.append("label=\"shortcut\"" if port == PORT_SHORTCUT else "label=\"g\"")
    return attrs


def _unit_cluster(net, cid: str, caption: list[str], unit: dict, labels: dict[str, str]) -> list[str]:
    """One unit's ops in execution order, in a captioned cluster from x to x_next; ``labels``: each node's."""
    g, nodes = net.graph, unit["nodes"]
    inside = set(nodes)
    style = LINES[unit["shortcut"]].style if unit["shortcut"] else None
    x_in, x_out = (f"{x}, {unit['args'][k]}-d" for x, k in (("x", "in_channels"), ("x_next", "out_channels")))
    out = [f"  subgraph cluster_{cid} {{",
           f"    label={_q(caption)}; fontsize=12; color=\"#999999\"; style=rounded; labelloc=b;",
           f"    {cid}_x [label={_q(x_in)}, shape=plaintext, style=\"\"];"]
    ids = {n: f"{cid}_{k}" for k, n in enumerate(nodes)}
    for n in nodes:
        d = g.nodes[n]
        look = ", shape=circle, width=0.35, fixedsize=true" if d["op"] == "add" and not d.get("gate") else ""
        out.append(f"    {ids[n]} [label={_q(labels[n])}{look}, fillcolor={_q(_op_colour(d['op']))}];")
    out.append(f"    {cid}_y [label={_q(x_out)}, shape=plaintext, style=\"\"];")
    for n in nodes:
        for port, u in enumerate(inputs_of(g, n)):
            attrs = _edge_attrs(g, n, port, style, unit_view=True)
            src = ids[u] if u in inside else f"{cid}_x"
            out.append(f"    {src} -> {ids[n]}" + (f" [{', '.join(attrs)}];" if attrs else ";"))
    out.append(f"    {ids[nodes[-1]]} -> {cid}_y;")
    out.append("  }")
    return out


def _labels(g, instances: list[dict]) -> dict[str, str]:
    """The labels of a kind's first unit, which its panel draws for all: an op that strides in another of them
    says so ("1x1 conv, 64 (/2 where the unit strides)": where a bottleneck strides, [R]'s 1x1 or torchvision's
    3x3, shows though layer1's unit does not), and a drop path gives the range of its rates."""
    labels = {}
    for k, n in enumerate(instances[0]["nodes"]):
        same = [g.nodes[u["nodes"][k]] for u in instances]  # units of one kind hold the same ops in the same order
        d = g.nodes[n]
        if d["op"] == "drop_path":
            labels[n] = drop_path_words(g, instances)
            continue
        stride = max(s.get("stride", 1) for s in same)
        labels[n] = op_label(d) + (f" (/{stride} where the unit strides)" if stride > d.get("stride", 1) else "")
    return labels


def unit_dot(nets_and_names: list[tuple[object, str]], typical_only: bool) -> str:
    """One cluster per distinct unit (or, with several specs, each spec's most common unit) side by side, each
    captioned in the papers' words (drawing_words.unit_caption)."""
    residual = {any(u["shortcut"] for u in net.graph.graph["units"]) for net, _ in nets_and_names}
    kind = {frozenset({True}): "residual units",  # [R]'s plain nets have no residual unit
            frozenset({False}): "units (plain: no shortcuts)"}.get(frozenset(residual), "units")
    title = kind if len(nets_and_names) > 1 else f"{nets_and_names[0][0].name}: distinct {kind}"
    out = _header(title)
    out.insert(2, "  graph [newrank=true];")
    ops, lines, families = set(), set(), set()
    for si, (net, caption_name) in enumerate(nets_and_names):
        g = net.graph
        kinds = units.distinct(g)
        if typical_only:
            kinds = [max(kinds, key=lambda k: len(k[1]))]
        for ui, (_cls, instances) in enumerate(kinds):
            first = instances[0]
            caption = [caption_name, *unit_caption(g, instances)]
            out += _unit_cluster(net, f"s{si}u{ui}", caption, first, _labels(g, instances))
            ops |= {g.nodes[n]["op"] for n in first["nodes"]}
            lines |= {first["shortcut"]} - {None}
            families |= variant_families(g, first)
    out += _legend(ops, lines, families, "ops")
    out.append("}")
    return "\n".join(out) + "\n"


# ---- full --------------------------------------------------------------------------------------------

def full_dot(net) -> str:
    """Every operation, tensor shapes on the edges; refused for networks too large to read."""
    g = net.graph
    if g.number_of_nodes() > MAX_FULL_NODES:
        raise ValueError(f"{net.name} has {g.number_of_nodes()} operations; the full view is unreadable above "
                         f"{MAX_FULL_NODES}")
    out = _header(_title(net)) + _full_nodes(g)
    line_of = {(u["stage"], u["index"]): u["shortcut"] for u in g.graph["units"]}
    ids = {n: f"n{k}" for k, n in enumerate(g.nodes)}
    for u, v, e in g.edges(data=True):
        line = line_of.get((g.nodes[v].get("stage"), g.nodes[v].get("unit")))
        attrs = [f"label={_q(shape_text(g.nodes[u]['shape']))}",
                 *_edge_attrs(g, v, e["port"], LINES[line].style if line else None, unit_view=False)]
        out.append(f"  {ids[u]} -> {ids[v]} [{', '.join(attrs)}];")
    out += _legend({d["op"] for _, d in g.nodes(data=True)}, set(line_of.values()) - {None},
                   set().union(*(variant_families(g, u) for u in g.graph["units"])), "ops")
    out.append("}")
    return "\n".join(out) + "\n"


def _full_nodes(g) -> list[str]:
    """Every op as a node named n<position>, each stage's in its own cluster."""
    out = []
    ids = {n: f"n{k}" for k, n in enumerate(g.nodes)}
    parts: OrderedDict[str, list] = OrderedDict()
    for n, d in g.nodes(data=True):
        parts.setdefault(d["part"], []).append(n)
    stages = {st["name"] for st in g.graph["stages"]}
    for part, members in parts.items():
        if part in stages:
            out.append(f"  subgraph cluster_{part} {{ label={_q(part)}; style=\"rounded,filled\"; "
                       f"fillcolor={_q(COLOURS['stage'])}; color=\"#8aa4c8\";")
        for n in members:
            d = g.nodes[n]
            shape = "circle" if d["op"] == "add" and not d.get("gate") else "box"
            label = op_label(d) if d["op"] in ("input", "output", "add") else [n, op_label(d)]
            out.append(f"    {ids[n]} [label={_q(label)}, shape={shape}, fillcolor={_q(_op_colour(d['op']))}];")
        if part in stages:
            out.append("  }")
    return out


# ---- rendering -----------------------------------------------------------------------------------------

class RenderError(Exception):
    """The graphviz program is missing or failed."""


# graphviz's warnings a reader can act on -> what to add after its words
WARNING_HINTS = {
    "too large for cairo-renderer bitmaps": "the PNG is smaller than the drawing; --format svg or pdf keeps it whole",
}
_WARNING_PREFIX = re.compile(r"^(?:(?:warning|dot)\s*:\s*)+", re.IGNORECASE)


def render(dot: str, fmt: str) -> bytes:
    """The rendered drawing alone (see render_with_warnings), for callers that show no warnings."""
    return render_with_warnings(dot, fmt)[0]


def graphviz_warnings(stderr: bytes) -> list[str]:
    """One message per distinct line graphviz wrote to stderr, its "Warning:" / "dot:" prefix dropped, unprintable
    characters escaped, and a hint where one helps."""
    seen: list[str] = []
    for line in stderr.decode(errors="replace").splitlines():
        text = _WARNING_PREFIX.sub("", line.strip())
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
        if text and text not in seen:  # graphviz repeats a warning for every node or edge it concerns
            seen.append(text)
    return [f"graphviz: {t}" + "".join(f" ({hint})" for key, hint in WARNING_HINTS.items() if key in t)
            for t in seen]


def render_with_warnings(dot: str, fmt: str) -> tuple[bytes, list[str]]:
    """Render DOT text with the graphviz `dot` program (svg, png or pdf), refusing drawings too large to lay out
    in reasonable time and memory before the program starts. Returns the drawing and graphviz's warnings, which
    it prints and still succeeds (a PNG too large for its bitmaps is silently scaled down, for one)."""
    import shutil
    import subprocess

    check_size(dot)
    exe = shutil.which("dot")
    if exe is None:
        raise RenderError("the graphviz program 'dot' is not installed, so only --format dot works; install it "
                          "with 'apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' (macOS) or "
                          "'conda install graphviz'")
    timeout = env_limit("RESDSL_VIZ_TIMEOUT", RENDER_TIMEOUT_S)
    try:
        proc = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True,
                              timeout=None if timeout == float("inf") else timeout)
    except subprocess.TimeoutExpired:
        raise RenderError(f"graphviz did not finish within {timeout:g} s; draw a smaller view, use --format dot, "
                          "or set the environment variable RESDSL_VIZ_TIMEOUT to more seconds (or inf)") from None
    except OSError as exc:
        raise RenderError(f"cannot run graphviz ({exe}): {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise RenderError(f"graphviz failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout, graphviz_warnings(proc.stderr)


# one statement per line (labels never hold a raw line break): `name [attrs];` declares a node, `a -> b` an edge
_NODE_LINE = re.compile(r"^\s*(?!graph\b|node\b|edge\b)\w+ \[")
_EDGE_LINE = re.compile(r"^\s*\w+ -> \w+")


def dot_size(dot: str) -> tuple[int, int]:
    """(nodes, edges) of DOT text written by this module."""
    lines = dot.splitlines()
    return sum(1 for ln in lines if _NODE_LINE.match(ln)), sum(1 for ln in lines if _EDGE_LINE.match(ln))


def check_size(dot: str) -> None:
    """Refuse (RenderError) a drawing with more nodes than RESDSL_VIZ_MAX_NODES or more than twice as many edges:
    graphviz's layout time and memory grow faster than the drawing."""
    limit = env_limit("RESDSL_VIZ_MAX_NODES", MAX_RENDER_NODES)
    nodes, edges = dot_size(dot)
    if nodes > limit or edges > 2 * limit:
        raise RenderError(f"the drawing has {nodes:,} nodes and {edges:,} edges, more than graphviz is asked to lay "
                          f"out ({limit:,.0f} nodes, {2 * limit:,.0f} edges); draw another view, use --format dot "
                          "(no layout), or set the environment variable RESDSL_VIZ_MAX_NODES to a larger number")
