"""Cost pass: parameters and multiply-accumulates per node, rolled up per stage (resnet-papers.md section 7)."""
from __future__ import annotations

import math

from .ops import OPS
from .units import LAYER_COUNTS


def node_cost(d: dict) -> tuple[int, int]:
    """(params, macs) of one shaped node, by its op's rule in the op table."""
    return OPS[d["op"]].cost(d)


def count(g) -> dict:
    """Annotate ``params``/``macs`` on nodes; return totals, one row per part of the network (the stem, each stage
    by its name, the head) and the layer count, by the network's convention (units.LAYER_COUNTS)."""
    parts: dict[str, dict] = {}
    layers = residual_convs = 0
    for _, d in g.nodes(data=True):
        params, macs = node_cost(d)
        d["params"], d["macs"] = params, macs
        row = parts.setdefault(d["part"], {"params": 0, "macs": 0, "output": None})
        row["params"] += params
        row["macs"] += macs
        if d["op"] not in ("output",):
            row["output"] = list(d["shape"])
        if d.get("main"):
            layers += 1
            residual_convs += d["op"] == "conv" and d.get("path") == "residual"
    total_params = sum(r["params"] for r in parts.values())
    total_macs = sum(r["macs"] for r in parts.values())
    layers = LAYER_COUNTS[g.graph.get("layer_count", "resnet")](layers, residual_convs)
    return {"params": total_params, "macs": total_macs, "layers": layers, "parts": parts}


def human(n: float, digits: int = 3) -> str:
    """21797672 -> '21.8M' style, for summaries."""
    if n == 0:
        return "0"
    for exp, suffix in ((12, "T"), (9, "G"), (6, "M"), (3, "K")):
        if abs(n) >= 10 ** exp:
            v = n / 10 ** exp
            decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
            return f"{v:.{decimals}f}{suffix}"
    return str(n)
