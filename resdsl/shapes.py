"""Shape pass: give every IR node its output shape; impossible networks fail with located errors."""
from __future__ import annotations

from .errors import SpecError
from .ir import inputs_of


def _fmt(shape) -> str:
    return "x".join(str(v) for v in shape)


def _where(d: dict) -> str:
    if "stage" in d:
        return f"stage {d['stage']}, unit {d['unit'] + 1}"
    return {"stem": "the stem", "head": "the head"}.get(d.get("group"), "the network")


def out_size(n: int, k: int, stride: int, pad: int) -> int:
    """Output size of a convolution or pooling window along one axis, as PyTorch computes it (nn.Conv2d,
    nn.MaxPool2d, nn.AvgPool2d without ceil_mode): floor((n + 2 * pad - k) / stride) + 1. A stride that does not
    divide n is no error: the windows that do not fit are dropped, as in PyTorch."""
    return (n + 2 * pad - k) // stride + 1


_HINTS = {"stem": "use a larger input, or a smaller kernel or stride in the stem"}


def _spatial(d, h, w):
    """(H, W) after the node's window; a map that vanishes (size < 1) is the only size error."""
    k, s, pad = d["kernel"], d["stride"], d["padding"]
    oh, ow = out_size(h, k[0], s, pad[0]), out_size(w, k[1], s, pad[1])
    if oh < 1 or ow < 1:
        raise SpecError(f"the feature map shrinks to nothing in {_where(d)}: the {h}x{w} map padded by {pad[0]} "
                        f"is smaller than the {k[0]}x{k[1]}/{s} window", d["span"],
                        hint=_HINTS.get(d.get("group"),
                                        "use a larger input, fewer downsampling stages or smaller strides"))
    return oh, ow


def infer_shapes(g) -> None:
    """Annotate each node with ``shape`` (a tuple: (C, H, W) for maps, (N,) for vectors)."""
    for n, d in g.nodes(data=True):
        ins = [g.nodes[u]["shape"] for u in inputs_of(g, n)]
        op = d["op"]
        if op == "input":
            shape = d["shape_declared"]
        elif op == "conv":
            c, h, w = ins[0]
            if c != d["in_channels"]:
                raise SpecError(f"channel mismatch in {_where(d)}: the convolution expects {d['in_channels']} "
                                f"channels, its input has {c}", d["span"])
            shape = (d["out_channels"], *_spatial(d, h, w))
        elif op in ("maxpool", "avgpool"):
            c, h, w = ins[0]
            shape = (c, *_spatial(d, h, w))
        elif op == "pad":
            c, h, w = ins[0]
            if d["out_channels"] < c:
                raise SpecError(f"shortcut A cannot shrink channels ({c} -> {d['out_channels']}) in {_where(d)}",
                                d["span"], hint="option A only zero-pads; use 'shortcut B' to project down")
            s = d["stride"]  # x[:, :, ::s, ::s] keeps ceil(H / s) rows, as many as a centred odd window gives
            shape = (d["out_channels"], -(-h // s), -(-w // s))
        elif op == "bn":
            if ins[0][0] != d["channels"]:
                raise SpecError(f"channel mismatch in {_where(d)}: batch norm over {d['channels']} channels "
                                f"gets {ins[0][0]}", d["span"])
            shape = ins[0]
        elif op == "add":
            res, short = ins[0], ins[1]
            if res != short:
                origin = d.get("origin")
                raise SpecError(f"shape mismatch at the addition in {_where(d)}: the residual path gives "
                                f"{_fmt(res)}, the shortcut gives {_fmt(short)}", d["span"],
                                hint="an identity shortcut cannot change shape; use 'shortcut A' (zero-pad) or "
                                     "'shortcut B' (projection) where the shape changes"
                                     + (f" (shortcut set at line {origin.line})" if origin else ""))
            if len(ins) > 2 and ins[2] != res:
                raise SpecError(f"gate shape {_fmt(ins[2])} does not match {_fmt(res)} in {_where(d)}", d["span"])
            shape = res
        elif op == "global_avgpool":
            shape = (ins[0][0],)
        elif op == "fc":
            if ins[0] != (d["in_features"],):
                raise SpecError(f"the fc layer expects {d['in_features']} features, gets {_fmt(ins[0])}", d["span"])
            shape = (d["out_features"],)
        else:  # relu, sigmoid, scale, dropout, output
            shape = ins[0]
        d["shape"] = tuple(shape)
