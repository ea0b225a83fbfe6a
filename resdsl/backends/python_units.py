"""One class of emitted PyTorch source per kind of residual unit, written from the unit records in the IR
(units.py): the record gives the unit's nodes, their names in the unit and the modules that group them; the op
table (ops.py) gives each node's PyTorch form."""
from __future__ import annotations

import textwrap

from ..catalog import shown_path
from ..ir import inputs_of
from ..ops import OPS
from ..units import ORDERS, SE_PLACES, UNIT_KINDS, shortcut_words
from .escape import py_doc, py_literal

PATH_VARIABLES = {"shared": "x", "residual": "out", "shortcut": "identity", "gate": "g", "merge": "out"}
CONSTRUCTOR = "def __init__(self, in_channels, width, out_channels, stride=1):"  # the record's args, in order
# The emitted file's width: its prose (docstrings, comments) is wrapped at it and an nn.Sequential that would pass
# it is split; a module's constructor stays on one line (up to 112 characters). The spec's own words (a long file
# name) may make a line longer.
WIDTH = 100
BODY = 8  # the indentation of a line in a method's body


def number(d: dict, key: str) -> str:
    """A numeric attribute as code: the constructor argument it comes from (``sym``), or a literal; a square
    window's (k, k) is written as k."""
    role = d.get("sym", {}).get(key)
    if role:
        return role
    v = d[key]
    return py_literal(v[0] if isinstance(v, tuple) else v)


def module_expr(d: dict) -> str | None:
    """The op's nn.Module constructor (the op table's), or None for an op written as a function call."""
    module = OPS[d["op"]].module
    return module(d, lambda key: number(d, key)) if module else None


def sequential_lines(g, module: str, members: list[str]) -> list[str]:
    """`self.<module> = nn.Sequential(...)` for IR nodes named `<module>.<index>` (torchvision's `downsample.0`,
    timm's `conv1.3`): each node at its index, a function op as its module (`member`), and nn.Identity() at an
    index no node takes (timm's stride-1 `downsample.0`), so that every later index keeps its name and its weights
    load. One line where it fits in a method's body, else one line each."""
    at = {int(n.rsplit(".", 1)[1]): g.nodes[n] for n in members}
    parts = [(module_expr(at[i]) or OPS[at[i]["op"]].member) if i in at else "nn.Identity()"
             for i in range(max(at) + 1)]
    line = f"self.{module} = nn.Sequential({', '.join(parts)})"
    if BODY + len(line) <= WIDTH:
        return [line]
    return [f"self.{module} = nn.Sequential(", *(f"    {p}," for p in parts), ")"]


def comment_lines(text: str, indent: int = BODY) -> list[str]:
    """``text`` (escaped already) as comment lines of the file's width at ``indent``, wrapped at spaces only."""
    return ["# " + ln for ln in wrapped(text, WIDTH - indent - 2)]


def wrapped(text: str, width: int, first: str = "") -> list[str]:
    """``text`` in lines of ``width``, the first after ``first``, broken at spaces only: a word is never cut (an
    escape holds no space, and cutting one in two would break it), nor a file name that ``whole`` marked."""
    lines = textwrap.wrap(text, width, initial_indent=first, break_long_words=False, break_on_hyphens=False)
    return [ln.replace(_KEPT_SPACE, " ") for ln in lines] or [first]


_KEPT_SPACE = "\0"  # escaped text holds no NUL (py_text writes it as \x00), so it can mark a space kept


def whole(escaped: str) -> str:
    """An escaped file name that ``wrapped`` keeps on one line, as it is written (spaces included)."""
    return escaped.replace(" ", _KEPT_SPACE)


def op_lines(d: dict, name: str, var: str, ins: list[str], inplace: bool) -> tuple[str | None, list[str]]:
    """One IR node in an nn.Module: its line in __init__ (None for a function) and its lines in forward."""
    expr = module_expr(d)
    augmented = OPS[d["op"]].augmented
    if expr is None and augmented and inplace and not d.get("gate") and ins[0] == var:
        return None, [f"{var} {augmented}= {ins[1]}"]
    if expr is None:
        return None, [f"{var} = {call_expr(d, ins, inplace)}"]
    then = OPS[d["op"]].then
    if callable(then):
        then = then(d, lambda key: number(d, key))
    forward = [f"{var} = self.{name}({ins[0]})"] + ([f"{var} = {then.format(var)}"] if then else [])
    return f"self.{name} = {expr}", forward


def call_expr(d: dict, ins: list[str], inplace: bool) -> str:
    """The op's functional forward expression over its input variables (the op table's)."""
    call = OPS[d["op"]].call
    if call is None:
        raise AssertionError(f"no Python form for IR op {d['op']}")
    return call(d, ins, lambda key: number(d, key), inplace)


def _forward_lines(g, record: dict) -> tuple[list[str], list[str], list[str]]:
    """(constructor lines, forward lines, unit-specific initialisation lines) of one unit."""
    local = {n: n[len(record["prefix"]):] for n in record["nodes"]}
    module_of = {n: name for name, members in record["modules"].items() for n in members}
    var_of: dict[str, str] = {}
    init, fwd, special = [], [], []
    for n in record["nodes"]:
        d, name, var = g.nodes[n], local[n], PATH_VARIABLES[g.nodes[n]["path"]]
        ins = [var_of.get(u, "x") for u in inputs_of(g, n)]
        var_of[n] = var
        if n in module_of:  # one nn.Sequential (torchvision's `downsample`) for its members, at the first
            members = record["modules"][module_of[n]]
            if n == members[0]:
                init += sequential_lines(g, module_of[n], members)
                fwd.append(f"{var} = self.{module_of[n]}({ins[0]})")
            continue
        init_line, lines = op_lines(d, name, var, ins, _may_overwrite(g, local, inputs_of(g, n)[0]))
        init += [init_line] if init_line else []
        fwd += lines
        if d.get("zero_init"):
            special.append(f"nn.init.zeros_(self.{name}.weight)")
        if d.get("bias_init") is not None:
            special.append(f"nn.init.constant_(self.{name}.bias, {py_literal(float(d['bias_init']))})")
    fwd.append(f"return {var_of[record['nodes'][-1]]}")
    return init, fwd, special


def _may_overwrite(g, local: dict, src: str) -> bool:
    """Whether an op may overwrite its first input, the output of node ``src``: nothing else reads it and autograd
    keeps it nowhere, also before ops that may hand their input on as it is (eval-mode dropout, drop path at
    p = 0: then the tensor is their input's, a ReLU's under `relu-before-add`)."""
    while src in local and g.out_degree(src) == 1 and not OPS[g.nodes[src]["op"]].saves_output:
        if not OPS[g.nodes[src]["op"]].passes_input:
            return True
        src = inputs_of(g, src)[0]
    return False


def unit_body(g, record: dict) -> str:
    """The class body (without the class line) of one unit."""
    init, fwd, special = _forward_lines(g, record)
    lines = [CONSTRUCTOR, "    super().__init__()"]
    keeps = dict.fromkeys(arg for n in record["nodes"] for arg in OPS[g.nodes[n]["op"]].keeps)
    lines += [f"    self.{arg} = {arg}" for arg in keeps]
    lines += [f"    {ln}" for ln in init]
    if special:
        lines += ["", "def init_unit_parameters(self):",
                  "    \"\"\"Unit-specific initialisation, applied after the network-wide He/BN init.\"\"\""]
        lines += [f"    {ln}" for ln in special]
    lines += ["", "def forward(self, x):"] + [f"    {ln}" for ln in fwd]
    return "\n".join(lines)


def _variant_words(ops: list[dict]) -> list[str]:
    """[I] Fig. 2's changes to the shortcut (gating, scaling, dropout) and what else the unit adds (dropout in F,
    squeeze-excitation, stochastic depth), in the unit's order."""
    words = []
    for o in ops:
        if o["op"] == "conv" and o.get("path") == "gate":
            add = next(a for a in ops if a["op"] == "add")
            words.append(f"{add['gate']} gating g = sigmoid(1x1 conv + b), b initialised to {o['bias_init']:g}")
        elif o["op"] == "scale":
            words.append(f"{o['path']} path scaled by {o['factor']:g}")
        elif o["op"] == "dropout" and o["path"] == "shortcut":
            words.append(f"dropout {o['p']:g} on the shortcut, its kept units unscaled in training and the shortcut "
                         f"scaled by {o['keep']:g} at test ([I] section 3.1: an expectation of {o['keep']:g})")
        elif o["op"] == "dropout" and f"dropout {o['p']:g} between the convolutions of F" not in words:
            words.append(f"dropout {o['p']:g} between the convolutions of F")
        elif o["op"] == "se":
            divisor = f", divisor {o['divisor']}" if o["divisor"] > 1 else ""
            words.append(f"squeeze-excitation (r={o['ratio']}{divisor}) {SE_PLACES[o['at']]}")
        elif o["op"] == "drop_path":
            per = "each mini-batch" if o.get("per_batch") else "each sample"
            words.append(f"stochastic depth (drop path) on F, for {per}")
    return words


def class_doc(g, record: dict) -> str:
    """The class docstring: the unit's notation, order and shortcut in the papers' words, and its spec lines."""
    ops = [g.nodes[n] for n in record["nodes"]]
    shared = [OPS[o["op"]].label(o) for o in ops if o.get("path") == "shared"]
    shortcut = ", ".join([shortcut_words(record), *_variant_words(ops)]
                         + ([f"{'-'.join(shared)} before splitting into F and the shortcut ([I])"] if shared else []))
    said = g.graph["stages"][record["stage"] - 1]["said"]  # the unit, order and shortcut lines of its stage
    spans = sorted({(o["span"].path, o["span"].line) for o in ops}
                   | {(o["origin"].path, o["origin"].line) for o in ops if o.get("origin")}
                   | {(sp.path, sp.line) for sp in said})
    lines: dict[str, list[int]] = {}
    for p, ln in spans:
        lines.setdefault(p, []).append(ln)
    # "specs/resnet18.res:7, 8; specs/resnet50.res:5" (file names are untrusted)
    where = "; ".join(f"{whole(py_doc(shown_path(p)))}:{', '.join(map(str, lns))}" for p, lns in lines.items())
    return (f"{UNIT_KINDS[record['kind']].notation} unit, {ORDERS[record['order']].doc}, {shortcut}. "
            f"Spec: {where}.")
