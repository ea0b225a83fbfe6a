"""The IR: a networkx DiGraph whose nodes are operations, in execution order, plus its text dump."""
from __future__ import annotations

import networkx as nx

from .errors import Span

OPS = {
    "input", "conv", "bn", "relu", "maxpool", "avgpool", "pad", "scale", "dropout", "sigmoid", "add",
    "global_avgpool", "fc", "output",
}
# which input port of an `add` each edge feeds
PORT_RESIDUAL, PORT_SHORTCUT, PORT_GATE = 0, 1, 2


class GraphBuilder:
    """Appends nodes in execution order; node names follow torchvision's module paths where they exist."""

    def __init__(self, **graph_attrs):
        self.g = nx.DiGraph(**graph_attrs)

    def add(self, name: str, op: str, inputs: list[str] | tuple[str, ...], span: Span, **attrs) -> str:
        if op not in OPS:
            raise ValueError(f"unknown IR op {op!r}")
        if name in self.g:
            raise ValueError(f"duplicate IR node {name!r}")
        self.g.add_node(name, op=op, span=span, **attrs)
        for port, src in enumerate(inputs):
            self.g.add_edge(src, name, port=port)
        return name


def inputs_of(g: nx.DiGraph, name: str) -> list[str]:
    """Predecessors of a node ordered by input port."""
    preds = [(d["port"], u) for u, _, d in g.in_edges(name, data=True)]
    return [u for _, u in sorted(preds)]


def validate(g: nx.DiGraph) -> None:
    """Structural invariants every pass relies on (a compiler bug if violated, never a user error)."""
    if not nx.is_directed_acyclic_graph(g):
        raise AssertionError("IR has a cycle")
    position = {n: i for i, n in enumerate(g.nodes)}
    for u, v in g.edges:
        if position[u] >= position[v]:
            raise AssertionError(f"IR not in execution order: {u} -> {v}")
    for n, d in g.nodes(data=True):
        if d["op"] not in OPS or "span" not in d:
            raise AssertionError(f"malformed IR node {n}")
        ports = sorted(e["port"] for _, _, e in g.in_edges(n, data=True))
        if ports != list(range(len(ports))):
            raise AssertionError(f"IR node {n} has ports {ports}")


def _fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape) if shape is not None else "?"


def _window(d: dict) -> str:
    """'3x3/2' for a conv or pool window; the padding is named only where it is not the centred k // 2 (an even
    window, docs/language.md "Feature-map sizes")."""
    kh, kw = d["kernel"]
    pad = d["padding"][0]
    return f"{kh}x{kw}/{d['stride']}" + (f" pad {pad}" if pad != kh // 2 else "")


def describe(d: dict) -> str:
    """A short, paper-style description of one op's attributes."""
    op = d["op"]
    if op == "conv":
        s = f"{_window(d)} {d['in_channels']}->{d['out_channels']}"
        return s + (" +bias" if d.get("bias") else "")
    if op == "bn":
        return f"{d['channels']}" + (" zero-init" if d.get("zero_init") else "")
    if op in ("maxpool", "avgpool"):
        return _window(d)
    if op == "pad":
        return f"/{d['stride']} {d['in_channels']}->{d['out_channels']}"
    if op == "scale":
        return f"x{d['factor']:g}"
    if op == "dropout":
        return f"p={d['p']:g}"
    if op == "fc":
        return f"{d['in_features']}->{d['out_features']}"
    if op == "add":
        return d.get("gate") or ""
    return ""


def dump(g: nx.DiGraph) -> str:
    """Deterministic text form of a checked IR: one line per node, in execution order."""
    lines = [f"# network {g.graph['name']}  input {_fmt_shape(g.graph['input'])}  order {g.graph['order']}"]
    for n, d in g.nodes(data=True):
        ins = ",".join(inputs_of(g, n)) or "-"
        sp = d["span"]
        cost = f" params={d.get('params', 0)} macs={d.get('macs', 0)}" if d.get("params") or d.get("macs") else ""
        desc = describe(d)
        lines.append(f"{n} = {d['op']}{' ' + desc if desc else ''} ({ins}) : {_fmt_shape(d.get('shape'))}"
                     f"{cost} @{sp.path}:{sp.line}")
    return "\n".join(lines) + "\n"
