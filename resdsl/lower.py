"""Resolved spec -> IR graph: expand the stem, every stage's units with their shortcuts and orders, the head."""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import syntax as ast
from .errors import SpecError
from .ir import GraphBuilder
from .resolve import ResolvedSpec, stage_setting

MAX_CHANNELS = 1 << 16
MAX_SPATIAL = 1 << 16
MAX_UNITS = 5000
MAX_CLASSES = 10_000_000
PRE_ORDERS = ("preact", "relu-preact")
# The stem's pooling module: torchvision's `maxpool` for a max pool. An average pool cannot be `avgpool`, the
# head's global pool in torchvision (and here); it is `pool1`, the stem pool's name in [R]'s released Caffe
# models. Pools hold no weights, so no state_dict key depends on either name.
STEM_POOL_NAMES = {"max": "maxpool", "avg": "pool1"}


@dataclass
class _Ctx:
    """What the unit being built needs to know about its place in the network."""

    first_unit: bool
    stem_activated: bool
    init: ast.Init


def _check_range(v: ast.Value, lo, hi, what: str) -> None:
    if not lo <= v.value <= hi:
        raise SpecError(f"{what} must be between {lo} and {hi}, got {v.value}", v.span)


def lower(r: ResolvedSpec):
    """Build the IR DiGraph for a resolved spec (shapes and costs are added by later passes)."""
    s = r.settings
    inp: ast.Input = s["input"]
    _check_range(inp.channels, 1, MAX_CHANNELS, "input channels")
    _check_range(inp.height, 1, MAX_SPATIAL, "input height")
    _check_range(inp.width, 1, MAX_SPATIAL, "input width")
    stages: ast.Stages = s["stages"]
    total_units = 0
    for e in stages.entries:
        _check_range(e.width, 1, MAX_CHANNELS, "stage width")
        _check_range(e.units, 1, MAX_UNITS, "units per stage")
        _check_range(e.stride, 1, 64, "stage stride")
        total_units += e.units.value
    if total_units > MAX_UNITS:
        raise SpecError(f"the network has {total_units} units; resdsl builds at most {MAX_UNITS}", stages.span)
    init: ast.Init = s["init"]
    shape = (inp.channels.value, inp.height.value, inp.width.value)
    b = GraphBuilder(
        name=s["network"].name,
        input=shape,
        order=s["order"].name,
        init={"scheme": init.scheme, "fan": init.fan, "zero_last_bn": init.zero_last_bn},
        recipe=r.recipe,
        files=list(r.files),
        stages=[],
    )
    x = b.add("input", "input", [], inp.span, group="stem", shape_declared=shape)
    first_order = stage_setting(r, 1, "order").name
    x, ch, activated = _build_stem(b, x, s["stem"], inp.channels.value, first_order)
    last_order = first_order
    for i, entry in enumerate(stages.entries, start=1):
        unit = stage_setting(r, i, "unit")
        order = stage_setting(r, i, "order")
        shortcut = stage_setting(r, i, "shortcut")
        _check_unit(unit)
        _check_shortcut(shortcut)
        b.g.graph["stages"].append({
            "name": f"layer{i}", "index": i, "width": entry.width.value, "units": entry.units.value,
            "stride": entry.stride.value, "unit": unit.kind, "order": order.name, "shortcut": shortcut.kind,
            "span": entry.span,
        })
        for j in range(entry.units.value):
            ctx = _Ctx(first_unit=(i == 1 and j == 0), stem_activated=activated, init=init)
            stride = entry.stride.value if j == 0 else 1
            x, ch = _build_unit(b, x, ch, f"layer{i}.{j}.", i, entry, stride, unit, order, shortcut, ctx)
        last_order = order.name
    _build_head(b, x, ch, s["head"], last_order)
    return b.g


def _check_unit(unit: ast.Unit) -> None:
    if unit.expansion is not None:
        _check_range(unit.expansion, 1, 64, "bottleneck expansion")


def _check_shortcut(sc: ast.Shortcut) -> None:
    for v, what in ((sc.scale, "shortcut scale"), (sc.residual_scale, "residual scale")):
        if v is not None and not math.isfinite(v.value):
            raise SpecError(f"{what} must be a finite number", v.span)
    if sc.dropout is not None and not 0 <= sc.dropout.value < 1:
        raise SpecError(f"dropout probability must be in [0, 1), got {sc.dropout.value:g}", sc.dropout.span)
    if sc.kind == "none":
        for v, word in ((sc.scale, "scale"), (sc.gate, "gate"), (sc.dropout, "dropout"),
                        (sc.projection_bn, "projection-bn")):
            if v is not None:
                raise SpecError(f"'{word}' needs a shortcut, but this is 'shortcut none' (a plain net)", v.span,
                                hint="use 'shortcut A' or 'shortcut B' to keep the shortcut and modify it")
    if sc.kind in ("A", "identity") and sc.projection_bn is not None:
        raise SpecError(f"shortcut {sc.kind} has no projection, so 'projection-bn' means nothing here",
                        sc.projection_bn.span)


def window_padding(k: int, stride: int) -> int:
    """Zero padding on each side of a k x k convolution or pooling window with this stride (docs/language.md,
    "Feature-map sizes"). An odd window is centred on its pixel: k // 2, as in torchvision (7x7 -> 3, 3x3 -> 1,
    1x1 -> 0), so an H-pixel map gives ceil(H / stride). An even window has no centre pixel: (k - stride) // 2,
    at least 0, so windows that do not overlap (k == stride: a 4x4/4 "patchify" stem as in ConvNeXt, a 2x2/2
    pool as in VGG) tile the map unpadded, giving floor(H / stride), and a 4x4/2 window gets 1."""
    return k // 2 if k % 2 else max(0, (k - stride) // 2)


def _conv(b, name, x, cin, cout, k, stride, span, group, init, main=False, bias=False, **extra) -> str:
    pad = window_padding(k, stride)
    return b.add(name, "conv", [x], span, group=group, in_channels=cin, out_channels=cout, kernel=(k, k),
                 stride=stride, padding=(pad, pad), bias=bias, main=main, init=f"he-{init.fan}", **extra)


def _build_stem(b: GraphBuilder, x: str, stem: ast.Stem, in_ch: int, order: str):
    """Stem ops; returns (last node, channels, whether its output is already BN-ReLU activated)."""
    _check_range(stem.width, 1, MAX_CHANNELS, "stem width")
    sp = stem.span
    if stem.kind == "imagenet":
        k, stride, pool = 7, 2, ("max", 3, 2)
    elif stem.kind == "cifar":
        k, stride, pool = 3, 1, None
    else:
        kh, kw = stem.kernel.value
        if kh != kw:
            raise SpecError("only square stem kernels are supported", stem.kernel.span)
        _check_range(ast.Value(kh, stem.kernel.span), 1, 15, "stem kernel")
        _check_range(stem.stride, 1, 16, "stem stride")
        k, stride = kh, stem.stride.value
        pool = None
        if stem.pool is not None:
            pk, pk2 = stem.pool.kernel.value
            if pk != pk2:
                raise SpecError("only square pooling windows are supported", stem.pool.kernel.span)
            _check_range(ast.Value(pk, stem.pool.kernel.span), 1, 15, "pool window")
            _check_range(stem.pool.stride, 1, 16, "pool stride")
            pool = (stem.pool.kind, pk, stem.pool.stride.value)
    w = stem.width.value
    init = ast.Init(sp)
    x = _conv(b, "conv1", x, in_ch, w, k, stride, sp, "stem", init, main=True, sym={"in_channels": "in_channels"})
    if pool is not None or order not in PRE_ORDERS:
        x = b.add("bn1", "bn", [x], sp, group="stem", channels=w)
        x = b.add("relu", "relu", [x], sp, group="stem")
        activated = True
    else:
        if order == "relu-preact":
            x = b.add("bn1", "bn", [x], sp, group="stem", channels=w)
        activated = False
    if pool is not None:
        kind, pk, ps = pool
        pad = window_padding(pk, ps)
        x = b.add(STEM_POOL_NAMES[kind], f"{kind}pool", [x], stem.pool.span if stem.pool else sp, group="stem",
                  kernel=(pk, pk), stride=ps, padding=(pad, pad))
    return x, w, activated


def _unit_convs(unit: ast.Unit, width: int, stride: int):
    """(kernel, out_channels, stride, out_channels role, stride role) of each conv on the residual path.

    The roles name the unit constructor argument each number comes from (see ``sym`` node attributes)."""
    if unit.kind == "basic":
        return [(3, width, stride, "width", "stride"), (3, width, 1, "width", None)]
    if unit.kind == "single":
        return [(3, width, stride, "width", "stride")]
    e = unit.expansion.value if unit.expansion else 4
    at = unit.stride_at.value if unit.stride_at else "1x1"
    (s1, r1), (s3, r3) = ((stride, "stride"), (1, None)) if at == "1x1" else ((1, None), (stride, "stride"))
    return [(1, width, s1, "width", r1), (3, width, s3, "width", r3), (1, width * e, 1, "out_channels", None)]


def _build_unit(b, x, in_ch, p, stage, entry, stride, unit, order, sc, ctx):
    """One residual unit: residual path, shortcut path, their merge, and the post-merge activation."""
    sp = entry.span
    group = f"layer{stage}"
    convs = _unit_convs(unit, entry.width.value, stride)
    out_ch = convs[-1][1]
    extra_sym = {"in_channels": in_ch, "width": entry.width.value, "out_channels": out_ch, "stride": stride}
    o = order.name
    changes = stride != 1 or in_ch != out_ch
    projection = sc.kind == "C" or (sc.kind == "B" and changes)
    pad = sc.kind == "A" and changes
    has_shortcut = sc.kind != "none"
    extra = {"stage": stage, "unit": int(p.split(".")[1]), "unit_args": extra_sym, "unit_kind": unit.kind}

    def add(name, op, ins, span=sp, **kw):
        return b.add(p + name, op, ins, span, group=group, **extra, **kw)

    # pre-activation placement ([I]: first unit activates before the split; projections take activated input)
    split = x
    pre_mode = None
    if o in PRE_ORDERS:
        if ctx.first_unit and ctx.stem_activated:
            pre_mode = "none"
        elif ctx.first_unit or projection:
            pre_mode = "shared"
        else:
            pre_mode = "residual"
        if pre_mode == "shared":
            if o == "preact":
                split = add("bn1", "bn", [split], path="shared", channels=in_ch, sym={"channels": "in_channels"})
            split = add("relu1", "relu", [split], path="shared")

    # residual path F
    h = split
    cin, cin_role = in_ch, "in_channels"
    last_bn = None
    for k, (kernel, cout, s, cout_role, s_role) in enumerate(convs, start=1):
        if o in PRE_ORDERS and not (k == 1 and pre_mode in ("shared", "none")):
            if o == "preact":
                h = last_bn = add(f"bn{k}", "bn", [h], path="residual", channels=cin, sym={"channels": cin_role})
            h = add(f"relu{k}", "relu", [h], path="residual")
        sym = {"in_channels": cin_role, "out_channels": cout_role}
        if s_role:
            sym["stride"] = s_role
        h = _conv(b, p + f"conv{k}", h, cin, cout, kernel, s, sp, group, ctx.init, main=True,
                  path="residual", sym=sym, **extra)
        last = k == len(convs)
        if o == "relu-preact" or o in ("post", "relu-before-add") or (o == "bn-after-add" and not last):
            h = last_bn = add(f"bn{k}", "bn", [h], path="residual", channels=cout, sym={"channels": cout_role})
        if o in ("post", "bn-after-add") and not last:
            h = add(f"relu{k}", "relu", [h], path="residual")
        if o == "relu-before-add":
            h = add(f"relu{k}", "relu", [h], path="residual")
        cin, cin_role = cout, cout_role
    if ctx.init.zero_last_bn and last_bn is not None:
        b.g.nodes[last_bn]["zero_init"] = True
    io_sym = {"in_channels": "in_channels", "out_channels": "out_channels", "stride": "stride"}
    if sc.residual_scale is not None:
        h = add("residual_scale", "scale", [h], span=sc.span, path="residual", factor=sc.residual_scale.value)

    if not has_shortcut:
        y = h
    else:
        # shortcut path h(x)
        t = split
        if pad:
            t = add("shortcut_pad", "pad", [t], span=sp, path="shortcut", in_channels=in_ch, out_channels=out_ch,
                    stride=stride, origin=sc.span, sym=io_sym)
        elif projection:
            t = _conv(b, p + "downsample.0", t, in_ch, out_ch, 1, stride, sp, group, ctx.init, path="shortcut",
                      origin=sc.span, sym=io_sym, **extra)
            proj_bn = sc.projection_bn.value if sc.projection_bn else o not in ("preact", "bn-after-add")
            if proj_bn:
                t = add("downsample.1", "bn", [t], path="shortcut", channels=out_ch, sym={"channels": "out_channels"})
        if sc.dropout is not None:
            t = add("shortcut_dropout", "dropout", [t], span=sc.span, path="shortcut", p=sc.dropout.value)
        if sc.scale is not None:
            t = add("shortcut_scale", "scale", [t], span=sc.span, path="shortcut", factor=sc.scale.value)
        ins = [h, t]
        gate_kind = None
        if sc.gate is not None:
            g = _conv(b, p + "gate", split, in_ch, out_ch, 1, stride, sc.gate.span, group, ctx.init, bias=True,
                      path="gate", bias_init=sc.gate.bias.value, sym=io_sym, **extra)
            g = add("gate_sigmoid", "sigmoid", [g], span=sc.gate.span, path="gate")
            ins.append(g)
            gate_kind = sc.gate.kind
        y = add("add", "add", ins, path="merge", gate=gate_kind, origin=sc.span)

    # after the merge
    if o == "bn-after-add":
        y = add("bn_out", "bn", [y], path="merge", channels=out_ch, sym={"channels": "out_channels"})
    if o in ("post", "bn-after-add"):
        y = add("relu_out", "relu", [y], path="merge")
    return y, out_ch


def _build_head(b, x, ch, head: ast.Head, last_order: str) -> None:
    sp = head.span
    if last_order == "preact":
        x = b.add("final_bn", "bn", [x], sp, group="head", channels=ch)
    if last_order in PRE_ORDERS:
        x = b.add("final_relu", "relu", [x], sp, group="head")
    x = b.add("avgpool", "global_avgpool", [x], sp, group="head")
    if head.classes is not None:
        _check_range(head.classes, 1, MAX_CLASSES, "number of classes")
        x = b.add("fc", "fc", [x], head.classes.span, group="head", in_features=ch,
                  out_features=head.classes.value, bias=True, main=True, init="torch-default",
                  sym={"out_features": "num_classes"})
    b.add("output", "output", [x], sp, group="head")
