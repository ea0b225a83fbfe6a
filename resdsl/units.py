"""Units, shortcuts and orders as data: what lowering builds for each word of the language, and the unit record
that lowering writes into the IR for the backends to read.

- A unit kind ([R] Fig. 5, [I] Table 3) is its residual path F: the list of its convolutions, and its notation.
- A shortcut kind ([R] options A, B, C; a plain net's none) is the path h(x) it builds where a unit keeps its
  shape and where it changes it; a path is a list of ops (and the torchvision module that holds them).
- An order ([I] Fig. 4) is a placement table: the ops before each convolution of F, after each but the last, after
  the last, and after the addition.

Adding a unit kind is a ``UnitKind`` record here and its word in the grammar; lowering, the shape and cost passes,
the emitter and the drawing read the records and need no change.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# ---- unit kinds --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv:
    """One convolution of a unit's residual path: its square kernel and the unit argument that is its width."""

    kernel: int
    out: str  # "width" or "out_channels" (= width x expansion): the constructor argument of its output channels
    grouped: bool = False  # ResNeXt's grouped convolution: `cardinality C` splits it into C groups


@dataclass(frozen=True)
class UnitKind:
    """A kind of residual unit: its word in the grammar, its convolutions and how the papers write it."""

    word: str
    convs: tuple[Conv, ...]
    notation: str  # [R] Table 1's shape of the unit, in generated docstrings
    caption: str  # the papers' name for it, in drawing captions
    expansion: int = 1  # out_channels = width x expansion ([R] Fig. 5 right: 4); `expansion N` changes it
    stride_at: str | None = None  # where a downsampling unit strides: the first conv with this kernel ("1x1")

    @property
    def class_word(self) -> str:
        """The kind's word in generated class names ('Basic', 'Bottleneck')."""
        return "".join(part.capitalize() for part in self.word.split("-"))


UNIT_KINDS = {u.word: u for u in (
    UnitKind("basic", (Conv(3, "width"), Conv(3, "width")), "[3x3, 3x3]", "basic"),  # [R] Fig. 5 left
    UnitKind("single", (Conv(3, "width"),), "[3x3]", "1-layer skip"),  # [I] Table 3, "ResNet-110 (1-layer skip)"
    # [R] Fig. 5 right; torchvision (v1.5) strides in the 3x3 conv, [R]'s released models in the first 1x1
    UnitKind("bottleneck", (Conv(1, "width"), Conv(3, "width", grouped=True), Conv(1, "out_channels")),
             "[1x1, 3x3, 1x1] bottleneck", "bottleneck", expansion=4, stride_at="1x1"),
)}


@dataclass(frozen=True)
class PlannedConv:
    """A unit's convolution with its numbers: channels and stride, and the constructor arguments they come from."""

    kernel: int
    out_channels: int
    stride: int
    out_role: str
    stride_role: str | None
    groups: int = 1


def inner_width(planes: int, cardinality: int = 1, base_width: int = 64) -> int:
    """The channels inside a bottleneck of a stage of width ``planes``, as ResNeXt and torchvision reckon them:
    ``int(planes * base_width / 64) * cardinality`` (ResNeXt-50 32x4d's first stage: 64 -> 4 x 32 = 128; Wide
    ResNet-50-2, base width 128: 64 -> 128). ``out_channels`` stays ``planes x expansion``."""
    return planes * base_width // 64 * cardinality


def plan_convs(kind: UnitKind, width: int, stride: int, expansion: int | None = None,
               stride_at: str | None = None, cardinality: int = 1, base_width: int = 64) -> list[PlannedConv]:
    """The residual path of one unit of this kind in a stage of width ``width``: the stride goes to the first
    conv with the `stride-at` kernel (the kind's default, else the first conv); a grouped conv has
    ``cardinality`` groups."""
    at = stride_at or kind.stride_at
    strided = next((i for i, c in enumerate(kind.convs) if at == f"{c.kernel}x{c.kernel}"), 0)
    channels = {"width": inner_width(width, cardinality, base_width),
                "out_channels": width * (expansion or kind.expansion)}
    return [PlannedConv(c.kernel, channels[c.out], stride if i == strided else 1, c.out,
                        "stride" if i == strided else None, cardinality if c.grouped else 1)
            for i, c in enumerate(kind.convs)]


# ---- shortcut kinds ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShortcutPath:
    """The ops a shortcut h(x) is built from, by their names in the unit, and the module that holds them."""

    ops: tuple[tuple[str, str], ...]  # (name in the unit, op kind), in order
    words: dict[str, str]  # by the stage's option ("" for any other): what captions and docstrings call it
    module: str | None = None  # the nn.Sequential holding them (torchvision's `downsample`, for its weights)
    class_word: str = ""  # what it adds to a unit's class name in emitted code and drawings ('Projection')

    @property
    def projects(self) -> bool:
        """Whether the path has a 1x1 convolution (a projection, plain or average-pooling)."""
        return any(op == "conv" for _, op in self.ops)


# The papers' shortcuts, by the words the drawings use for their lines: an identity builds nothing, option A's
# parameter-free zero-padding one op, a projection a 1x1 conv with its BN (the BN is left out where the order or
# `projection-bn no` says so). The names are torchvision's, so its state_dicts load (layer2.0.downsample.0).
PATHS = {
    "identity": ShortcutPath((), {"": "identity shortcut"}),
    "zero-pad": ShortcutPath((("shortcut_zero_pad", "zero_pad"),), {"": "zero-padding shortcut (option A)"},
                             class_word="ZeroPad"),
    # a projection is named by its stage's option: [R]'s B, or C, which [I] Fig. 2(e) calls a 1x1 conv shortcut
    "projection": ShortcutPath((("downsample.0", "conv"), ("downsample.1", "bn")),
                               {"": "1x1 projection shortcut", "B": "1x1 projection shortcut (option B)",
                                "C": "1x1 conv shortcut (option C)"}, module="downsample", class_word="Projection"),
    # ResNet-D (He et al. 2019, "Bag of Tricks", Fig. 2c): a 2x2 average pool with stride 2 takes the stride off
    # the 1x1 conv, which then sees every pixel; timm's names (`avg_down`): the pool is downsample.0, nn.Identity
    # where the unit keeps its size
    "avg-projection": ShortcutPath((("downsample.0", "avgpool"), ("downsample.1", "conv"), ("downsample.2", "bn")),
                                   {"": "average pool + 1x1 projection shortcut (ResNet-D)",
                                    "B": "average pool + 1x1 projection shortcut (ResNet-D, option B)",
                                    "C": "average pool + 1x1 conv shortcut (ResNet-D, option C)"}, module="downsample",
                                   class_word="AvgProjection"),
}


def shortcut_words(record: dict) -> str:
    """A unit's shortcut in the papers' words (its record: the path it builds, its stage's option), as the
    drawings' captions and the emitted docstrings say it."""
    if record["shortcut"] is None:
        return "plain net: no shortcut"
    words = PATHS[record["shortcut"]].words
    return words.get(record["option"], words[""])


@dataclass(frozen=True)
class ShortcutKind:
    """A shortcut option: which path (a PATHS key) it builds where a unit keeps its shape and where it changes it;
    None on both: no shortcut and no addition (a plain net)."""

    word: str
    same: str | None
    changes: str | None

    def path(self, shape_changes: bool) -> str | None:
        """The PATHS key of a unit's shortcut (None: a plain unit)."""
        return self.changes if shape_changes else self.same


SHORTCUT_KINDS = {s.word: s for s in (
    ShortcutKind("identity", "identity", "identity"),  # where the shape changes, the shape pass says so
    ShortcutKind("A", "identity", "zero-pad"),  # [R] option A
    ShortcutKind("B", "identity", "projection"),  # [R] option B
    ShortcutKind("C", "projection", "projection"),  # [R] option C; [I] Fig. 2(e) "1x1 conv shortcut"
    ShortcutKind("none", None, None),  # [R]'s plain nets
)}


def builds(kind: ShortcutKind, path: str) -> bool:
    """Whether a shortcut kind ever builds this path."""
    return path in (kind.same, kind.changes)


# ---- orders ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    """Where a unit's BN and ReLU go, relative to the convolutions of F and the addition ([I] Fig. 4)."""

    word: str
    before: tuple[str, ...]  # before each conv of F: pre-activation
    after: tuple[str, ...]  # after each conv of F but the last
    after_last: tuple[str, ...]  # after the last conv of F
    after_add: tuple[str, ...]  # after the addition
    figure: str  # [I] Fig. 4's letter and words, in drawing captions (named: Fig. 2 has letters of its own)
    doc: str  # in generated docstrings
    class_word: str  # in generated class names

    @property
    def pre(self) -> bool:
        """A pre-activation order ([I] Fig. 4d, e): each unit activates its input itself, the head after the last."""
        return bool(self.before)


ORDERS = {o.word: o for o in (
    Order("post", (), ("bn", "relu"), ("bn",), ("relu",), "Fig. 4(a) original",
          "original post-activation ([I] Fig. 4a)", ""),
    Order("bn-after-add", (), ("bn", "relu"), (), ("bn", "relu"), "Fig. 4(b) BN after addition",
          "BN after addition ([I] Fig. 4b)", "BnAfterAdd"),
    Order("relu-before-add", (), ("bn", "relu"), ("bn", "relu"), (), "Fig. 4(c) ReLU before addition",
          "ReLU before addition ([I] Fig. 4c)", "ReluBeforeAdd"),
    Order("relu-preact", ("relu",), ("bn",), ("bn",), (), "Fig. 4(d) ReLU-only pre-activation",
          "ReLU-only pre-activation ([I] Fig. 4d)", "ReluPreact"),
    Order("preact", ("bn", "relu"), (), (), (), "Fig. 4(e) full pre-activation", "full pre-activation ([I] Fig. 4e)",
          "Preact"),
)}


def projection_bn(order: Order) -> bool:
    """Whether a projection shortcut has its BN by default: where F's last conv has one, so both paths reach the
    addition normalised alike (none in [I]'s full pre-activation code and in Fig. 4b, whose BN follows the sum)."""
    return "bn" in order.after_last


# ---- what a unit may add: squeeze-excitation, stochastic depth ---------------------------------------------------


def se_hidden(channels: int, ratio: int, divisor: int = 1) -> int:
    """The width inside a squeeze-excitation block (Hu et al. 2018: C / r), rounded to the nearest multiple of
    ``divisor`` and at least ``divisor``: timm's ``make_divisible(C / r, divisor, round_limit=0)``, so `se 16
    divisor 8` is timm's SEModule (256 -> 16, 64 -> 8). The emitted SqueezeExcite class computes the same."""
    return max(divisor, int(channels / ratio + divisor / 2) // divisor * divisor)


# where `se R at PLACE` puts the block (Hu et al. 2018, Fig. 5: standard, SE-PRE, SE-POST)
SE_PLACES = {"standard": "at the end of F", "pre": "at the start of F", "post": "after the addition"}


@dataclass(frozen=True)
class DropRule:
    """A stochastic-depth rule: the drop probability of unit l of L (counted from 1) for a final rate P, as a
    function and as the Python expression (over `rate`, `l`, `L`) that the emitted network evaluates; a test
    checks that the two agree on every unit."""

    word: str
    p: Callable[[float, int, int], float]
    expression: str
    doc: str


DROP_RULES = {r.word: r for r in (
    # Huang et al. 2016, eq. (4), "linear decay rule": survival 1 - l/L (1 - p_L); the last unit drops with P
    DropRule("linear", lambda rate, l, L: rate * l / L, "rate * l / L", "Huang et al.'s linear decay rule"),
    # timm's drop_path_rate: from 0 at the first unit to P at the last
    DropRule("from-zero", lambda rate, l, L: rate * (l - 1) / max(L - 1, 1), "rate * (l - 1) / max(L - 1, 1)",
             "timm's rule, from 0 at the first unit"),
)}

# How `layers` counts a network, from (weighted layers on the main path, convolutions of F): [R]'s count (the
# stem, counted once, F's convs, the fc layer), or Zagoruyko & Komodakis's depth of a Wide ResNet, 6N + 4 for N
# basic units per stage: F's convs + 4.
LAYER_COUNTS: dict[str, Callable[[int, int], int]] = {
    "resnet": lambda main, residual_convs: main,
    "wrn": lambda main, residual_convs: residual_convs + 4,
}


# ---- the unit record -----------------------------------------------------------------------------------------

# where, not what; and `drop_prob`, which the network sets on each unit by its stochastic-depth rule
_NOT_CODE = {"span", "origin", "stage", "unit", "part", "shape", "params", "macs", "drop_prob"}


def signature(g, record: dict) -> tuple:
    """What a unit is, computed from the IR: each node's name in the unit, op, path, inputs and attributes, with
    numbers that come from a constructor argument written as that argument. Units with equal signatures are one
    kind of unit (one class in emitted code, one drawing)."""
    prefix, inside = record["prefix"], set(record["nodes"])
    out = []
    for n in record["nodes"]:
        d = g.nodes[n]
        sym = d.get("sym", {})
        attrs = tuple(sorted((k, sym.get(k, _frozen(v))) for k, v in d.items() if k not in _NOT_CODE))
        ins = tuple(u[len(prefix):] if u in inside else "x" for u in _inputs(g, n))
        out.append((n[len(prefix):], ins, attrs))
    return tuple(out)


def _frozen(v):
    """A node attribute as a hashable value."""
    return tuple(sorted((k, _frozen(x)) for k, x in v.items())) if isinstance(v, dict) else v


def _inputs(g, n: str) -> list[str]:
    """ir.inputs_of (a node's inputs by port), which units cannot import: ir imports ops, and ops imports units."""
    return [u for _, u in sorted((e["port"], u) for u, _, e in g.in_edges(n, data=True))]


def class_name(g, record: dict) -> str:
    """The unit's name in emitted code and drawings: order, kind, then what its shortcut and variants add
    ('PreactBasicUnitPreactShared', 'BottleneckUnitProjection', 'BasicUnitPadGated')."""
    nodes = [g.nodes[n] for n in record["nodes"]]
    ops = {d["op"] for d in nodes}
    words = [PATHS[record["shortcut"]].class_word] if record["shortcut"] else []
    if any(d["path"] == "shared" for d in nodes) and not (record["shortcut"] and PATHS[record["shortcut"]].projects):
        words.append("PreactShared")
    words += [word for op, word in (("se", "SE"), ("sigmoid", "Gated"), ("dropout", "Dropout"), ("scale", "Scaled"),
                                    ("drop_path", "DropPath")) if op in ops]
    return ORDERS[record["order"]].class_word + UNIT_KINDS[record["kind"]].class_word + "Unit" + "".join(words)


def distinct(g) -> list[tuple[str, list[dict]]]:
    """(unique class name, every instance's record) per kind of unit (equal signatures), in network order."""
    seen: dict[tuple, list] = {}
    taken: set[str] = set()
    for record in g.graph["units"]:
        if record["signature"] not in seen:
            name = base = class_name(g, record)
            k = 2
            while name in taken:
                name, k = f"{base}{k}", k + 1
            taken.add(name)
            seen[record["signature"]] = [name, []]
        seen[record["signature"]][1].append(record)
    return [(name, records) for name, records in seen.values()]
