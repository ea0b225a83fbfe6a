"""The papers' words for what the drawings show, read from the IR (node attributes, the stage and unit records),
never from node or generated class names: op labels, [I] Fig. 4's orders, [R] Table 1's unit notation, [R]'s shortcut
options and [I] Fig. 2's shortcut variants, and how each kind of shortcut line is drawn in every view."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..ops import OPS, PORT_SHORTCUT, groups_words
from ..units import ORDERS, UNIT_KINDS, shortcut_words


@dataclass(frozen=True)
class Line:
    """How one kind of shortcut h(x) is drawn: the same edge style in the overview, unit and full views."""

    style: str  # graphviz edge style
    short: str  # on the overview's shortcut edges
    legend: str


# [R] Fig. 3 draws identity shortcuts solid and "the dotted shortcuts increase dimensions" (by option A or B);
# here a 1x1 projection (option B/C, [I]'s "1x1 conv shortcut") is dashed and option A's parameter-free
# zero-padding dotted, so the two ways of increasing dimensions stay apart. [I] Fig. 2's scaling, gating and dropout
# change an identity shortcut: it stays solid and the change is drawn on it (an op box, or words on the overview's edge
# label).
LINES = {
    "identity": Line("solid", "identity", "identity shortcut"),
    "zero-pad": Line("dotted", "zero-pad (A)", "zero-padding shortcut (option A)"),
    "projection": Line("dashed", "1x1 projection", "1x1 projection shortcut (option B/C)"),
    "avg-projection": Line("dashed", "avg pool + 1x1 projection", "average pool + 1x1 projection shortcut (ResNet-D)"),
}
# how [I] Fig. 2's variants show: as their ops (unit and full views) or as words (the overview's edge labels)
VARIANT_LEGEND = {"ops": ("{} ([I] Fig. 2): drawn as their ops;", "the shortcut line keeps its style"),
                  "words": ("{} ([I] Fig. 2): named on the shortcut line,", "which keeps its style")}


def _gate_words(d: dict) -> str | None:
    return f"{d['gate']} gating" if d.get("gate") else None


# [I] Table 1 / Fig. 2: the ops that change a shortcut (or scale F), in the table's order:
# (op, path, variant family for the legend, words; None where the node changes nothing)
VARIANTS = [
    ("scale", "shortcut", "constant scaling", lambda d: f"constant scaling {d['factor']:g}"),
    ("scale", "residual", "constant scaling", lambda d: f"F scaled by {d['factor']:g}"),
    ("add", "merge", "gating", _gate_words),
    ("conv", "gate", "gating", lambda d: f"init b_g = {d['bias_init']:g}"),
    ("dropout", "shortcut", "dropout", lambda d: f"dropout shortcut {d['p']:g}"),
]


def op_label(d: dict) -> str:
    """A node label in the papers' notation ("3x3 conv, 64, /2", "BN", "ReLU", "+"): the op table's label."""
    return OPS[d["op"]].label(d)


# ---- shortcuts -----------------------------------------------------------------------------------------

def is_shortcut_edge(g, v: str, port: int) -> bool:
    """Whether the edge entering node v at this port is part of a shortcut path h(x)."""
    d = g.nodes[v]
    return d.get("path") == "shortcut" or (d["op"] == "add" and port == PORT_SHORTCUT)


def _variant_hits(g, unit: dict) -> list[tuple[str, str, str]]:
    """(family, path, words) of every VARIANTS record this unit matches, in VARIANTS order."""
    nodes, hits = unit["nodes"], []
    for op, path, family, say in VARIANTS:
        words = [say(g.nodes[n]) for n in nodes if g.nodes[n]["op"] == op and g.nodes[n].get("path") == path]
        if words and words[0]:
            hits.append((family, path, words[0]))
    return hits


def variants(g, unit: dict, on: str | None = None) -> list[str]:
    """[I] Fig. 2's words for what changes this unit's shortcut or scales its F ("constant scaling 0.5", ...);
    ``on="residual"``: those of F alone (a scaled F, and the frozen gating it makes with a scaled shortcut),
    ``on="shortcut"``: the others (the overview writes them on the shortcut line)."""
    scales = [g.nodes[n]["factor"] for n in unit["nodes"] if g.nodes[n]["op"] == "scale"]
    gated = any(g.nodes[n].get("gate") for n in unit["nodes"])
    frozen = len(scales) == 2 and math.isclose(sum(scales), 1) and not gated  # h x λ, F x (1-λ): [I]'s frozen gating
    words = [(path == "residual", w) for _, path, w in _variant_hits(g, unit)]
    words += [(True, "frozen gating")] if frozen else []
    return [w for of_f, w in words if on is None or of_f == (on == "residual")]


def variant_families(g, unit: dict) -> set[str]:
    """Which of [I] Fig. 2's variant families (constant scaling, gating, dropout) this unit shows."""
    return {family for family, _, _ in _variant_hits(g, unit)}


# ---- unit captions -------------------------------------------------------------------------------------

def unit_notation(g, unit: dict) -> str:
    """[R] Table 1 notation of one unit's residual path, in its order: [3x3, 64; 3x3, 64] or [1x1, 64; 3x3, 64;
    1x1, 256]; a squeeze-excitation where it sits, inside the brackets as SENet's Table 1 lists it ([...; 1x1, 256;
    SE r=16]; [SE r=16; ...] at pre; [...; after +: SE r=16] after the addition); a Wide ResNet's dropout between
    the convolutions ([3x3, 160; dropout 0.3; 3x3, 160])."""
    inside, after = [], []
    for d in (g.nodes[n] for n in unit["nodes"]):
        if d["op"] == "conv" and d.get("path") == "residual":
            inside.append(f"{d['kernel'][0]}x{d['kernel'][0]}, {d['out_channels']}{groups_words(d)}")
        elif d["op"] == "dropout" and d.get("path") == "residual":
            inside.append(f"dropout {d['p']:g}")
        elif d["op"] == "se":
            (after if d.get("path") == "merge" else inside).append(f"SE r={d['ratio']}")
    return "[" + "; ".join(inside + [f"after +: {w}" for w in after]) + "]"


def drop_path_words(g, units: list[dict]) -> str | None:
    """Stochastic depth over these units: 'drop path 0.00926 to 0.176 per batch' (their rates' range)."""
    dropped = [g.nodes[n] for u in units for n in u["nodes"] if g.nodes[n]["op"] == "drop_path"]
    if not dropped:
        return None
    rates = [d["drop_prob"] for d in dropped]
    return op_label({**dropped[0], "drop_range": (min(rates), max(rates))})


def shared_words(g, unit: dict) -> str | None:
    """[I]: a pre-activation unit's first unit (or projection unit) activates before splitting into two paths."""
    shared = [op_label(g.nodes[n]) for n in unit["nodes"] if g.nodes[n].get("path") == "shared"]
    return "-".join(shared) + " before splitting into two paths" if shared else None


MAX_STAGE_ROWS = 4


def _stage_rows(g, instances: list[dict]) -> list[str]:
    """One row per stage, as [R] Table 1 lists them: the unit's notation there and how many units it has."""
    per_stage: dict[int, list] = {}
    for unit in instances:
        per_stage.setdefault(unit["stage"], [unit, 0])[1] += 1
    rows = []
    for s, (unit, count) in per_stage.items():
        where = g.graph["stages"][s - 1]["name"]
        stride = unit["args"]["stride"]  # only a stage's first unit downsamples ([R] conv3_1)
        if stride > 1:
            where += f", stride {stride}" if count == 1 else f", the first with stride {stride}"
        rows.append(f"{unit_notation(g, unit)} x {count} ({where})")
    if len(rows) > MAX_STAGE_ROWS:
        rest = sum(c for _, c in list(per_stage.values())[MAX_STAGE_ROWS - 1:])
        rows[MAX_STAGE_ROWS - 1:] = [f"and {rest} more in {len(rows) - MAX_STAGE_ROWS + 1} more stages"]
    return rows


def unit_caption(g, instances: list[dict]) -> list[str]:
    """Caption lines for one kind of unit (all its instances' records, in network order): "(b) BN after addition;
    identity shortcut", [I] Fig. 2's changes and the pre-activation before the split where present, then
    "basic [3x3, 16; 3x3, 16] x 18 (layer1)" and one such row per further stage."""
    first = instances[0]
    order = ORDERS[first["order"]].figure
    # [I] Fig. 4's orders are orders of residual units; a plain net's unit (no addition) is named as such
    lines = [f"{order}; {shortcut_words(first)}" if first["shortcut"] else shortcut_words(first)]
    changes = ", ".join(variants(g, first))
    lines += [words for words in (changes, shared_words(g, first)) if words]
    rows = _stage_rows(g, instances)
    rows[0] = f"{UNIT_KINDS[first['kind']].caption} {rows[0]}"
    return lines + rows
