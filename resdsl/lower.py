"""Resolved spec -> IR graph: expand the stem, every stage's units with their shortcuts and orders, the head."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import syntax as ast
from .errors import Span, SpecError
from .ir import GraphBuilder
from .checks import (MAX_CHANNELS, MAX_CLASSES, MAX_STEM_CONVS, check_drop_path, check_ends, check_probability,
                     check_range, check_shortcut, check_sizes, check_unit, unit_widths)
from .resolve import ResolvedSpec, stage_setting
from .units import DROP_RULES, ORDERS, PATHS, SHORTCUT_KINDS, UNIT_KINDS, plan_convs, projection_bn, signature

# The stem's pooling module: torchvision's `maxpool` for a max pool. An average pool cannot be `avgpool`, the
# head's global pool in torchvision (and here); it is `pool1`, the stem pool's name in [R]'s released Caffe
# models. Pools hold no weights, so no state_dict key depends on either name.
STEM_POOL_NAMES = {"max": "maxpool", "avg": "pool1"}
STEM_NAMES = {"bn": "bn1", "relu": "relu"}  # torchvision's


@dataclass
class _Ctx:
    """What the unit being built needs to know about its place in the network."""

    first_unit: bool
    stem_activated: bool
    init: ast.Init
    first_raw: ast.Value | None = None  # `order ... first-shortcut raw`: the first unit does not activate before
    # the split
    # `drop-path`: F ends in a drop_path node, dropping per "sample" or per "batch" (its probability is set once all
    # units are built)
    drop_path: str | None = None


def lower(r: ResolvedSpec):
    """Build the IR DiGraph for a resolved spec (shapes and costs are added by later passes)."""
    s = r.settings
    inp: ast.Input = s["input"]
    stages: ast.Stages = s["stages"]
    check_sizes(inp, stages)
    init: ast.Init = s["init"]
    shape = (inp.channels.value, inp.height.value, inp.width.value)
    b = GraphBuilder(
        name=s["network"].name,
        input=shape,
        order=s["order"].name,
        init={"scheme": init.scheme, "fan": init.fan, "zero_last_bn": init.zero_last_bn,
              "zero_last": init.zero_last},
        recipe=r.recipe,
        files=list(r.files),
        stages=[],
        units=[],  # one record per unit, in network order (units.py)
        modules={},  # the stem's nn.Sequential modules: {name: member nodes} (timm's deep stem `conv1`)
        layer_count=s["layer_count"].convention.value if "layer_count" in s else "resnet",  # units.LAYER_COUNTS
        drop_path=None,  # `drop-path`: {"rate", "rule", "per"}; each unit's drop_path node has its drop_prob
    )
    x = b.add("input", "input", [], inp.span, part="stem", shape_declared=shape)
    first_order = stage_setting(r, 1, "order").name
    x, ch, activated = _build_stem(b, x, s["stem"], inp.channels.value, first_order)
    ends = check_ends(r, activated)
    last_order = first_order
    for i, entry in enumerate(stages.entries, start=1):
        unit = stage_setting(r, i, "unit")
        order = stage_setting(r, i, "order")
        shortcut = stage_setting(r, i, "shortcut")
        check_unit(unit)
        check_shortcut(shortcut)
        b.g.graph["stages"].append({
            "name": f"layer{i}", "index": i, "width": entry.width.value, "units": entry.units.value,
            "stride": entry.stride.value, "unit": unit.kind, "order": order.name, "shortcut": shortcut.kind,
            "span": entry.span, "said": [st.span for st in (unit, order, shortcut)  # where the spec says them
                                         if not (st is s.get("order") and "order" in r.implied)],
        })
        for j in range(entry.units.value):
            ctx = _Ctx(first_unit=(i == 1 and j == 0), stem_activated=activated, init=init,
                       first_raw=ends.first_shortcut if ends.first_shortcut and ends.first_shortcut.value == "raw"
                       else None,
                       drop_path=s["drop_path"].per if "drop_path" in s else None)
            stride = entry.stride.value if j == 0 else 1
            x, ch = _build_unit(b, x, ch, i, j, entry, stride, unit, order.name, shortcut, ctx)
        last_order = order.name
    if "drop_path" in s:
        _set_drop_path(b, s["drop_path"])
    final = ends.final_activation is None or ends.final_activation.value
    _build_head(b, x, ch, s["head"], ORDERS[last_order].before if final else ())
    return b.g


def _set_drop_path(b: GraphBuilder, dp: ast.DropPath) -> None:
    """Stochastic depth: unit l of L drops F with its rule's probability; the drop_path node of each unit has it."""
    check_drop_path(dp)
    records = b.g.graph["units"]
    plain = next((r for r in records if r["shortcut"] is None), None)
    if plain is not None:
        raise SpecError(f"drop-path drops F of a residual unit, but stage {plain['stage']} has no shortcut (a plain "
                        "net's unit is all of its path)", dp.span, hint="use 'shortcut A' or 'B'")
    rule = DROP_RULES[dp.rule]
    for depth, record in enumerate(records, start=1):
        b.g.nodes[record["prefix"] + "drop_path"]["drop_prob"] = rule.p(dp.rate.value, depth, len(records))
    b.g.graph["drop_path"] = {"rate": dp.rate.value, "rule": dp.rule, "per": dp.per}


def window_padding(k: int, stride: int) -> int:
    """Zero padding on each side of a k x k convolution or pooling window with this stride (docs/language.md,
    "Feature-map sizes"). An odd window is centred on its pixel: k // 2, as in torchvision (7x7 -> 3, 3x3 -> 1,
    1x1 -> 0), so an H-pixel map gives ceil(H / stride). An even window has no centre pixel: (k - stride) // 2,
    at least 0, so windows that do not overlap (k == stride: a 4x4/4 "patchify" stem as in ConvNeXt, a 2x2/2
    pool as in VGG) tile the map unpadded, giving floor(H / stride), and a 4x4/2 window gets 1."""
    return k // 2 if k % 2 else max(0, (k - stride) // 2)


def _conv(b, name, x, cin, cout, k, stride, span, part, init, main=False, bias=False, **extra) -> str:
    pad = window_padding(k, stride)
    return b.add(name, "conv", [x], span, part=part, in_channels=cin, out_channels=cout, kernel=(k, k),
                 stride=stride, padding=(pad, pad), bias=bias, main=main, init=f"he-{init.fan}", **extra)


def _stem_convs(stem: ast.Stem) -> tuple[list[tuple[int, int, int, Span]], tuple | None]:
    """The stem's convolutions as (kernel, stride, width, span) and its pool (kind, window, stride, span), with
    the named stems spelled out: `imagenet` [R]'s 7x7/2 conv and 3x3/2 max pool, `cifar` [R]'s 3x3 conv, `deep`
    ResNet-C's three 3x3 convs (He et al. 2019, "Bag of Tricks"; timm's `stem_type='deep'`: width/2, width/2,
    width) and the max pool."""
    w, sp = stem.width.value, stem.span
    if stem.kind == "imagenet":
        return [(7, 2, w, sp)], ("max", 3, 2, sp)
    if stem.kind == "cifar":
        return [(3, 1, w, sp)], None
    if stem.kind == "deep":
        if w % 2 or w < 2:
            raise SpecError(f"a deep stem's width must be even (its first two convolutions have half of it), got {w}",
                            stem.width.span)
        return [(3, 2, w // 2, sp), (3, 1, w // 2, sp), (3, 1, w, sp)], ("max", 3, 2, sp)
    if len(stem.convs) > MAX_STEM_CONVS:
        raise SpecError(f"the stem has {len(stem.convs)} convolutions; resdsl builds at most {MAX_STEM_CONVS}",
                        stem.convs[MAX_STEM_CONVS].span, hint="deeper stacks of layers belong in 'stages'")
    convs = []
    for c in stem.convs:
        kh, kw = c.kernel.value
        if kh != kw:
            raise SpecError("only square stem kernels are supported", c.kernel.span)
        check_range(ast.Value(kh, c.kernel.span), 1, 15, "stem kernel")
        check_range(c.stride, 1, 16, "stem stride")
        check_range(c.width, 1, MAX_CHANNELS, "stem width")
        convs.append((kh, c.stride.value, c.width.value, c.span))
    pool = None
    if stem.pool is not None:
        pk, pk2 = stem.pool.kernel.value
        if pk != pk2:
            raise SpecError("only square pooling windows are supported", stem.pool.kernel.span)
        check_range(ast.Value(pk, stem.pool.kernel.span), 1, 15, "pool window")
        check_range(stem.pool.stride, 1, 16, "pool stride")
        pool = (stem.pool.kind, pk, stem.pool.stride.value, stem.pool.span)
    return convs, pool


def _build_stem(b: GraphBuilder, x: str, stem: ast.Stem, in_ch: int, order: str):
    """Stem ops; returns (last node, channels, whether its output is already BN-ReLU activated).

    One convolution is torchvision's `conv1`; several are timm's `conv1` Sequential (conv1.0, conv1.1, ...) with
    BN-ReLU between them, so timm's deep-stem weights load."""
    check_range(stem.width, 1, MAX_CHANNELS, "stem width")
    convs, pool = _stem_convs(stem)
    init = ast.Init(stem.span)
    members: list[str] = []

    def name() -> str:
        return f"conv1.{len(members)}" if len(convs) > 1 else "conv1"

    ch = in_ch
    for i, (k, stride, w, sp) in enumerate(convs):
        sym = {"in_channels": "in_channels"} if i == 0 else {}
        # the stem is one layer however many convolutions it has, as ResNet-C/D's names count it (resnet50d: 50)
        x = _conv(b, name(), x, ch, w, k, stride, sp, "stem", init, main=i == len(convs) - 1, sym=sym)
        members.append(x)
        if i < len(convs) - 1:  # inside the stem, each conv but the last is followed by BN-ReLU
            for op in ("bn", "relu"):
                x = b.add(name(), op, [x], sp, part="stem", **({"channels": w} if op == "bn" else {}))
                members.append(x)
        ch = w
    if len(convs) > 1:
        b.g.graph["modules"] = {"conv1": members}
    # the stem's last conv is followed by what follows a conv of F in the first stage's order ([I]: a
    # pre-activation network leaves the activation to its first unit), except that a pool always pools an
    # activated map
    placed = ("bn", "relu") if pool is not None else ORDERS[order].after
    sp = stem.span
    for op in placed:
        x = b.add(STEM_NAMES[op], op, [x], sp, part="stem", **({"channels": ch} if op == "bn" else {}))
    activated = "relu" in placed
    if pool is not None:
        kind, pk, ps, psp = pool
        pad = window_padding(pk, ps)
        x = b.add(STEM_POOL_NAMES[kind], f"{kind}pool", [x], psp, part="stem", kernel=(pk, pk), stride=ps,
                  padding=(pad, pad))
    return x, ch, activated


@dataclass
class _Unit:
    """One unit being lowered: where its nodes go and what each of them carries."""

    b: GraphBuilder
    record: dict  # the unit record (see units.py), filled as the unit is built
    span: Span
    init: ast.Init
    attrs: dict = field(default_factory=dict)  # part, stage, unit: on every node of the unit

    def add(self, name: str, op: str, ins: list[str], span: Span | None = None, **kw) -> str:
        """Append one node of this unit, named under its prefix ('layer2.0.' + name)."""
        n = self.b.add(self.record["prefix"] + name, op, ins, span or self.span, **self.attrs, **kw)
        self.record["nodes"].append(n)
        return n

    def conv(self, name: str, x: str, cin: int, cout: int, k: int, stride: int, span: Span | None = None,
             **kw) -> str:
        """Append a k x k convolution of this unit (He init, padding by window_padding)."""
        pad = window_padding(k, stride)
        return self.add(name, "conv", [x], span, in_channels=cin, out_channels=cout, kernel=(k, k), stride=stride,
                        padding=(pad, pad), bias=kw.pop("bias", False), main=kw.pop("main", False),
                        init=f"he-{self.init.fan}", **kw)

    def norm_act(self, op: str, name: str, x: str, path: str, channels: int, role: str) -> str:
        """Append a BN or ReLU that an order places; a BN's channels come from the unit argument `role`."""
        if op == "bn":
            return self.add(name, "bn", [x], path=path, channels=channels, sym={"channels": role})
        return self.add(name, op, [x], path=path)


_IO_SYM = {"in_channels": "in_channels", "out_channels": "out_channels", "stride": "stride"}


def _build_unit(b, x, in_ch, stage: int, index: int, entry, stride, unit, order_word, sc, ctx):
    """One residual unit: residual path F, shortcut path h, their merge, the order's ops after it; its record."""
    kind, order, shortcut = UNIT_KINDS[unit.kind], ORDERS[order_word], SHORTCUT_KINDS[sc.kind]
    convs = plan_convs(kind, entry.width.value, stride, unit.expansion and unit.expansion.value,
                       unit.stride_at and unit.stride_at.value, *unit_widths(unit))
    out_ch = convs[-1].out_channels
    width = next((c.out_channels for c in convs if c.out_role == "width"), entry.width.value)  # inner width
    if width < 1:
        cardinality, base = unit_widths(unit)
        raise SpecError(f"a stage of width {entry.width.value} gives this {unit.kind} unit no channels inside: "
                        f"int({entry.width.value} x {base} / 64) x {cardinality} = 0", entry.width.span,
                        hint=f"the width must be at least {-(-64 // base)} for base width {base}")
    path = built = shortcut.path(stride != 1 or in_ch != out_ch)  # drawn and named as `path`, built from `built`
    if path == "projection" and sc.avg_down is not None:
        # ResNet-D pools where the unit strides; elsewhere it is a plain projection under timm's names
        # (downsample.1 and .2, nn.Identity at downsample.0)
        built, path = "avg-projection", "avg-projection" if stride > 1 else "projection"
    record = {"stage": stage, "index": index, "prefix": f"layer{stage}.{index}.", "kind": kind.word,
              "order": order.word, "option": shortcut.word, "shortcut": path, "nodes": [], "modules": {},
              "args": {"in_channels": in_ch, "width": width, "out_channels": out_ch, "stride": stride}}
    u = _Unit(b, record, entry.span, ctx.init, {"part": f"layer{stage}", "stage": stage, "unit": index})
    # [I]: a pre-activation network's first unit (unless the stem already activated its output) and its projection
    # units activate x once before it splits into the two paths; the shortcut then takes the activated x
    # (`first-shortcut raw`: the first unit is like every other, its identity shortcut takes the stem's output)
    skip_first = ctx.first_unit and ctx.stem_activated  # the stem's BN-ReLU already activated it
    projects = path is not None and PATHS[path].projects
    if ctx.first_unit and ctx.first_raw and projects:
        raise SpecError("'first-shortcut raw' has nothing to do: the first unit projects, and a projection shortcut "
                        "takes the activated input ([I])", ctx.first_raw.span,
                        hint=f"the first unit goes from {in_ch} to {out_ch} channels"
                             + (f" with stride {stride}" if stride > 1 else "") + "; leave 'first-shortcut' out")
    shared = order.pre and not skip_first and (ctx.first_unit and not ctx.first_raw or projects)
    skip_first = skip_first or shared
    split = x
    if shared:
        for op in order.before:
            split = u.norm_act(op, f"{op}1", split, "shared", in_ch, "in_channels")
    se = unit.se and (unit.se.at.value if unit.se.at else "standard")
    h = _squeeze_excite(u, split, in_ch, "in_channels", unit.se, se) if se == "pre" else split
    h = _residual(u, h, in_ch, convs, order, skip_first, unit.dropout)
    if se == "standard":
        h = _squeeze_excite(u, h, out_ch, "out_channels", unit.se, se)
    if sc.residual_scale is not None:
        h = u.add("residual_scale", "scale", [h], span=sc.span, path="residual", factor=sc.residual_scale.value)
    if ctx.drop_path and path is not None:  # its probability is set when every unit is built (_set_drop_path)
        per_batch = {"per_batch": True} if ctx.drop_path == "batch" else {}
        h = u.add("drop_path", "drop_path", [h], path="residual", drop_prob=0.0, **per_batch)
    y = h if path is None else _merge(u, h, split, in_ch, out_ch, stride, built, order, sc)
    for op in order.after_add:
        y = u.norm_act(op, f"{op}_out", y, "merge", out_ch, "out_channels")
    if se == "post":
        y = _squeeze_excite(u, y, out_ch, "out_channels", unit.se, se)
    record["signature"] = signature(b.g, record)
    b.g.graph["units"].append(record)
    return y, out_ch


def _squeeze_excite(u: _Unit, x: str, channels: int, role: str, se: ast.SqueezeExcite, at: str) -> str:
    """A squeeze-excitation block (timm's module name `se`) over ``channels``, the unit argument ``role``, at its
    place (units.SE_PLACES): after the addition it is on the merged path."""
    path = "merge" if at == "post" else "residual"
    return u.add("se", "se", [x], span=se.span, path=path, channels=channels, ratio=se.ratio.value,
                 divisor=se.divisor.value if se.divisor else 1, at=at, sym={"channels": role})


def _residual(u: _Unit, x: str, in_ch: int, convs, order, skip_first: bool, dropout: ast.Value | None) -> str:
    """F: each convolution with the order's ops placed before and after it, and a Wide ResNet's dropout right before
    each convolution but the first (after its activation); F's last layer set to zero if asked."""
    cin, cin_role = in_ch, "in_channels"
    for k, c in enumerate(convs, start=1):
        for op in () if k == 1 and skip_first else order.before:
            x = u.norm_act(op, f"{op}{k}", x, "residual", cin, cin_role)
        if dropout is not None and k > 1:
            x = u.add(f"dropout{k}", "dropout", [x], span=dropout.span, path="residual", p=dropout.value)
        sym = {"in_channels": cin_role, "out_channels": c.out_role, **({"stride": "stride"} if c.stride_role else {})}
        x = u.conv(f"conv{k}", x, cin, c.out_channels, c.kernel, c.stride, main=True, path="residual", sym=sym,
                   **({"groups": c.groups} if c.groups > 1 else {}))
        for op in order.after_last if k == len(convs) else order.after:
            x = u.norm_act(op, f"{op}{k}", x, "residual", c.out_channels, c.out_role)
        cin, cin_role = c.out_channels, c.out_role
    if u.init.zero_last_bn or u.init.zero_last:
        _zero_last_layer(u, x, order.word)
    return x


def _zero_last_layer(u: _Unit, last: str, order: str) -> None:
    """`init zero-last`: F's last layer starts at zero, a BN's gamma (Goyal et al.) or a convolution's weights
    (timm's zero_init_last of pre-activation units), so each unit starts as its shortcut alone; `zero-last-bn`: F's
    last BN alone. Where a ReLU ends F (or follows that BN), it would see 0, where its gradient is 0, and F would
    never train: refused."""
    ends = u.b.g.nodes[last]["op"]
    if ends == "bn" or ends == "conv" and u.init.zero_last:
        u.b.g.nodes[last]["zero_init"] = True
        return
    word = "zero-last-bn" if u.init.zero_last_bn else "zero-last"
    stage, overridden = u.record["stage"], order != u.b.g.graph["order"]  # `stage N: order ...`
    where = f"under order {order}" + (f" (stage {stage}'s)" if overridden else "") + f", {u.record['prefix'][:-1]}'s F"
    if ends == "relu":
        raise SpecError(f"'{word}' would stop F from ever training: {where} ends in a ReLU, which would see 0, where "
                        "its gradient is 0", u.init.span, hint="no layer of this F can start at zero; leave it out"
                        + (f", or give stage {stage} another order" if overridden else ""))
    bns = [n for n in u.record["nodes"] if u.b.g.nodes[n]["op"] == "bn" and u.b.g.nodes[n].get("path") == "residual"]
    why = ("and the ReLU after its last BN would see 0, where its gradient is 0, so F would never train" if bns else
           "and holds no BN")
    raise SpecError(f"'zero-last-bn' does not fit this F: {where} ends in a convolution, {why}", u.init.span,
                    hint="'zero-last' zeroes F's last layer, whichever it is: that convolution here (timm's "
                         "zero_init_last)")


def _merge(u: _Unit, h: str, split: str, in_ch: int, out_ch: int, stride: int, path: str, order, sc) -> str:
    """The shortcut h(x) ([I] Fig. 2's dropout, scaling and gating on it) and its addition to F."""
    t = split
    with_bn = sc.projection_bn.value if sc.projection_bn else projection_bn(order)
    conv_stride = stride
    for name, op in PATHS[path].ops:
        if op == "bn" and not with_bn or op == "avgpool" and stride == 1:
            continue
        if op == "avgpool":  # ResNet-D: the pool strides (its window as large as the stride), the conv does not
            t = u.add(name, "avgpool", [t], path="shortcut", kernel=(stride, stride), stride=stride, padding=(0, 0),
                      ceil_mode=True, origin=sc.span, sym={"kernel": "stride", "stride": "stride"})
            conv_stride = 1
        elif op == "conv":
            sym = _IO_SYM if conv_stride == stride else {"in_channels": "in_channels", "out_channels": "out_channels"}
            t = u.conv(name, t, in_ch, out_ch, 1, conv_stride, path="shortcut", origin=sc.span, sym=sym)
        elif op == "bn":
            t = u.add(name, "bn", [t], path="shortcut", channels=out_ch, sym={"channels": "out_channels"})
        else:
            t = u.add(name, op, [t], path="shortcut", in_channels=in_ch, out_channels=out_ch, stride=stride,
                      origin=sc.span, sym=_IO_SYM)
        if PATHS[path].module:
            u.record["modules"].setdefault(PATHS[path].module, []).append(t)
    if sc.dropout is not None:
        t = u.add("shortcut_dropout", "dropout", [t], span=sc.span, path="shortcut", p=sc.dropout.value,
                  keep=1 - sc.dropout.value)  # [I]'s expectation 1 - p; see the dropout op
    if sc.scale is not None:
        t = u.add("shortcut_scale", "scale", [t], span=sc.span, path="shortcut", factor=sc.scale.value)
    ins = [h, t]
    if sc.gate is not None:
        g = u.conv("gate", split, in_ch, out_ch, 1, stride, sc.gate.span, bias=True, path="gate",
                   bias_init=sc.gate.bias.value, sym=_IO_SYM)
        ins.append(u.add("gate_sigmoid", "sigmoid", [g], span=sc.gate.span, path="gate"))
    return u.add("add", "add", ins, path="merge", gate=sc.gate.kind if sc.gate else None, origin=sc.span)


def _build_head(b, x, ch, head: ast.Head, final_ops: tuple[str, ...]) -> None:
    sp = head.span
    for op in final_ops:  # a pre-activation network activates its last unit's output here ([I])
        x = b.add(f"final_{op}", op, [x], sp, part="head", **({"channels": ch} if op == "bn" else {}))
    x = b.add("avgpool", "global_avgpool", [x], sp, part="head")
    if head.dropout is not None:
        check_probability(head.dropout)
        x = b.add("dropout", "dropout", [x], head.dropout.span, part="head", p=head.dropout.value)
    if head.classes is not None:
        check_range(head.classes, 1, MAX_CLASSES, "number of classes")
        x = b.add("fc", "fc", [x], head.classes.span, part="head", in_features=ch,
                  out_features=head.classes.value, bias=True, main=True, init="torch-default",
                  sym={"out_features": "num_classes"})
    b.add("output", "output", [x], sp, part="head")
