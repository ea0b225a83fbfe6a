"""The checks of lowering that need no graph: each number of a statement within its range, and the
combinations of statements that mean nothing (each a located SpecError that says why)."""
from __future__ import annotations

import math

from . import syntax as ast
from .errors import SpecError
from .resolve import ResolvedSpec, stage_setting
from .units import ORDERS, SHORTCUT_KINDS, UNIT_KINDS, builds

MAX_CHANNELS = 1 << 16
MAX_SPATIAL = 1 << 16
MAX_UNITS = 5000
MAX_STEM_CONVS = 256  # the papers' stems have one, ResNet-C's three
MAX_CLASSES = 10_000_000


def check_range(v: ast.Value, lo, hi, what: str) -> None:
    if not lo <= v.value <= hi:
        raise SpecError(f"{what} must be between {lo} and {hi}, got {v.value}", v.span)


def check_sizes(inp: ast.Input, stages: ast.Stages) -> None:
    """The input's and the stages' numbers, within what resdsl builds."""
    check_range(inp.channels, 1, MAX_CHANNELS, "input channels")
    check_range(inp.height, 1, MAX_SPATIAL, "input height")
    check_range(inp.width, 1, MAX_SPATIAL, "input width")
    total_units = 0
    for e in stages.entries:
        check_range(e.width, 1, MAX_CHANNELS, "stage width")
        check_range(e.units, 1, MAX_UNITS, "units per stage")
        check_range(e.stride, 1, 64, "stage stride")
        total_units += e.units.value
    if total_units > MAX_UNITS:
        raise SpecError(f"the network has {total_units} units; resdsl builds at most {MAX_UNITS}", stages.span)


def check_ends(r: ResolvedSpec, stem_activated: bool) -> ast.Order:
    """The network's order statement, whose options set the ends of a pre-activation network: they apply to the
    first stage's first unit and the head, so a stage's own order statement may not set them."""
    for slot in r.overrides.values():
        order = slot.get("order")
        for v in (order.final_activation, order.first_shortcut) if order else ():
            if v is not None:
                raise SpecError("the ends of the network are set by the network's order statement, not a stage's",
                                v.span, hint="move 'final-activation' and 'first-shortcut' to the top-level order")
    ends = r.settings["order"]
    first, last = stage_setting(r, 1, "order"), stage_setting(r, len(r.settings["stages"].entries), "order")
    for v, word, which, order in ((ends.final_activation, "final-activation", "last", last),
                                  (ends.first_shortcut, "first-shortcut", "first", first)):
        if v is not None and not ORDERS[order.name].pre:
            raise SpecError(f"'{word}' sets an end of a pre-activation network, but the {which} stage's order is "
                            f"'{order.name}'", v.span,
                            hint="only 'order preact' and 'order relu-preact' activate before the first unit's "
                                 "split and in the head ([I])")
    if ends.first_shortcut is not None and ends.first_shortcut.value == "raw" and stem_activated:
        raise SpecError("'first-shortcut raw' has nothing to do: the stem's BN-ReLU already activated the first "
                        "unit's input", ends.first_shortcut.span)
    return ends


def check_unit(unit: ast.Unit) -> None:
    """A unit statement's numbers, and its options that exclude each other or need a second convolution."""
    if unit.expansion is not None:
        check_range(unit.expansion, 1, 64, "bottleneck expansion")
    for v, lo, hi, what in ((unit.cardinality, 1, 1024, "cardinality"), (unit.base_width, 1, 4096, "base width"),
                            (unit.width_factor, 1, 64, "width factor")):
        if v is not None:
            check_range(v, lo, hi, what)
    if unit.se is not None:
        check_range(unit.se.ratio, 1, MAX_CHANNELS, "squeeze-excitation ratio")
        if unit.se.divisor is not None:
            check_range(unit.se.divisor, 1, 1024, "squeeze-excitation divisor")
    if unit.dropout is not None:
        check_probability(unit.dropout)
        if len(UNIT_KINDS[unit.kind].convs) < 2:
            raise SpecError(f"a {unit.kind} unit has one convolution, so there is no place between convolutions "
                            "for 'dropout'", unit.dropout.span, hint="for dropout on the shortcut, 'shortcut ... "
                            "dropout P' ([I] Fig. 2f)")
    if unit.base_width is not None and unit.width_factor is not None:
        second = max(unit.base_width.span, unit.width_factor.span, key=lambda sp: (sp.line, sp.column))
        raise SpecError("give 'base-width' or 'width-factor', not both: width-factor F is base-width 64 x F", second)


def check_drop_path(dp: ast.DropPath) -> None:
    if not 0 <= dp.rate.value < 1:
        raise SpecError(f"the drop-path rate must be in [0, 1), got {dp.rate.value:g}", dp.rate.span)


def check_probability(v: ast.Value) -> None:
    if not 0 <= v.value < 1:
        raise SpecError(f"dropout probability must be in [0, 1), got {v.value:g}", v.span)


def unit_widths(unit: ast.Unit) -> tuple[int, int]:
    """(cardinality, base width) of a unit statement: 1 and 64 unless it says otherwise."""
    base = unit.base_width.value if unit.base_width else 64 * (unit.width_factor.value if unit.width_factor else 1)
    return (unit.cardinality.value if unit.cardinality else 1), base


def check_shortcut(sc: ast.Shortcut) -> None:
    for v, what in ((sc.scale, "shortcut scale"), (sc.residual_scale, "residual scale")):
        if v is not None and not math.isfinite(v.value):
            raise SpecError(f"{what} must be a finite number", v.span)
    if sc.dropout is not None:
        check_probability(sc.dropout)
    kind = SHORTCUT_KINDS[sc.kind]
    if kind.same is None and kind.changes is None:
        for v, word in ((sc.scale, "scale"), (sc.residual_scale, "residual"), (sc.gate, "gate"),
                        (sc.dropout, "dropout"), (sc.projection_bn, "projection-bn")):
            if v is not None:
                raise SpecError(f"'{word}' needs a shortcut, but this is 'shortcut none' (a plain net)", v.span,
                                hint="use 'shortcut A' or 'shortcut B' to keep the shortcut and modify it")
    for v, word in ((sc.projection_bn, "projection-bn"), (sc.avg_down, "avg-down")):
        if not builds(kind, "projection") and v is not None:
            raise SpecError(f"shortcut {sc.kind} has no projection, so '{word}' means nothing here", v.span,
                            hint="'avg-down' and 'projection-bn' change the 1x1 projection of shortcut B or C")
