"""The one place that chains the phases: parse -> resolve -> lower -> shapes -> cost -> expect."""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import shlex
import sys
import warnings
from dataclasses import dataclass, field

from . import cost as cost_pass
from . import expect as expect_pass
from . import ir as ir_mod
from .catalog import locate
from .errors import SpecError, SpecWarning, render_diagnostic
from .reading import starts_like_spec
from .lower import lower
from .resolve import ResolvedSpec, resolve_path, resolve_text
from .shapes import infer_shapes


@dataclass(repr=False)
class CheckedNetwork:
    """A spec compiled to a shape-checked, counted IR; what every backend starts from."""

    spec: ResolvedSpec
    graph: object  # networkx.DiGraph
    params: int
    macs: int
    layers: int
    parts: dict  # stem, each stage by name, head -> params, macs, output (cost.count)
    expects: list = field(default_factory=list)

    def __repr__(self) -> str:  # the dataclass's would print the whole resolved spec
        shape = "x".join(map(str, self.input_shape))
        return (f"<CheckedNetwork {self.name} ({self.spec.path}): {self.layers} layers, {self.params:,} params, "
                f"{self.macs:,} MACs, input {shape}>")

    @property
    def name(self) -> str:
        return self.graph.graph["name"]

    @property
    def input_shape(self) -> tuple:
        return tuple(self.graph.graph["input"])

    @property
    def output_shape(self) -> tuple:
        return tuple(self.graph.nodes["output"]["shape"])

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def recipe(self) -> dict | None:
        return self.graph.graph["recipe"]

    @property
    def ok(self) -> bool:
        """True when every `expect` line holds."""
        return all(r.ok for r in self.expects)

    def stages(self) -> list[dict]:
        """One row per stage: name, units, output shape, params, MACs."""
        rows = []
        for st in self.graph.graph["stages"]:
            g = self.parts[st["name"]]
            rows.append({"name": st["name"], "units": st["units"], "unit": st["unit"], "width": st["width"],
                         "stride": st["stride"], "output": g["output"], "params": g["params"], "macs": g["macs"]})
        return rows

    def to_json(self) -> dict:
        """The JSON object printed by ``resdsl compile --json``."""
        return {
            "name": self.name,
            "spec": self.spec.path,
            "input": list(self.input_shape),
            "output": list(self.output_shape),
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "layers": self.layers,
            "order": self.graph.graph["order"],
            "stem": {k: self.parts["stem"][k] for k in ("params", "macs", "output")},
            "stages": [{k: r[k] for k in ("name", "units", "output", "params", "macs")} for r in self.stages()],
            "head": {k: self.parts["head"][k] for k in ("params", "macs", "output")},
            "expect": [r.to_json() for r in self.expects],
            "recipe": self.recipe,
        }

    def dump_ir(self) -> str:
        """Deterministic one-line-per-op text of the checked IR (used by the golden tests)."""
        return ir_mod.dump(self.graph)

    def spec_hash(self) -> str:
        """What identifies the network and recipe a run was trained from (config.json's ``spec_hash``): the checked
        IR without source locations, and the spec's own recipe. An emitted trainer records the same one while its
        model.py and recipe.json are as emitted, so runs move between it and `resdsl train`."""
        ir = ir_mod.dump(self.graph, locations=False)  # where the spec lies is no part of what it describes
        text = ir + json.dumps(self.recipe, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def warnings(self) -> list[tuple[str, object, str]]:
        """(message, span, hint) for what compiles but is most likely not meant, said as a warning: an input
        written channels-last (`input 32x32x3` is 32 channels of 32x3-pixel images)."""
        inp = self.spec.get("input")
        c, h, w = inp.channels.value, inp.height.value, inp.width.value
        if c >= 8 and w <= 4 and w < h:
            return [(f"input {c}x{h}x{w} is {c} channels of {h}x{w}-pixel images", inp.span,
                     f"resdsl reads channels x height x width: {w}x{c}x{h} for {w}-channel {c}x{h} images")]
        return []

    def said_warnings(self) -> list[str]:
        """Each of :meth:`warnings` as said (``file:line:col: warning: ...``, the line, a caret, the hint): by the
        command line on stderr, and by ``compile_spec`` as a ``SpecWarning``."""
        return [render_diagnostic("warning", message, span, hint, self.spec.sources.get(span.path))
                for message, span, hint in self.warnings()]

    def files(self) -> dict:
        """config.json's ``spec_files``: the spec's path, the text of every file it was compiled from (itself,
        the specs it extends, the recipe files it includes) and the spellings that reached a file under another
        path (resolve._Reading.aliases), so a run can be rebuilt as it was trained after its
        spec is edited, moved or replaced by a newer resdsl's (see compile_run)."""
        return {"path": self.spec.path, "files": dict(self.spec.sources), "aliases": dict(self.spec.aliases)}

    def source_at(self, out) -> str | None:
        """The file this network was compiled from (the spec, a spec it extends, a recipe file it includes) that
        the output path ``out`` is, or None: writing there would replace the spec with what it compiles to."""
        for source in self.spec.sources:
            try:
                if os.path.samefile(out, source):
                    return source
            except (OSError, ValueError, TypeError):  # either is missing or not a file name: not the same file
                continue
        return None

    def is_trained_from(self, config) -> bool | None:
        """Whether a run's config.json (``config``) records this spec's hash; None where it records none (a run
        of another program, or from before resdsl kept it)."""
        saved = config.get("spec_hash") if isinstance(config, dict) else None
        return saved == self.spec_hash() if isinstance(saved, str) else None



def compile_spec(path: str | os.PathLike | None = None, *, text: str | None = None, name: str = "<spec>",
                 num_classes: int | None = None, in_channels: int | None = None,
                 input_size: tuple[int, int] | None = None) -> CheckedNetwork:
    """Compile a spec file (``path``), a packaged spec by name (``"resnet50"``, ``"torchvision/resnet50"``: see
    ``resdsl list`` and resdsl.catalog; an existing file wins over a name) or spec ``text`` into a checked network.
    A ``str`` ``path`` that holds a line break and names no file is spec text (pass a ``pathlib.Path`` to mean a
    path).

    ``num_classes``, ``in_channels`` and ``input_size`` (H, W) replace the spec's head and input, e.g. to fit
    a dataset; the shape checks then run on the new shapes, and the spec's `expect` lines, which are about its
    own shapes, are dropped. Raises ``SpecError`` (its text is the located message) for any problem in the
    spec. `expect` lines are evaluated, not raised: see ``CheckedNetwork.expects`` and ``.ok``. What compiles
    but is most likely not meant is a ``SpecWarning`` (see ``CheckedNetwork.warnings``).
    """
    if is_spec_text(path) and text is None:
        path, text = None, path  # a file name may hold a line feed: one that exists is read
    if path is None and text is None:
        raise TypeError("compile_spec takes a spec file or packaged spec's name, or text=...")
    if path is not None and text is not None:
        raise TypeError("compile_spec takes a path or text=..., not both")
    resolved = resolve_path(locate(path)) if path is not None else resolve_text(text, name)
    net = check_overridden(resolved, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    for text in net.said_warnings():
        warnings.warn(SpecWarning(text), stacklevel=_callers_level())
    return net


def is_spec_text(value) -> bool:
    """Whether a string given where a spec is taken is spec text: it holds a line break and names no file (a file
    name may hold one: a file that exists is read)."""
    return isinstance(value, str) and "\n" in value and not os.path.lexists(value)


def _callers_level() -> int:
    """warnings.warn's stacklevel that names the first line outside resdsl (the user's build_model or draw call,
    not resdsl's own call of compile_spec)."""
    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(2)  # the caller of compile_spec
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        level, frame = level + 1, frame.f_back
    return level


def compile_run(config: dict, where: str) -> tuple[str, CheckedNetwork]:
    """The spec a run was trained from (``config``: its config.json; ``where``: the run's folder, for
    messages), compiled, and its name as the run gives it. The run's own copy of its spec files
    (``spec_files``) is compiled where it has one: the files on disk may have changed since. Runs without one
    (older resdsl, emitted trainers) are rebuilt from the file or packaged spec their config.json names."""
    name = config.get("spec")
    saved = config.get("spec_files")
    if saved is not None:
        from .train.record import SPEC_FILES, problem  # imports nothing else: no torch

        wrong = problem(saved, SPEC_FILES, "spec_files")
        if wrong:
            raise SpecError(f"{where}: config.json is damaged ({wrong}), so the network cannot be rebuilt", None)
        try:
            net = check(resolve_path(saved["path"], saved["files"], saved.get("aliases")))
        except SpecError as err:
            err.notes.append(f"this text is the run's copy of its spec: {where}/config.json, spec_files")
            raise
        return name if isinstance(name, str) else saved["path"], net
    path = config.get("spec_path")
    spec = path if isinstance(path, str) and os.path.isfile(path) else name if isinstance(name, str) else path
    if not isinstance(spec, str):
        shown = shlex.quote(where)
        raise SpecError(f"{where}: config.json names no spec, so the network cannot be rebuilt", None,
                        hint=f"name it yourself: resdsl train SPEC --resume {shown}, or resdsl eval SPEC "
                             f"--checkpoint {shown}")
    try:
        return spec, compile_spec(spec)
    except SpecError as err:  # a record names any file: its text is shown only where it is recognisably a spec
        read = err.source is not None and err.span is not None and err.span.path == spec  # an error in its text
        if not read or starts_like_spec(err.source, err):
            raise
        raise SpecError(f"{where}/config.json names {spec} as the run's spec, which is not a resdsl spec (its text "
                        "is not shown)", None, hint=f"name the spec yourself: resdsl eval SPEC --checkpoint "
                                                    f"{shlex.quote(where)}") from None


def check_overridden(resolved: ResolvedSpec, **given) -> CheckedNetwork:
    """``check`` of ``resolved`` with the given ``override``s (None: the spec's own); an error they cause says
    which values were given, since its caret is at the spec's statement."""
    if all(v is None for v in given.values()):
        return check(resolved)
    try:
        override(resolved, **given)
        return check(resolved)
    except SpecError as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
        err.notes.append(f"the shapes are the spec's with {shown} (given to compile_spec or build_model)")
        raise


def override(resolved: ResolvedSpec, *, num_classes=None, in_channels=None, input_size=None) -> None:
    """Replace the input shape and/or class count of a resolved spec (spans stay at the original statements)."""
    from dataclasses import replace

    from .syntax import Value

    _check_override_values(num_classes, in_channels, input_size)
    inp = resolved.settings["input"]
    if in_channels is not None:
        inp = replace(inp, channels=Value(int(in_channels), inp.channels.span))
    if input_size is not None:
        h, w = input_size
        inp = replace(inp, height=Value(int(h), inp.height.span), width=Value(int(w), inp.width.span))
    resolved.settings["input"] = inp
    if num_classes is not None:
        head = resolved.settings["head"]
        if head.classes is None:
            raise resolved.locate(SpecError("this network has no classifier ('head avgpool' without fc), so the "
                                        "number of classes cannot be set", head.span))
        resolved.settings["head"] = replace(head, classes=Value(int(num_classes), head.classes.span))
    resolved.expects = []  # the spec's expectations are about the spec's own shapes


def _check_override_values(num_classes, in_channels, input_size) -> None:
    """Python values of the right kind (a float or a bool would be truncated silently); their range is the spec's
    to check, located at its statement."""
    def whole(value) -> bool:  # a Python or NumPy integer
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None and not whole(value):
            raise TypeError(f"{key} must be a whole number, not {value!r}")
    if input_size is not None and not (isinstance(input_size, (tuple, list)) and len(input_size) == 2
                                       and all(whole(v) for v in input_size)):
        raise TypeError(f"input_size must be (height, width), two whole numbers, not {input_size!r}")


def check(resolved: ResolvedSpec) -> CheckedNetwork:
    """Lower a resolved spec and run the shape, cost and expect passes."""
    try:
        g = lower(resolved)
        ir_mod.validate(g)
        infer_shapes(g)
        counts = cost_pass.count(g)
        facts = {"params": counts["params"], "macs": counts["macs"], "flops": 2 * counts["macs"],
                 "layers": counts["layers"], "output": g.nodes["output"]["shape"]}
        expects = expect_pass.check(resolved.expects, facts)
    except SpecError as err:
        raise resolved.locate(err) from None
    return CheckedNetwork(resolved, g, counts["params"], counts["macs"], counts["layers"], counts["parts"], expects)
