"""Shape pass: give every IR node its output shape (each op kind's rule is in the op table, resdsl.ops); impossible
networks fail with located errors."""
from __future__ import annotations

from .ir import inputs_of
from .ops import OPS


def infer_shapes(g) -> None:
    """Annotate each node with ``shape`` (a tuple: (C, H, W) for maps, (N,) for vectors)."""
    for n, d in g.nodes(data=True):
        ins = [g.nodes[u]["shape"] for u in inputs_of(g, n)]
        d["shape"] = tuple(OPS[d["op"]].shape(d, ins))
