"""The IR: a networkx DiGraph whose nodes are operations, in execution order, plus its text dump."""
from __future__ import annotations

import networkx as nx

from .errors import Span
from .ops import OPS, shape_text


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


def describe(d: dict) -> str:
    """A short, paper-style description of one op's attributes (the op table's words for the IR dump)."""
    return OPS[d["op"]].describe(d)


def dump(g: nx.DiGraph, locations: bool = True) -> str:
    """Deterministic text form of a checked IR: one line per node, in execution order, each ending with the spec
    line it comes from (``@path:line``) unless ``locations`` is False."""
    lines = [f"# network {g.graph['name']}  input {shape_text(g.graph['input'])}  order {g.graph['order']}"]
    for n, d in g.nodes(data=True):
        ins = ",".join(inputs_of(g, n)) or "-"
        sp = d["span"]
        cost = f" params={d.get('params', 0)} macs={d.get('macs', 0)}" if d.get("params") or d.get("macs") else ""
        desc = describe(d)
        lines.append(f"{n} = {d['op']}{' ' + desc if desc else ''} ({ins}) : {shape_text(d.get('shape'))}"
                     f"{cost}" + (f" @{sp.path}:{sp.line}" if locations else ""))
    return "\n".join(lines) + "\n"
