"""Frozen AST dataclasses for spec files; every node carries the span of its source text."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Span


@dataclass(frozen=True)
class Value:
    """A scalar written in the spec, with where it was written."""

    value: object
    span: Span


@dataclass(frozen=True)
class Statement:
    span: Span


@dataclass(frozen=True)
class Network(Statement):
    name: str


@dataclass(frozen=True)
class Extends(Statement):
    path: str


@dataclass(frozen=True)
class Include(Statement):
    path: str


@dataclass(frozen=True)
class Input(Statement):
    channels: Value
    height: Value
    width: Value


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" | "avg"
    kernel: Value  # (k, k)
    stride: Value
    span: Span


@dataclass(frozen=True)
class StemConv:
    """One convolution of a `stem conv ...` list."""

    kernel: Value  # (kh, kw)
    stride: Value
    width: Value
    span: Span


@dataclass(frozen=True)
class Stem(Statement):
    kind: str  # "imagenet" | "cifar" | "deep" | "conv"
    width: Value  # the stem's output channels (the last convolution's)
    convs: tuple[StemConv, ...] = ()  # kind "conv": the convolutions, in order
    pool: Pool | None = None


@dataclass(frozen=True)
class Unit(Statement):
    kind: str  # "basic" | "bottleneck" | "single"
    expansion: Value | None = None
    stride_at: Value | None = None  # "1x1" | "3x3"
    cardinality: Value | None = None  # ResNeXt's C: groups of the unit's grouped convolution
    base_width: Value | None = None  # ResNeXt's d at a stage width of 64 (32x4d: 4); inner width scales with it
    width_factor: Value | None = None  # Wide ResNet-50-2's 2: base width 64 x factor
    se: SqueezeExcite | None = None  # a squeeze-excitation block in every unit
    dropout: Value | None = None  # Wide ResNets' dropout between the convolutions of F


@dataclass(frozen=True)
class SqueezeExcite:
    """`se R [divisor D] [at standard|pre|post]`: squeeze-excitation (Hu et al. 2018) with reduction ratio R."""

    ratio: Value
    divisor: Value | None
    at: Value | None  # "standard" (end of F) | "pre" (start of F) | "post" (after the addition)
    span: Span


@dataclass(frozen=True)
class Order(Statement):
    name: str
    final_activation: Value | None = None  # pre-activation orders: the head's BN-ReLU after the last unit (yes)
    first_shortcut: Value | None = None  # pre-activation orders: the first unit's shortcut, "activated" or "raw"


@dataclass(frozen=True)
class DropPath(Statement):
    """`drop-path P [linear|from-zero] [per-sample|per-batch]`: stochastic depth, unit l of L dropping its F with
    a probability that grows linearly to P (units.DROP_RULES), for each sample (timm) or each mini-batch ([SD])."""

    rate: Value
    rule: str = "linear"
    per: str = "sample"


@dataclass(frozen=True)
class LayerCount(Statement):
    """`layer-count resnet|wrn`: how `layers` counts (units.LAYER_COUNTS)."""

    convention: Value


@dataclass(frozen=True)
class Gate:
    kind: str  # "exclusive" | "shortcut-only"
    bias: Value
    span: Span


@dataclass(frozen=True)
class Shortcut(Statement):
    kind: str  # "A" | "B" | "C" | "none" | "identity"
    scale: Value | None = None
    residual_scale: Value | None = None
    gate: Gate | None = None
    dropout: Value | None = None
    projection_bn: Value | None = None
    avg_down: Value | None = None  # ResNet-D: a projection that changes the size average-pools, then projects


@dataclass(frozen=True)
class StageEntry:
    width: Value
    units: Value
    stride: Value
    span: Span


@dataclass(frozen=True)
class Stages(Statement):
    entries: tuple[StageEntry, ...]


@dataclass(frozen=True)
class StageOverride(Statement):
    index: Value
    statement: Statement  # Unit | Order | Shortcut


@dataclass(frozen=True)
class Head(Statement):
    classes: Value | None  # None: features only (global average pool, no fc)
    dropout: Value | None = None  # dropout on the pooled features, before the fc (timm's drop_rate)


@dataclass(frozen=True)
class Init(Statement):
    scheme: str = "he"
    fan: str = "fan-out"
    zero_last_bn: bool = False  # each unit starts as its shortcut alone: F's last BN starts at zero, or
    zero_last: bool = False  # F's last layer, a BN or a convolution (lower._zero_last_layer)


@dataclass(frozen=True)
class ExpectItem:
    what: str  # params | macs | flops | layers | output
    text: str  # as written, e.g. "21.8M" or "64x8x8"
    approx: bool
    span: Span


@dataclass(frozen=True)
class Expect(Statement):
    items: tuple[ExpectItem, ...]


@dataclass(frozen=True)
class RecipeUse(Statement):
    name: str


@dataclass(frozen=True)
class RecipeField:
    key: str
    value: object  # a plain value or a small dict (schedule, warmup, augment)
    span: Span


@dataclass(frozen=True)
class RecipeDef(Statement):
    name: str
    base: Value | None
    fields: tuple[RecipeField, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SpecFile:
    path: str
    source: str
    statements: tuple[Statement, ...]
