"""Checked IR -> graphviz block diagrams: the stage overview of [R] Fig. 3, the units of [I] Fig. 2 and 4, and
the full layer graph. Produces DOT text; rendering to SVG/PNG/PDF goes through the graphviz program."""
from __future__ import annotations

import re
from collections import OrderedDict

from ..cost import human
from ..errors import env_limit
from ..ir import inputs_of
from .python_source import _Emitter

FONT = "Helvetica"
COLOURS = OrderedDict([
    ("conv", "#cfe2f3"), ("bn", "#fff2cc"), ("relu", "#d9ead3"), ("add", "#ffffff"), ("pool", "#e0e0e0"),
    ("fc", "#f9cb9c"), ("shortcut op", "#e6d0f0"), ("gate", "#f4cccc"), ("stage", "#eef3fb"),
])
MAX_FULL_NODES = 600  # readability of --view full
MAX_RENDER_NODES = 2000  # what graphviz is asked to lay out (about 10 s); RESDSL_VIZ_MAX_NODES lifts it
RENDER_TIMEOUT_S = 120  # RESDSL_VIZ_TIMEOUT lifts it


def _op_colour(op: str) -> str:
    return {
        "conv": COLOURS["conv"], "bn": COLOURS["bn"], "relu": COLOURS["relu"], "add": COLOURS["add"],
        "maxpool": COLOURS["pool"], "avgpool": COLOURS["pool"], "global_avgpool": COLOURS["pool"],
        "fc": COLOURS["fc"], "pad": COLOURS["shortcut op"], "scale": COLOURS["shortcut op"],
        "dropout": COLOURS["shortcut op"], "sigmoid": COLOURS["gate"], "input": "#ffffff", "output": "#ffffff",
    }[op]


def _q(text: str) -> str:
    """A DOT double-quoted string on one line. Captions hold file names, so every unprintable character (another
    line break, an undecodable byte) is drawn as its Python escape, and backslashes stay literal (no \\N, \\G)."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")  # a line break in the label
        elif ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1].replace("\\", "\\\\"))
    return '"' + "".join(out) + '"'


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def op_label(d: dict) -> str:
    """A node label in the papers' notation ("3x3 conv, 64, /2", "BN", "ReLU", "+")."""
    op = d["op"]
    if op == "conv":
        k = d["kernel"][0]
        label = f"{k}x{k} conv, {d['out_channels']}" + (f", /{d['stride']}" if d["stride"] > 1 else "")
        if d.get("path") == "gate":
            label = f"gate: {label} + bias ({d['bias_init']:g})"
        return label
    if op == "bn":
        return "BN" + (" (γ=0)" if d.get("zero_init") else "")
    if op == "relu":
        return "ReLU"
    if op == "sigmoid":
        return "sigmoid g(x)"
    if op in ("maxpool", "avgpool"):
        k = d["kernel"][0]
        return f"{k}x{k} {'max' if op == 'maxpool' else 'avg'} pool, /{d['stride']}"
    if op == "global_avgpool":
        return "global avg pool"
    if op == "fc":
        return f"fc {d['out_features']}"
    if op == "pad":
        return f"zero-pad to {d['out_channels']}" + (f", /{d['stride']}" if d["stride"] > 1 else "")
    if op == "scale":
        return f"x {d['factor']:g}"
    if op == "dropout":
        return f"dropout {d['p']:g}"
    if op == "add":
        return {"exclusive": "g·F + (1-g)·h", "shortcut-only": "F + (1-g)·h"}.get(d.get("gate"), "+")
    if op == "input":
        return f"input {_shape(d['shape'])}"
    if op == "output":
        return f"output {_shape(d['shape'])}"
    return op


def _header(title: str, rankdir: str = "TB") -> list[str]:
    return [
        "digraph resdsl {",
        f"  graph [rankdir={rankdir}, fontname={_q(FONT)}, fontsize=14, labelloc=t, label={_q(title)}, "
        "nodesep=0.25, ranksep=0.3];",
        f"  node [fontname={_q(FONT)}, fontsize=11, shape=box, style=\"rounded,filled\", color=\"#555555\"];",
        f"  edge [fontname={_q(FONT)}, fontsize=9, color=\"#444444\"];",
    ]


def _legend(kinds: list[str]) -> list[str]:
    out = ["  subgraph cluster_legend {", "    label=\"legend\"; fontsize=10; color=\"#bbbbbb\"; style=rounded;"]
    prev = None
    for k in kinds:
        name = f"legend_{k.replace(' ', '_')}"
        out.append(f"    {name} [label={_q(k)}, fillcolor={_q(COLOURS[k])}, fontsize=9];")
        if prev:
            out.append(f"    {prev} -> {name} [style=invis];")
        prev = name
    out.append("  }")
    return out


def _title(net) -> str:
    return (f"{net.name}: {net.params:,} params, {human(net.macs)} MACs, {net.layers} layers, "
            f"{_shape(net.input_shape)} -> {_shape(net.output_shape)}")


# ---- overview --------------------------------------------------------------------------------------

def _unit_notation(g, first_unit_nodes: list[str]) -> str:
    """[R] Table 1 notation of one stage's unit: [3x3, 64; 3x3, 64] or [1x1, 64; 3x3, 64; 1x1, 256]."""
    convs = [g.nodes[n] for n in first_unit_nodes if g.nodes[n]["op"] == "conv" and g.nodes[n]["path"] == "residual"]
    return "[" + "; ".join(f"{d['kernel'][0]}x{d['kernel'][0]}, {d['out_channels']}" for d in convs) + "]"


def _shortcut_kind(g, nodes: list[str]) -> str | None:
    ops = {g.nodes[n]["op"] for n in nodes}
    if "add" not in ops:
        return None
    if any(n.rsplit(".", 2)[-2:] == ["downsample", "0"] for n in nodes):
        return "projection"
    if "pad" in ops:
        return "zero-pad"
    return "identity"


def _stage_runs(g, stage_units: list[list[str]]) -> list[list]:
    """Consecutive units of a stage that draw the same, as [(notation, shortcut, stride), count, nodes]."""
    runs: list[list] = []
    for nodes in stage_units:
        key = (_unit_notation(g, nodes), _shortcut_kind(g, nodes), g.nodes[nodes[0]]["unit_args"]["stride"])
        if runs and runs[-1][0] == key:
            runs[-1][1] += 1
        else:
            runs.append([key, 1, nodes])
    return runs


def _units(g) -> OrderedDict:
    units: OrderedDict[tuple, list] = OrderedDict()
    for n, d in g.nodes(data=True):
        if "stage" in d:
            units.setdefault((d["stage"], d["unit"]), []).append(n)
    return units


def overview_dot(net) -> str:
    """Stem, one block per run of identical units in each stage (repeats collapsed), shortcuts, head."""
    g = net.graph
    units = _units(g)
    out = _header(_title(net))
    stem_nodes = [d for _, d in g.nodes(data=True) if d["group"] == "stem" and d["op"] != "input"]
    gs = net.groups["stem"]
    stem_label = "stem: " + ", ".join(op_label(d) for d in stem_nodes) + \
        f"\nout {_shape(stem_nodes[-1]['shape'])}\n{gs['params']:,} params, {human(gs['macs'])} MACs"
    out.append(f"  input [label={_q('input ' + _shape(net.input_shape))}, shape=plaintext, style=\"\"];")
    out.append(f"  stem [label={_q(stem_label)}, fillcolor={_q(COLOURS['conv'])}];")
    out.append("  input -> stem;")
    prev = "stem"
    for st, row in zip(g.graph["stages"], net.stages()):
        i = st["index"]
        runs = _stage_runs(g, [nodes for (s, _), nodes in units.items() if s == i])
        caption = (f"layer{i}: {st['units']} {st['unit']} units, out {_shape(row['output'])}, "
                   f"{row['params']:,} params, {human(row['macs'])} MACs")
        out.append(f"  subgraph cluster_layer{i} {{")
        out.append(f"    label={_q(caption)}; fontsize=11; style=\"rounded,filled\"; "
                   f"fillcolor={_q(COLOURS['stage'])}; color=\"#8aa4c8\";")
        edges = []
        for k, ((notation, sc, stride), count, _nodes) in enumerate(runs):
            name = f"layer{i}_{k}"
            label = notation + (f" x {count}" if count > 1 else "")
            if stride > 1:
                label += f"\n/{stride} (downsampling)"
            out.append(f"    {name} [label={_q(label)}, fillcolor=\"#ffffff\"];")
            edges.append(f"  {prev} -> {name};")
            if sc is None:  # plain net: no shortcut, no addition
                prev = name
                continue
            add = f"{name}_add"
            out.append(f"    {add} [label=\"+\", shape=circle, width=0.3, fixedsize=true, fillcolor=\"#ffffff\"];")
            edges.append(f"  {name} -> {add};")
            style = "solid" if sc == "identity" else "dashed"
            tag = {"identity": "identity", "projection": "1x1 projection", "zero-pad": "zero-pad (A)"}[sc]
            edges.append(f"  {prev} -> {add} [style={style}, label={_q(tag + (f' x {count}' if count > 1 else ''))}];")
            prev = add
        out.append("  }")
        out += edges
    head_nodes = [d for _, d in g.nodes(data=True) if d["group"] == "head" and d["op"] != "output"]
    head_label = "head: " + ", ".join(op_label(d) for d in head_nodes) + f"\n{net.groups['head']['params']:,} params"
    out.append(f"  head [label={_q(head_label)}, fillcolor={_q(COLOURS['fc'])}];")
    out.append(f"  output [label={_q('output ' + _shape(net.output_shape))}, shape=plaintext, style=\"\"];")
    out.append(f"  {prev} -> head;")
    out.append("  head -> output;")
    out += _legend_overview()
    out.append("}")
    return "\n".join(out) + "\n"


def _legend_overview() -> list[str]:
    return [
        "  subgraph cluster_legend {",
        "    label=\"shortcuts\"; fontsize=10; color=\"#bbbbbb\"; style=rounded;",
        "    legend_a [label=\"\", shape=point, width=0.05]; legend_b [label=\"\", shape=point, width=0.05];",
        "    legend_c [label=\"\", shape=point, width=0.05]; legend_d [label=\"\", shape=point, width=0.05];",
        "    legend_a -> legend_b [label=\"identity\"];",
        "    legend_c -> legend_d [label=\"projection / zero-pad\", style=dashed];",
        "  }",
    ]


# ---- units -------------------------------------------------------------------------------------------

def distinct_units(net) -> list[tuple[str, list[str], int]]:
    """(class name, nodes of its first instance, how many units share it), in network order; units are the
    same kind when the emitted PyTorch code for them is identical."""
    emitter = _Emitter(net)
    seen: OrderedDict[str, list] = OrderedDict()
    taken: set[str] = set()
    for nodes in _units(net.graph).values():
        body = emitter.unit_body(nodes)
        if body not in seen:
            name = emitter.class_name(nodes, taken)
            taken.add(name)
            seen[body] = [name, nodes, 0]
        seen[body][2] += 1
    return [tuple(v) for v in seen.values()]


def _unit_cluster(net, cid: str, caption: str, nodes: list[str]) -> list[str]:
    g = net.graph
    inside = set(nodes)
    out = [f"  subgraph cluster_{cid} {{",
           f"    label={_q(caption)}; fontsize=12; color=\"#999999\"; style=rounded; labelloc=b;"]
    x_in = f"{cid}_x"
    out.append(f"    {x_in} [label=\"x\", shape=plaintext, style=\"\"];")
    ids = {}
    for k, n in enumerate(nodes):
        d = g.nodes[n]
        ids[n] = f"{cid}_{k}"
        shape = "circle" if d["op"] == "add" and not d.get("gate") else "box"
        extra = ", width=0.35, fixedsize=true" if shape == "circle" else ""
        out.append(f"    {ids[n]} [label={_q(op_label(d))}, shape={shape}{extra}, fillcolor={_q(_op_colour(d['op']))}];")
    x_out = f"{cid}_y"
    out.append(f"    {x_out} [label=\"x_next\", shape=plaintext, style=\"\"];")
    for n in nodes:
        d = g.nodes[n]
        for port, u in enumerate(inputs_of(g, n)):
            src = ids[u] if u in inside else x_in
            attrs = []
            if d["op"] == "add" and port == 1:
                attrs.append("style=bold" if not any(g.nodes[m]["path"] == "shortcut" for m in nodes) else "style=dashed")
                attrs.append("label=\"shortcut\"")
            if d["op"] == "add" and port == 2:
                attrs.append("label=\"g\"")
            out.append(f"    {src} -> {ids[n]}" + (f" [{', '.join(attrs)}];" if attrs else ";"))
    out.append(f"    {ids[nodes[-1]]} -> {x_out};")
    out.append("  }")
    return [ln for ln in out if ln]


def unit_dot(nets_and_names: list[tuple[object, str]], typical_only: bool) -> str:
    """One cluster per distinct unit (or, with several specs, each spec's most common unit) side by side."""
    title = "residual units" if len(nets_and_names) > 1 else f"{nets_and_names[0][0].name}: distinct residual units"
    out = _header(title)
    out.insert(2, "  graph [newrank=true];")
    for si, (net, caption_name) in enumerate(nets_and_names):
        units = distinct_units(net)
        if typical_only:
            units = [max(units, key=lambda u: u[2])]
        for ui, (cls, nodes, count) in enumerate(units):
            st = net.graph.graph["stages"][net.graph.nodes[nodes[0]]["stage"] - 1]
            caption = f"{caption_name}\n{cls} (x{count}), order {st['order']}"
            out += _unit_cluster(net, f"s{si}u{ui}", caption, nodes)
    out += _legend(["conv", "bn", "relu", "add", "shortcut op", "gate"])
    out.append("}")
    return "\n".join(out) + "\n"


# ---- full --------------------------------------------------------------------------------------------

def full_dot(net) -> str:
    """Every operation, tensor shapes on the edges; refused for networks too large to read."""
    g = net.graph
    if g.number_of_nodes() > MAX_FULL_NODES:
        raise ValueError(f"{net.name} has {g.number_of_nodes()} operations; the full view is unreadable above "
                         f"{MAX_FULL_NODES}. Use --view overview (or --view unit)")
    out = _header(_title(net))
    ids = {n: f"n{k}" for k, n in enumerate(g.nodes)}
    groups: OrderedDict[str, list] = OrderedDict()
    for n, d in g.nodes(data=True):
        groups.setdefault(d["group"], []).append(n)
    for group, members in groups.items():
        if group.startswith("layer"):
            out.append(f"  subgraph cluster_{group} {{ label={_q(group)}; style=\"rounded,filled\"; "
                       f"fillcolor={_q(COLOURS['stage'])}; color=\"#8aa4c8\";")
        for n in members:
            d = g.nodes[n]
            shape = "circle" if d["op"] == "add" and not d.get("gate") else "box"
            label = op_label(d) if d["op"] in ("input", "output", "add") else f"{n}\n{op_label(d)}"
            out.append(f"    {ids[n]} [label={_q(label)}, shape={shape}, fillcolor={_q(_op_colour(d['op']))}];")
        if group.startswith("layer"):
            out.append("  }")
    for u, v, e in g.edges(data=True):
        style = ", style=dashed" if g.nodes[v]["op"] == "add" and e["port"] == 1 else ""
        out.append(f"  {ids[u]} -> {ids[v]} [label={_q(_shape(g.nodes[u]['shape']))}{style}];")
    out += _legend(["conv", "bn", "relu", "add", "pool", "fc", "shortcut op", "gate"])
    out.append("}")
    return "\n".join(out) + "\n"


# ---- rendering -----------------------------------------------------------------------------------------

class RenderError(Exception):
    """The graphviz program is missing or failed."""


def render(dot: str, fmt: str) -> bytes:
    """Render DOT text with the graphviz `dot` program (svg, png or pdf), refusing drawings too large to lay out
    in reasonable time and memory before the program starts."""
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
    return proc.stdout


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
