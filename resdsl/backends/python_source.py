"""Checked IR -> readable, standalone PyTorch source (imports only torch); the torch backend executes it.

Each distinct residual unit in the IR becomes one named ``nn.Module`` class (units whose generated code is
identical share a class); stages become ``nn.Sequential`` lists built with loops; module names follow
torchvision's (``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``) so its state_dicts load unchanged.
"""
from __future__ import annotations

import keyword
import math
import re
from collections import OrderedDict

from ..ir import inputs_of
from ..ops import OPS

_ORDER_WORD = {"post": "", "bn-after-add": "BnAfterAdd", "relu-before-add": "ReluBeforeAdd",
               "relu-preact": "ReluPreact", "preact": "Preact"}
_ORDER_DOC = {"post": "original post-activation ([I] Fig. 4a)", "bn-after-add": "BN after addition ([I] Fig. 4b)",
              "relu-before-add": "ReLU before addition ([I] Fig. 4c)",
              "relu-preact": "ReLU-only pre-activation ([I] Fig. 4d)", "preact": "full pre-activation ([I] Fig. 4e)"}
_PATH_VAR = {"shared": "x", "residual": "out", "shortcut": "identity", "gate": "g", "merge": "out"}
_ARGS = ("in_channels", "width", "out_channels", "stride")


# ---- escaping: every value that enters generated source passes through py_text -- inside literals (py_str, _lit),
# comments (py_text) and docstrings (py_doc); identifiers made from spec words pass through py_ident. Spec-derived
# strings (file names, extends/include paths, the network name) are untrusted: a quote, a line break of any kind
# Python or an editor knows (\n, \r, \x0b, \x0c, \x1c-\x1e, \x85, \u2028, \u2029), a backslash or an undecodable
# byte must never end a literal, a comment or a docstring, nor make the file invalid or non-ASCII.


def py_text(value) -> str:
    """``str(value)`` as the body of a Python string literal: printable ASCII only, with backslashes, both quote
    characters and every other character escaped. The result can stand inside '...', "...", a docstring or a
    comment without ending it, and ``eval("'" + py_text(v) + "'") == str(v)``."""
    out = []
    for ch in str(value):
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])  # \n, \x85, \u2028, \udcff (an undecodable file-name byte), ...
    return "".join(out)


def py_str(value) -> str:
    """A Python string literal for ``str(value)``: pure ASCII, on one line; evaluates to ``str(value)``."""
    return "'" + py_text(value) + "'"


def py_doc(value) -> str:
    """Docstring text showing ``value`` as ``py_text`` writes it: the docstring's value is then printable ASCII too
    (a docstring holding an undecodable byte, as a surrogate, breaks ``nn.Module`` subclassing)."""
    return py_text(py_text(value))


def py_ident(value, default: str = "model") -> str:
    """A Python identifier made from ``value``: ASCII letters, digits and underscores only, never a keyword."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(value)) or default
    if name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    return name


def _lit(v) -> str:
    """A value from the IR as a Python literal (numbers and flags by type, strings escaped)."""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"no Python literal for the number {v!r}")
        return repr(float(v))
    if isinstance(v, str):
        return py_str(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(map(_lit, v)) + ("," if len(v) == 1 else "") + ")"
    raise TypeError(f"no Python literal for {type(v).__name__}")


def _num(d: dict, key: str, self_prefix: str = "") -> str:
    """A numeric attribute as code: the constructor argument it comes from (``sym``), or a literal; a square
    window's (k, k) is written as k."""
    role = d.get("sym", {}).get(key)
    if role:
        return f"{self_prefix}{role}"
    v = d[key]
    return _lit(v[0] if isinstance(v, tuple) else v)


def _module_expr(d: dict) -> str | None:
    """The op's nn.Module constructor (the op table's), or None for an op written as a function call."""
    module = OPS[d["op"]].module
    return module(d, lambda key: _num(d, key)) if module else None


def _call_expr(d: dict, ins: list[str], inplace: bool) -> str:
    """The op's functional forward expression over its input variables (the op table's)."""
    call = OPS[d["op"]].call
    if call is None:
        raise AssertionError(f"no Python form for IR op {d['op']}")
    return call(d, ins, lambda key: _num(d, key), inplace)


class _Emitter:
    def __init__(self, net):
        self.net = net
        self.g = net.graph
        self.classes: OrderedDict[str, str] = OrderedDict()  # class body -> class name
        self.class_docs: dict[str, str] = {}

    # ---- units -------------------------------------------------------------------------------
    def unit_nodes(self) -> OrderedDict:
        units: OrderedDict[tuple, list] = OrderedDict()
        for n, d in self.g.nodes(data=True):
            if "stage" in d:
                units.setdefault((d["stage"], d["unit"]), []).append(n)
        return units

    def unit_body(self, nodes: list[str]) -> str:
        """The class body (without the class line) for one unit's nodes."""
        g = self.g
        first = g.nodes[nodes[0]]
        prefix = f"layer{first['stage']}.{first['unit']}."
        local = {n: n[len(prefix):] for n in nodes}
        inside = set(nodes)
        var_of: dict[str, str] = {}
        init_lines, fwd, special = [], [], []
        declared_seq = False
        for n in nodes:
            d = g.nodes[n]
            name = local[n]
            ins = [var_of[u] if u in inside else "x" for u in inputs_of(g, n)]
            var = _PATH_VAR[d["path"]]
            op = d["op"]
            expr = _module_expr(d)
            if name.startswith("downsample."):
                if not declared_seq:
                    parts = [_module_expr(g.nodes[m]) for m in nodes if local[m].startswith("downsample.")]
                    init_lines.append(f"self.downsample = nn.Sequential({', '.join(parts)})")
                    fwd.append(f"{var} = self.downsample({ins[0]})")
                    declared_seq = True
                var_of[n] = var
                continue
            if expr is not None:
                init_lines.append(f"self.{name} = {expr}")
                fwd.append(f"{var} = self.{name}({ins[0]})")
                if OPS[op].then:
                    fwd.append(f"{var} = {OPS[op].then.format(var)}")
            else:
                src = inputs_of(g, n)[0]
                inplace = src in inside and g.out_degree(src) == 1 and g.nodes[src]["op"] != "relu"
                fwd.append(f"{var} = {_call_expr(d, ins, inplace)}")
            var_of[n] = var
            if d.get("zero_init"):
                special.append(f"nn.init.zeros_(self.{name}.weight)")
            if op == "conv" and d.get("bias_init") is not None:
                special.append(f"nn.init.constant_(self.{name}.bias, {_lit(float(d['bias_init']))})")
        fwd.append(f"return {var_of[nodes[-1]]}")
        lines = ["def __init__(self, in_channels, width, out_channels, stride=1):",
                 "    super().__init__()"]
        keeps = dict.fromkeys(arg for n in nodes for arg in OPS[g.nodes[n]["op"]].keeps)
        lines += [f"    self.{arg} = {arg}" for arg in keeps]
        lines += [f"    {ln}" for ln in init_lines]
        if special:
            lines += ["", "def init_unit_parameters(self):",
                      "    \"\"\"Unit-specific initialisation, applied after the network-wide He/BN init.\"\"\""]
            lines += [f"    {ln}" for ln in special]
        lines += ["", "def forward(self, x):"] + [f"    {ln}" for ln in fwd]
        return "\n".join(lines)

    def class_name(self, nodes: list[str], taken: set[str]) -> str:
        g = self.g
        d0 = g.nodes[nodes[0]]
        stage = self.g.graph["stages"][d0["stage"] - 1]
        base = f"{_ORDER_WORD[stage['order']]}{d0['unit_kind'].capitalize()}Unit"
        ops = {g.nodes[n]["op"] for n in nodes}
        names = {n.rsplit(".", 1)[-1] if "downsample" not in n else "downsample" for n in nodes}
        words = []
        if "downsample" in names:
            words.append("Projection")
        if "pad" in ops:
            words.append("Pad")
        if any(g.nodes[n]["path"] == "shared" for n in nodes) and "Projection" not in words:
            words.append("PreactShared")
        if "sigmoid" in ops:
            words.append("Gated")
        if "dropout" in ops:
            words.append("Dropout")
        if "scale" in ops:
            words.append("Scaled")
        name = base + "".join(words)
        candidate, k = name, 2
        while candidate in taken:
            candidate, k = f"{name}{k}", k + 1
        return candidate

    def class_doc(self, nodes: list[str]) -> str:
        g = self.g
        d0 = g.nodes[nodes[0]]
        st = g.graph["stages"][d0["stage"] - 1]
        ops = [g.nodes[n] for n in nodes]
        kind = {"basic": "[3x3, 3x3]", "single": "[3x3]"}.get(d0["unit_kind"], "[1x1, 3x3, 1x1] bottleneck")
        sc = "projection shortcut" if any("downsample" in n for n in nodes) else (
            "zero-padding shortcut (option A)" if any(o["op"] == "pad" for o in ops) else (
                "identity shortcut" if any(o["op"] == "add" for o in ops) else "no shortcut (plain)"))
        extras = []
        for o in ops:
            if o["op"] == "conv" and o.get("path") == "gate":
                add = next(a for a in ops if a["op"] == "add")
                extras.append(f"{add['gate']} gating g = sigmoid(1x1 conv + b), b initialised to {o['bias_init']:g}")
            elif o["op"] == "scale":
                extras.append(f"{o['path']} path scaled by {o['factor']:g}")
            elif o["op"] == "dropout":
                extras.append(f"dropout {o['p']:g} on the shortcut")
        if extras:
            sc += ", " + ", ".join(extras)
        spans = sorted({(o["span"].path, o["span"].line) for o in ops}
                       | {(o["origin"].path, o["origin"].line) for o in ops if o.get("origin")})
        where = ", ".join(f"{py_doc(p)}:{ln}" for p, ln in spans)  # file names are untrusted
        return f"{kind} unit, {_ORDER_DOC[st['order']]}, {sc}. Spec: {where}."

    # ---- whole file ------------------------------------------------------------------------------
    def emit(self) -> str:
        from .. import __version__

        net, g = self.net, self.g
        stage_runs: list[list[tuple[str, tuple]]] = [[] for _ in g.graph["stages"]]
        taken: set[str] = set()
        for (stage, _unit), nodes in self.unit_nodes().items():
            body = self.unit_body(nodes)
            if body not in self.classes:
                cname = self.class_name(nodes, taken)
                taken.add(cname)
                self.classes[body] = cname
                self.class_docs[cname] = self.class_doc(nodes)
            a = g.nodes[nodes[0]]["unit_args"]
            stage_runs[stage - 1].append((self.classes[body], tuple(a[k] for k in _ARGS)))
        out = [self.header(__version__), "import torch", "import torch.nn.functional as F", "from torch import nn", ""]
        out += [f"SPEC = {py_str(net.spec.path)}", f"INPUT_SHAPE = {_lit(tuple(net.input_shape))}",
                f"OUTPUT_SHAPE = {_lit(tuple(net.output_shape))}", f"PARAMS = {_lit(net.params)}",
                f"MACS = {_lit(net.macs)}", f"LAYERS = {_lit(net.layers)}", "", ""]
        used = {d["op"] for _, d in g.nodes(data=True)}
        for op in OPS.values():
            if op.helper and op.kind in used:
                out += [*op.helper, "", ""]
        for body, cname in self.classes.items():
            out.append(f"class {cname}(nn.Module):")
            out.append(f"    \"\"\"{self.class_docs[cname]}\"\"\"")
            out.append("")
            out += [f"    {ln}" if ln else "" for ln in body.splitlines()]
            out += ["", ""]
        out += self.network_class(stage_runs)
        out += self.init_and_build()
        return "\n".join(out).rstrip() + "\n"

    def header(self, version: str) -> str:
        net = self.net
        shape = "x".join(map(str, net.input_shape))
        return (f'"""{py_doc(net.name)}: PyTorch model generated by resdsl {py_doc(version)} from '
                f'{py_doc(net.spec.path)}.\n\n'
                f"Checked by the compiler: {net.params:,} parameters, {net.macs:,} multiply-accumulates per "
                f"{shape} image\n({2 * net.macs / 1e9:.3f} GFLOPs), {net.layers} layers, output "
                f"{'x'.join(map(str, net.output_shape))}.\n"
                f"Imports only torch. `build()` returns the initialised model.\n\"\"\"")

    def _top_nodes(self, group: str) -> list[str]:
        return [n for n, d in self.g.nodes(data=True) if d["group"] == group and d["op"] not in ("input", "output")]

    def network_class(self, stage_runs) -> list[str]:
        g = self.g
        init, fwd = [], []
        stem, head = self._top_nodes("stem"), self._top_nodes("head")
        for n in stem + ["@stages"] + head:
            if n == "@stages":
                for i, runs in enumerate(stage_runs, start=1):
                    st = g.graph["stages"][i - 1]
                    init.append(f"# stage {i}: {st['units']} x {st['unit']} units, width {st['width']}, "
                                f"stride {st['stride']} ({py_text(st['span'].path)}:{st['span'].line})")
                    init.append(f"self.layer{i} = nn.Sequential(")
                    for cname, args, count in _runs(runs):
                        call = f"{cname}({_lit(args[0])}, {_lit(args[1])}, {_lit(args[2])}" + (
                            f", stride={_lit(args[3])})" if args[3] != 1 else ")")
                        init.append(f"    {call}," if count == 1 else f"    *[{call} for _ in range({count})],")
                    init.append(")")
                    fwd.append(f"x = self.layer{i}(x)")
                continue
            d = g.nodes[n]
            expr = _module_expr(d)
            if expr is not None:
                init.append(f"self.{n} = {expr}")
                fwd.append(f"x = self.{n}(x)")
                if OPS[d["op"]].then:
                    fwd.append(f"x = {OPS[d['op']].then.format('x')}")
            else:
                fwd.append(f"x = {_call_expr(d, ['x'], inplace=True)}")
        # the Network's arguments: the numbers its stem and head take from it (`sym`: in_channels, num_classes)
        args = {role: g.nodes[n][key] for n in stem + head for key, role in g.nodes[n].get("sym", {}).items()}
        params = ", ".join(f"{role}={_lit(v)}" for role, v in args.items())
        lines = ["class Network(nn.Module):",
                 f"    \"\"\"{py_doc(self.net.name)}: {len(stage_runs)} stages, {self.net.layers} layers.\"\"\"", "",
                 f"    def __init__(self, {params}):", "        super().__init__()"]
        lines += [f"        {ln}" for ln in init]
        lines += ["", "    def forward(self, x):"] + [f"        {ln}" for ln in fwd] + ["        return x", "", ""]
        return lines

    def init_and_build(self) -> list[str]:
        init = self.g.graph["init"]
        mode = "fan_out" if init["fan"] == "fan-out" else "fan_in"
        return [
            "def init_weights(model):",
            f"    \"\"\"He (MSRA) normal init, {mode}, for convolutions ([R]); BN gamma 1, beta 0 and fresh running",
            "    statistics; PyTorch's default for the fc layer; then unit-specific initialisation (gate biases,",
            "    zero-init of last BNs).\"\"\"",
            "    for m in model.modules():",
            "        if isinstance(m, nn.Conv2d):",
            f"            nn.init.kaiming_normal_(m.weight, mode={mode!r}, nonlinearity=\"relu\")",
            "            if m.bias is not None:",
            "                nn.init.zeros_(m.bias)",
            "        elif isinstance(m, (nn.BatchNorm2d, nn.Linear)):",
            "            m.reset_parameters()",
            "    for m in model.modules():",
            "        if hasattr(m, \"init_unit_parameters\"):",
            "            m.init_unit_parameters()",
            "    return model",
            "",
            "",
            "def build(**kwargs):",
            "    \"\"\"The initialised network; kwargs (in_channels, num_classes) adapt it to another dataset.\"\"\"",
            "    return init_weights(Network(**kwargs))",
            "",
            "",
            "if __name__ == \"__main__\":",
            "    model = build()",
            "    n = sum(p.numel() for p in model.parameters())",
            "    y = model.eval()(torch.zeros(1, *INPUT_SHAPE))",
            "    print(f\"{SPEC}: {n:,} parameters (expected {PARAMS:,}), output {tuple(y.shape[1:])}\")",
        ]


def _runs(units: list[tuple[str, tuple]]):
    """Collapse consecutive identical (class, args) into (class, args, count)."""
    out: list[list] = []
    for cname, args in units:
        if out and out[-1][0] == cname and out[-1][1] == args:
            out[-1][2] += 1
        else:
            out.append([cname, args, 1])
    return [tuple(r) for r in out]


def emit_python(net) -> str:
    """Standalone PyTorch source for a checked network (deterministic: same IR, same text)."""
    return _Emitter(net).emit()
