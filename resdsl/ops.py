"""The op table: one record per IR op kind, holding everything each pass and backend needs to know about it.

The shape pass, the cost pass, the IR dump, the drawings and the PyTorch emitter are loops over ``OPS``; a new
op kind is one ``Op`` record here (and the lowering that places it), nothing else. Compiling never imports
torch: the PyTorch side of a record is source text.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import SpecError
from .units import se_hidden

# which input port of an `add` each edge feeds (GraphBuilder numbers a node's inputs in the order given)
PORT_RESIDUAL, PORT_SHORTCUT, PORT_GATE = 0, 1, 2


def shape_text(shape) -> str:
    """'64x56x56' for a shape tuple; '?' before the shape pass has run."""
    return "x".join(str(s) for s in shape) if shape is not None else "?"


def where(d: dict) -> str:
    """Where a node sits, in words for error messages: 'stage 2, unit 1', 'the stem', 'the head'."""
    if "stage" in d:
        return f"stage {d['stage']}, unit {d['unit'] + 1}"
    return {"stem": "the stem", "head": "the head"}.get(d.get("part"), "the network")


def out_size(n: int, k: int, stride: int, pad: int, ceil_mode: bool = False) -> int:
    """Output size of a convolution or pooling window along one axis, as PyTorch computes it (nn.Conv2d,
    nn.MaxPool2d, nn.AvgPool2d): floor((n + 2 * pad - k) / stride) + 1. A stride that does not divide n is no
    error: the windows that do not fit are dropped, as in PyTorch. With ``ceil_mode`` (ResNet-D's shortcut pool)
    a last, partial window is kept where it starts inside the padded map: ceil(n / 2) for a 2x2/2 pool."""
    if not ceil_mode:
        return (n + 2 * pad - k) // stride + 1
    size = -(-(n + 2 * pad - k) // stride) + 1
    return size - 1 if (size - 1) * stride >= n + pad else size


_HINTS = {"stem": "use a larger input, or a smaller kernel or stride in the stem"}


def _spatial(d: dict, h: int, w: int) -> tuple[int, int]:
    """(H, W) after the node's window; a map that vanishes (size < 1) is the only size error."""
    k, s, pad, ceil = d["kernel"], d["stride"], d["padding"], d.get("ceil_mode", False)
    oh, ow = out_size(h, k[0], s, pad[0], ceil), out_size(w, k[1], s, pad[1], ceil)
    if oh < 1 or ow < 1:
        raise SpecError(f"the feature map shrinks to nothing in {where(d)}: the {h}x{w} map padded by {pad[0]} "
                        f"is smaller than the {k[0]}x{k[1]}/{s} window", d["span"],
                        hint=_HINTS.get(d.get("part"),
                                        "use a larger input, fewer downsampling stages or smaller strides"))
    return oh, ow


def _window(d: dict) -> str:
    """'3x3/2' for a conv or pool window; the padding is named only where it is not the centred k // 2 (an even
    window, docs/language.md "Feature-map sizes")."""
    kh, kw = d["kernel"]
    pad = d["padding"][0]
    return f"{kh}x{kw}/{d['stride']}" + (f" pad {pad}" if pad != kh // 2 else "")


def _by_stride(d: dict) -> str:
    """', /2' in a drawing label where the op downsamples."""
    return f", /{d['stride']}" if d["stride"] > 1 else ""


# ---- shape rules: (node attributes, input shapes) -> output shape --------------------------------------------

def _same(d: dict, ins: list) -> tuple:
    return ins[0]


def _conv_shape(d: dict, ins: list) -> tuple:
    c, h, w = ins[0]
    if c != d["in_channels"]:
        raise SpecError(f"channel mismatch in {where(d)}: the convolution expects {d['in_channels']} "
                        f"channels, its input has {c}", d["span"])
    groups = d.get("groups", 1)
    if d["in_channels"] % groups or d["out_channels"] % groups:
        raise SpecError(f"{where(d)} cannot be split into {groups} groups: {d['in_channels']} -> "
                        f"{d['out_channels']} channels are not both multiples of {groups}", d["span"])
    return (d["out_channels"], *_spatial(d, h, w))


def _pool_shape(d: dict, ins: list) -> tuple:
    c, h, w = ins[0]
    return (c, *_spatial(d, h, w))


def _zero_pad_shape(d: dict, ins: list) -> tuple:
    c, h, w = ins[0]
    if d["out_channels"] < c:
        raise SpecError(f"shortcut A cannot shrink channels ({c} -> {d['out_channels']}) in {where(d)}",
                        d["span"], hint="option A only zero-pads; use 'shortcut B' to project down")
    s = d["stride"]  # x[:, :, ::s, ::s] keeps ceil(H / s) rows, as many as a centred odd window gives
    return (d["out_channels"], -(-h // s), -(-w // s))


def _bn_shape(d: dict, ins: list) -> tuple:
    if ins[0][0] != d["channels"]:
        raise SpecError(f"channel mismatch in {where(d)}: batch norm over {d['channels']} channels "
                        f"gets {ins[0][0]}", d["span"])
    return ins[0]


def _se_shape(d: dict, ins: list) -> tuple:
    if ins[0][0] != d["channels"]:
        raise SpecError(f"channel mismatch in {where(d)}: squeeze-excitation over {d['channels']} channels "
                        f"gets {ins[0][0]}", d["span"])
    return ins[0]


def _add_shape(d: dict, ins: list) -> tuple:
    res, short = ins[PORT_RESIDUAL], ins[PORT_SHORTCUT]
    if res != short:
        origin = d.get("origin")
        raise SpecError(f"shape mismatch at the addition in {where(d)}: the residual path gives "
                        f"{shape_text(res)}, the shortcut gives {shape_text(short)}", d["span"],
                        hint="an identity shortcut cannot change shape; use 'shortcut A' (zero-pad) or "
                             "'shortcut B' (projection) where the shape changes"
                             + (f" (the shortcut is set at {origin.path}:{origin.line}:{origin.column})"
                                if origin else ""))
    if len(ins) > PORT_GATE and ins[PORT_GATE] != res:
        raise SpecError(f"gate shape {shape_text(ins[PORT_GATE])} does not match {shape_text(res)} in {where(d)}",
                        d["span"])
    return res


def _fc_shape(d: dict, ins: list) -> tuple:
    if ins[0] != (d["in_features"],):
        raise SpecError(f"the fc layer expects {d['in_features']} features, gets {shape_text(ins[0])}", d["span"])
    return (d["out_features"],)


# ---- costs: a shaped node -> (params, MACs); weights and BN affine terms count, MACs only for conv and fc -----

def _free(d: dict) -> tuple[int, int]:
    return 0, 0


def _conv_cost(d: dict) -> tuple[int, int]:
    kh, kw = d["kernel"]
    weights = kh * kw * d["in_channels"] // d.get("groups", 1) * d["out_channels"]  # each group sees its share
    _, oh, ow = d["shape"]
    return weights + (d["out_channels"] if d.get("bias") else 0), weights * oh * ow


def _se_cost(d: dict) -> tuple[int, int]:
    """Two 1x1 convolutions with biases on the 1x1 map of channel means: C -> hidden -> C."""
    c, h = d["channels"], se_hidden(d["channels"], d["ratio"], d["divisor"])
    return 2 * c * h + h + c, 2 * c * h


def _fc_cost(d: dict) -> tuple[int, int]:
    weights = d["in_features"] * d["out_features"]
    return weights + (d["out_features"] if d.get("bias") else 0), weights


# ---- words: the IR dump's description and the drawings' label ----------------------------------------------

def _drop_path_label(d: dict) -> str:
    """'drop path 0.5 per batch'; a drawing of one unit that stands for several gives their rates' range
    (``drop_range``: stochastic depth's rate grows unit by unit)."""
    low, high = d.get("drop_range", (d["drop_prob"],) * 2)
    rate = f"{low:.3g}" if low == high else f"{low:.3g} to {high:.3g}"
    return f"drop path {rate}" + (" per batch" if d.get("per_batch") else "")


def _conv_label(d: dict) -> str:
    k = d["kernel"][0]
    label = f"{k}x{k} conv, {d['out_channels']}{groups_words(d)}{_by_stride(d)}"
    label += " (W=0)" if d.get("zero_init") else ""  # `init zero-last` where F ends in it
    return f"gate: {label} + bias ({d['bias_init']:g})" if d.get("path") == "gate" else label


def groups_words(d: dict) -> str:
    """', C=32' for a grouped convolution (ResNeXt's notation for its cardinality), else nothing."""
    return f", C={d['groups']}" if d.get("groups", 1) > 1 else ""


def _pool_label(d: dict) -> str:
    k = d["kernel"][0]
    return f"{k}x{k} {'max' if d['op'] == 'maxpool' else 'avg'} pool, /{d['stride']}"


def _se_words(d: dict) -> str:
    """'SE r=16: 256→16→256'."""
    c = d["channels"]
    return f"SE r={d['ratio']}: {c}→{se_hidden(c, d['ratio'], d['divisor'])}→{c}"


GATE_FORMULAS = {"exclusive": "g·F + (1-g)·h", "shortcut-only": "F + (1-g)·h"}  # [I] Fig. 2(c), (d)

# ---- PyTorch: a module's constructor, or a functional expression over the input variables --------------------


def _conv_module(d: dict, num: Callable[[str], str]) -> str:
    args = f"{num('in_channels')}, {num('out_channels')}, kernel_size={num('kernel')}"
    if num("stride") != "1":
        args += f", stride={num('stride')}"
    if d["padding"][0]:
        args += f", padding={num('padding')}"
    if d.get("groups", 1) > 1:
        args += f", groups={num('groups')}"
    return f"nn.Conv2d({args}, bias={num('bias')})"


def _pool_module(d: dict, num: Callable[[str], str]) -> str:
    cls = "nn.MaxPool2d" if d["op"] == "maxpool" else "nn.AvgPool2d"
    ceil = ", ceil_mode=True" if d.get("ceil_mode") else ""
    if ceil and d["op"] == "avgpool":  # timm's ResNet-D pool (nn.MaxPool2d has no count_include_pad)
        ceil += ", count_include_pad=False"
    return f"{cls}(kernel_size={num('kernel')}, stride={num('stride')}, padding={num('padding')}{ceil})"


def _add_call(d: dict, ins: list[str], num, inplace: bool) -> str:
    r, s = ins[PORT_RESIDUAL], ins[PORT_SHORTCUT]
    if d.get("gate") == "exclusive":
        return f"{ins[PORT_GATE]} * {r} + (1 - {ins[PORT_GATE]}) * {s}"
    if d.get("gate") == "shortcut-only":
        return f"{r} + (1 - {ins[PORT_GATE]}) * {s}"
    return f"{r} + {s}"


# Option A's zero-padding shortcut as a function of the emitted file (its unit keeps out_channels and stride)
SHORTCUT_ZERO_PAD_SOURCE = (
    "def shortcut_zero_pad(x, out_channels: int, stride: int):  # annotated for TorchScript",
    "    \"\"\"Option A shortcut: subsample by the stride, then append zero channels.\"\"\"",
    "    if stride > 1:", "        x = x[:, :, ::stride, ::stride]",
    "    return F.pad(x, (0, 0, 0, 0, 0, out_channels - x.shape[1]))",
)


# Squeeze-excitation (Hu et al. 2018) as a class of the emitted file; the hidden width is units.se_hidden's rule
SQUEEZE_EXCITE_SOURCE = (
    "class SqueezeExcite(nn.Module):",
    "    \"\"\"Squeeze-and-excitation (Hu et al. 2018): each channel scaled by a gate computed from the",
    "    means of all channels through 1x1 convolutions to C / ratio channels (the nearest multiple of",
    "    divisor, at least divisor) and back; timm's SEModule, parameter names included (fc1, fc2).\"\"\"",
    "",
    "    def __init__(self, channels, ratio, divisor=1):",
    "        super().__init__()",
    "        hidden = max(divisor, int(channels / ratio + divisor / 2) // divisor * divisor)",
    "        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)",
    "        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)",
    "",
    "    def forward(self, x):",
    "        s = x.mean((2, 3), keepdim=True)",
    "        s = self.fc2(F.relu(self.fc1(s), inplace=True))",
    "        return x * torch.sigmoid(s)",
)

# Stochastic depth as a class of the emitted file: the network sets each unit's p by its rule (units.DROP_RULES)
DROP_PATH_SOURCE = (
    "class DropPath(nn.Module):",
    "    \"\"\"Stochastic depth (Huang et al. 2016). Per sample, as timm's DropPath: in training each",
    "    sample's residual F(x) is dropped with probability p and the kept ones are scaled by",
    "    1 / (1 - p); the identity in eval mode. Per batch, as Huang et al.: in training F(x) is dropped",
    "    for the whole mini-batch with probability p and kept as it is otherwise; in eval mode it is",
    "    scaled by its survival probability 1 - p. A dropped F is still computed (its BatchNorm",
    "    statistics updated) and multiplied by 0, where Huang et al.'s code skips it: the draw stays on",
    "    the device, so a training step needs no host sync.\"\"\"",
    "",
    "    def __init__(self, p=0.0, per_batch=False):",
    "        super().__init__()",
    "        self.p, self.per_batch = p, per_batch",
    "",
    "    def forward(self, x):",
    "        keep = 1.0 - self.p",
    "        if self.p == 0.0 or not (self.training or self.per_batch):",
    "            return x",
    "        if not self.training:",
    "            return x * keep",
    "        if self.per_batch:  # one draw on the device, no host sync: a CUDA graph replays a new draw",
    "            return x * x.new_empty(1, 1, 1, 1).bernoulli_(keep)",
    "        return x * x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep).div_(keep)",
    "",
    "    def extra_repr(self):",
    "        return f\"p={self.p:g}\" + (\", per_batch=True\" if self.per_batch else \"\")",
)


def _se_module(d: dict, num: Callable[[str], str]) -> str:
    divisor = f", divisor={num('divisor')}" if d["divisor"] != 1 else ""
    return f"SqueezeExcite({num('channels')}, {num('ratio')}{divisor})"


@dataclass(frozen=True)
class Op:
    """Everything resdsl knows about one kind of IR node."""

    kind: str
    shape: Callable[[dict, list], tuple]  # output shape from the input shapes; SpecError where impossible
    label: Callable[[dict], str]  # in the drawings, in the papers' notation ("3x3 conv, 64, /2")
    describe: Callable[[dict], str] = lambda d: ""  # after the op's name in the IR dump ("3x3/2 64->128")
    cost: Callable[[dict], tuple[int, int]] = _free  # (params, MACs)
    look: tuple[str, str] | None = None  # (colour group, word) in the drawings and their legend
    # PyTorch, as source text. `num(key)` writes the number d[key] as code: the constructor argument it comes from
    # (the node's `sym` roles) or a literal; a square window's (k, k) is written as k
    module: Callable | None = None  # (attrs, num) -> the nn.Module constructor
    call: Callable | None = None  # (attrs, input variables, num, in place?) -> a functional forward expression
    # applied to the module's output in forward ("torch.flatten({}, 1)"), or (attrs, num) -> that text or None
    then: str | Callable | None = None
    helper: tuple[str, ...] = ()  # a function the emitted file defines once for this op
    keeps: tuple[str, ...] = ()  # unit constructor arguments the op reads at run time (self.<arg>)
    member: str | None = None  # an op written as a call: its module inside an nn.Sequential (timm's deep stem)
    random: bool = False  # draws random numbers in training (runs that share torch's generator are not exact)
    # in forward, `var OP= second input` where the op may overwrite its first input (ungated `+`: torchvision's
    # `out += identity`, one tensor less to allocate and write), and whether autograd keeps the op's output for the
    # backward pass, so that nothing may overwrite it (ReLU's, the sigmoid's)
    augmented: str | None = None
    saves_output: bool = False
    passes_input: bool = False  # may return its input tensor itself (eval-mode dropout, drop path at p = 0)


_OP_LIST = [  # in legend order: the legend names each colour group's ops in this order
    Op("conv", _conv_shape, _conv_label, cost=_conv_cost, look=("conv", "conv"), module=_conv_module,
       describe=lambda d: f"{_window(d)} {d['in_channels']}->{d['out_channels']}{groups_words(d)}"
                          + (" +bias" if d.get("bias") else "") + (" zero-init" if d.get("zero_init") else "")),
    Op("bn", _bn_shape, lambda d: "BN" + (" (γ=0)" if d.get("zero_init") else ""), look=("bn", "BN"),
       cost=lambda d: (2 * d["channels"], 0), module=lambda d, num: f"nn.BatchNorm2d({num('channels')})",
       describe=lambda d: f"{d['channels']}" + (" zero-init" if d.get("zero_init") else "")),
    Op("relu", _same, lambda d: "ReLU", look=("relu", "ReLU"),
       call=lambda d, ins, num, inplace: f"F.relu({ins[0]}{', inplace=True' if inplace else ''})",
       member="nn.ReLU(inplace=True)", saves_output=True),
    Op("add", _add_shape, lambda d: GATE_FORMULAS.get(d.get("gate"), "+"), look=("add", "addition"),
       call=_add_call, describe=lambda d: d.get("gate") or "", augmented="+"),
    Op("maxpool", _pool_shape, _pool_label, look=("pool", "max pool"), module=_pool_module, describe=_window),
    Op("avgpool", _pool_shape, _pool_label, look=("pool", "avg pool"), module=_pool_module, describe=_window),
    Op("global_avgpool", lambda d, ins: (ins[0][0],), lambda d: "global avg pool", look=("pool", "global avg pool"),
       module=lambda d, num: "nn.AdaptiveAvgPool2d(1)", then="torch.flatten({}, 1)"),
    Op("fc", _fc_shape, lambda d: f"fc {d['out_features']}", cost=_fc_cost, look=("fc", "fc"),
       module=lambda d, num: f"nn.Linear({num('in_features')}, {num('out_features')})",
       describe=lambda d: f"{d['in_features']}->{d['out_features']}"),
    Op("zero_pad", _zero_pad_shape, lambda d: f"zero-pad to {d['out_channels']}{_by_stride(d)}",
       look=("shortcut op", "zero-pad"), helper=SHORTCUT_ZERO_PAD_SOURCE, keeps=("out_channels", "stride"),
       call=lambda d, ins, num, inplace: f"shortcut_zero_pad({ins[0]}, self.out_channels, self.stride)",
       describe=lambda d: f"/{d['stride']} {d['in_channels']}->{d['out_channels']}"),
    Op("scale", _same, lambda d: f"x {d['factor']:g}", look=("shortcut op", "scale"),
       call=lambda d, ins, num, inplace: f"{ins[0]} * {num('factor')}", describe=lambda d: f"x{d['factor']:g}"),
    # [I]'s dropout shortcut keeps its units unscaled in training and scales all by `keep` (1 - p) at test, the
    # dropout of [I]'s reference [11]: the shortcut's scale λ then has "an expectation of 0.5" ([I] section 3.1).
    # nn.Dropout scales the kept units by 1/(1 - p) in training instead (expectation 1), so its output is scaled by
    # `keep` after it; dropout inside F ([WRN]) is nn.Dropout as it is
    Op("dropout", _same, lambda d: f"dropout {d['p']:g}", look=("random", "dropout"), random=True,
       passes_input=True, then=lambda d, num: "{} * " + num("keep") if "keep" in d else None,
       module=lambda d, num: f"nn.Dropout(p={num('p')})",
       describe=lambda d: f"p={d['p']:g}" + (f", x{d['keep']:g} at test" if "keep" in d else "")),
    Op("se", _se_shape, _se_words, cost=_se_cost, look=("se", "squeeze-excitation"), module=_se_module,
       helper=SQUEEZE_EXCITE_SOURCE, describe=lambda d: _se_words(d).removeprefix("SE ")),
    Op("drop_path", _same, _drop_path_label,
       look=("random", "drop path"), random=True, passes_input=True, helper=DROP_PATH_SOURCE,
       module=lambda d, num: "DropPath(per_batch=True)" if d.get("per_batch") else "DropPath()",
       describe=lambda d: f"p={d['drop_prob']:.6g}" + (" per-batch" if d.get("per_batch") else "")),
    Op("sigmoid", _same, lambda d: "sigmoid g(x)", look=("gate", "gate sigmoid"),
       call=lambda d, ins, num, inplace: f"torch.sigmoid({ins[0]})", saves_output=True),
    Op("input", lambda d, ins: d["shape_declared"], lambda d: f"input {shape_text(d['shape'])}"),
    Op("output", _same, lambda d: f"output {shape_text(d['shape'])}"),
]
OPS: dict[str, Op] = {op.kind: op for op in _OP_LIST}

