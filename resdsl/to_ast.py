"""Lark parse tree -> AST (``syntax`` dataclasses): one method per grammar rule; every statement carries its
line's span."""
from __future__ import annotations

import math

from lark import Token, Transformer, v_args

from . import syntax as ast
from .errors import Span, SpecError
from .grammar import alternatives


def _span(path: str, item) -> Span:
    if isinstance(item, Token):
        return Span(path, item.line, item.column, item.end_column if item.end_line == item.line else None)
    meta = item
    end = meta.end_column if getattr(meta, "end_line", None) == meta.line else None
    return Span(path, meta.line, meta.column, end)


def _check_number(tok: Token, path: str) -> float:
    value = float(tok)
    if not math.isfinite(value):
        raise SpecError(f"number '{tok}' is out of range", _span(path, tok))
    return value


@v_args(meta=True)
class ToAst(Transformer):
    """Builds ``syntax`` dataclasses; statements carry their line's span."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    # helpers
    def _s(self, x):
        return _span(self.path, x)

    def _int(self, tok: Token) -> ast.Value:
        return ast.Value(int(tok), self._s(tok))

    def _num(self, tok: Token) -> ast.Value:
        return ast.Value(_check_number(tok, self.path), self._s(tok))

    def start(self, meta, children):
        return children

    def network(self, meta, c):
        return ast.Network(self._s(meta), str(c[0]))

    def extends(self, meta, c):
        return ast.Extends(self._s(meta), str(c[0])[1:-1])

    def include(self, meta, c):
        return ast.Include(self._s(meta), str(c[0])[1:-1])

    def input(self, meta, c):
        tok = c[0]
        ch, h, w = (int(x) for x in str(tok).split("x"))
        sp = self._s(tok)
        return ast.Input(self._s(meta), ast.Value(ch, sp), ast.Value(h, sp), ast.Value(w, sp))

    def stride(self, meta, c):
        return self._int(c[0])

    def stem(self, meta, c):
        kind, kw = c[0]
        return ast.Stem(self._s(meta), kind, **kw)

    def stem_imagenet(self, meta, c):
        width = self._int(c[0]) if c else ast.Value(64, self._s(meta))
        return "imagenet", {"width": width}

    def stem_cifar(self, meta, c):
        return "cifar", {"width": self._int(c[0])}

    def stem_deep(self, meta, c):
        width = self._int(c[0]) if c else ast.Value(64, self._s(meta))
        return "deep", {"width": width}

    def stem_convs(self, meta, c):
        convs = tuple(x for x in c if isinstance(x, ast.StemConv))
        pool = next((x for x in c if isinstance(x, ast.Pool)), None)
        return "conv", {"width": convs[-1].width, "convs": convs, "pool": pool}

    def stem_conv(self, meta, c):
        kernel_tok = c[0]
        stride = c[1] if len(c) == 3 else ast.Value(1, self._s(kernel_tok))
        kh, kw = (int(x) for x in str(kernel_tok).split("x"))
        return ast.StemConv(ast.Value((kh, kw), self._s(kernel_tok)), stride, self._int(c[-1]), self._s(meta))

    def stem_pool(self, meta, c):
        kind, kernel_tok = str(c[0]), c[1]
        kh, kw = (int(x) for x in str(kernel_tok).split("x"))
        stride = c[2] if len(c) > 2 else ast.Value(1, self._s(kernel_tok))
        return ast.Pool(kind, ast.Value((kh, kw), self._s(kernel_tok)), stride, self._s(meta))

    # units / orders / shortcuts
    def unit(self, meta, c):
        kind, kw = c[0]
        return ast.Unit(self._s(meta), kind, **kw)

    def stride_at(self, meta, c):
        return "stride_at", ast.Value(str(c[0]), self._s(c[0]))

    def order(self, meta, c):
        kw = {}
        for key, val in c[1:]:
            if key in kw:
                raise SpecError(f"'{key.replace('_', '-')}' given twice in one order statement", val.span)
            kw[key] = val
        return ast.Order(self._s(meta), str(c[0]), **kw)

    def final_activation(self, meta, c):
        return "final_activation", ast.Value(str(c[0]) == "yes", self._s(c[0]))

    def first_shortcut(self, meta, c):
        return "first_shortcut", ast.Value(str(c[0]), self._s(c[0]))

    def drop_path(self, meta, c):
        words = {}  # the rule and the per-sample/per-batch word, in either order, each once
        for tok in c[1:]:
            if tok.type in words:
                what = "rule (linear, from-zero)" if tok.type == "DROP_RULE" else "'per-sample' or 'per-batch'"
                raise SpecError(f"drop-path takes one {what}; '{words[tok.type]}' was given already",
                                self._s(tok))
            words[tok.type] = str(tok)
        return ast.DropPath(self._s(meta), self._num(c[0]), words.get("DROP_RULE", "linear"),
                            words.get("DROP_PER", "per-sample").removeprefix("per-"))

    def layer_count(self, meta, c):
        return ast.LayerCount(self._s(meta), ast.Value(str(c[0]), self._s(c[0])))

    def se(self, meta, c):
        kw = {"divisor": None, "at": None}
        for key, val in c[1:]:
            if kw[key] is not None:
                raise SpecError(f"'{key}' given twice in one 'se'", val.span)
            kw[key] = val
        return "se", ast.SqueezeExcite(self._int(c[0]), span=self._s(meta), **kw)

    def se_divisor(self, meta, c):
        return "divisor", self._int(c[0])

    def se_at(self, meta, c):
        return "at", ast.Value(str(c[0]), self._s(c[0]))

    def shortcut(self, meta, c):
        kind = str(c[0])
        kw = {}
        for key, val in c[1:]:
            if key in kw:
                raise SpecError(f"'{key.replace('_', '-')}' given twice in one shortcut statement", val.span
                                if hasattr(val, "span") else self._s(meta))
            kw[key] = val
        return ast.Shortcut(self._s(meta), kind, **kw)

    def scale(self, meta, c):
        return "scale", self._num(c[0])

    def residual_scale(self, meta, c):
        return "residual_scale", self._num(c[0])

    def gate(self, meta, c):
        return "gate", ast.Gate(str(c[0]), self._num(c[1]), self._s(meta))

    def dropout(self, meta, c):
        return "dropout", self._num(c[0])

    def avg_down(self, meta, c):
        return "avg_down", ast.Value(True, self._s(meta))

    def projection_bn(self, meta, c):
        return "projection_bn", ast.Value(str(c[0]) == "yes", self._s(c[0]))

    # stages
    def stages(self, meta, c):
        return ast.Stages(self._s(meta), tuple(c))

    def stage_entry(self, meta, c):
        tok = c[0]
        width, units = (int(x) for x in str(tok).split("x"))
        sp = self._s(tok)
        stride = c[1] if len(c) > 1 else ast.Value(1, sp)
        return ast.StageEntry(ast.Value(width, sp), ast.Value(units, sp), stride, self._s(meta))

    def stage_override(self, meta, c):
        return ast.StageOverride(self._s(meta), self._int(c[0]), c[1])

    # head / init / expect
    def head(self, meta, c):
        dropout = next((item[1] for item in c if isinstance(item, tuple)), None)  # ("dropout", P)
        classes = next((item for item in c if not isinstance(item, tuple)), None)
        return ast.Head(self._s(meta), classes, dropout)

    def head_fc(self, meta, c):
        return self._int(c[0])

    def init(self, meta, c):
        kw = {}
        for key, val, span in c:
            if key in kw:
                raise SpecError(f"'{INIT_WORDS[key]}' given twice in one init statement", span)
            kw[key] = val
        if "zero_last_bn" in kw and "zero_last" in kw:
            raise SpecError("'zero-last-bn' and 'zero-last' both start F at zero: give one of them", span,
                            hint="zero-last zeroes F's last layer, a BN or a convolution; zero-last-bn its last BN "
                                 "alone")
        return ast.Init(self._s(meta), **kw)

    def init_he(self, meta, c):
        return "fan", str(c[0]) if c else "fan-out", self._s(meta)

    def zero_last_bn(self, meta, c):
        return "zero_last_bn", True, self._s(meta)

    def zero_last(self, meta, c):
        return "zero_last", True, self._s(meta)

    def expect(self, meta, c):
        return ast.Expect(self._s(meta), tuple(c))

    def expect_item(self, meta, c):
        what = str(c[0])
        approx = len(c) == 3
        tok = c[-1]
        return ast.ExpectItem(what, str(tok), approx, self._s(meta))

    # recipes
    def recipe_use(self, meta, c):
        return ast.RecipeUse(self._s(meta), str(c[0]))

    def recipe_def(self, meta, c):
        name = str(c[0])
        base = None
        fields = []
        for item in c[1:]:
            if isinstance(item, ast.Value):
                base = item
            else:
                fields.append(item)
        return ast.RecipeDef(self._s(meta), name, base, tuple(fields))

    def recipe_base(self, meta, c):
        return ast.Value(str(c[0]), self._s(c[0]))

    def sched_step(self, meta, c):
        milestones = [int(x) for x in c if isinstance(x, Token)]
        out = {"kind": "step", "milestones": milestones, "gamma": 0.1}
        for x in c:
            if isinstance(x, tuple):
                out[x[0]] = x[1]
        return out

    def sched_plateau(self, meta, c):
        out = {"kind": "plateau", "gamma": 0.1, "patience": 5}
        for key, val in c:
            out[key] = val
        return out

    def sched_cosine(self, meta, c):
        return {"kind": "cosine"}

    def sched_constant(self, meta, c):
        return {"kind": "constant"}

    def gamma(self, meta, c):
        return "gamma", _check_number(c[0], self.path)

    def patience(self, meta, c):
        return "patience", int(c[0])

    def r_warmup(self, meta, c):
        """`warmup [N [unit]] lr X [until-error E%]`: at most N iterations (or epochs), ended early once the
        training error is below E%; without N only the error ends it ([R]: "until the training error is below
        80%"). `warmup none`: no warm-up (a spec that extends a recipe with one)."""
        if not c:
            return ast.RecipeField("warmup", None, self._s(meta))
        out = {"length": None, "unit": None, "lr": None, "until_error": None}
        rest = list(c)
        if rest[0].type == "INT":
            out["length"] = int(rest.pop(0))
        if rest[0].type == "LENGTH_UNIT":
            out["unit"] = str(rest.pop(0))
        out["lr"] = _check_number(rest[0], self.path)
        if len(rest) > 1:
            out["until_error"] = rest[1]
        elif out["length"] is None:
            raise SpecError("a warm-up needs a length or an 'until-error' rule to end it", self._s(meta),
                            hint="e.g. 'warmup 400 iterations lr 0.01' or 'warmup lr 0.01 until-error 80%'")
        return ast.RecipeField("warmup", out, self._s(meta))

    def until_error(self, meta, c):
        return _check_number(c[0], self.path)

    def augmentation(self, meta, c):
        return c[0]

    def __default__(self, data, children, meta):
        """A recipe field or an augmentation, by the tables below; every other rule has its own method."""
        if data in _RECIPE_FIELDS:
            key, convert = _RECIPE_FIELDS[data]
            return ast.RecipeField(key, convert(children, self.path), self._s(meta))
        if data in _AUGMENTATIONS:
            return _AUGMENTATIONS[data](children)
        if data in _UNIT_NUMBERS:  # `expansion 4`, `cardinality 32`, ...: (its syntax.Unit field, the number)
            return data, self._int(children[0])
        if data in alternatives("unit"):  # a unit kind: its word and its options (units.py says what it builds)
            options = {}
            for key, val in children:
                if key in options:
                    raise SpecError(f"'{key.replace('_', '-')}' given twice in one unit statement", val.span)
                options[key] = val
            return alternatives("unit")[data], options
        return super().__default__(data, children, meta)


INIT_WORDS = {"fan": "he", "zero_last_bn": "zero-last-bn", "zero_last": "zero-last"}  # Init field -> word
_UNIT_NUMBERS = ("expansion", "cardinality", "base_width", "width_factor")  # unit options that are one integer


# recipe field rule -> (its key in the recipe, its value from the rule's children and the file's path)
_RECIPE_FIELDS = {
    "r_optimizer": ("optimizer", lambda c, path: str(c[0])),
    "r_lr": ("lr", lambda c, path: _check_number(c[0], path)),
    "r_momentum": ("momentum", lambda c, path: _check_number(c[0], path)),
    "r_nesterov": ("nesterov", lambda c, path: str(c[0]) == "yes"),
    "r_weight_decay": ("weight_decay", lambda c, path: _check_number(c[0], path)),
    "r_batch": ("batch", lambda c, path: int(c[0])),
    "r_length": ("length", lambda c, path: {"value": int(c[0]), "unit": str(c[1])}),
    "r_schedule": ("schedule", lambda c, path: c[0]),
    "r_augment": ("augment", lambda c, path: list(c)),
    "r_normalize": ("normalize", lambda c, path: str(c[0])),
    "r_dataset": ("dataset", lambda c, path: str(c[0])),
    "r_split": ("split", lambda c, path: [int(c[0]), int(c[1])]),
    "r_label_smoothing": ("label_smoothing", lambda c, path: _check_number(c[0], path)),
    "r_test": ("test", lambda c, path: _test_view(c)),
}


def _test_view(c) -> str | dict:
    """A recipe's `test`: its name alone, or a table with its sizes (resdsl/train/views.py says why)."""
    kind = str(c[0])
    if len(c) == 1:
        return kind
    if kind == "multi-scale":
        return {"view": kind, "scales": [int(n) for n in c[1:]]}
    return {"view": kind, "scale": int(c[1]), "crop": int(c[2])}


_AUGMENTATIONS = {
    "aug_pad_crop": lambda c: {"kind": "pad-crop", "padding": int(c[0])},
    "aug_flip": lambda c: {"kind": "flip"},
    "aug_scale": lambda c: {"kind": "scale", "min": int(c[0]), "max": int(c[1]), "crop": int(c[2])},
    "aug_color": lambda c: {"kind": "color"},
    "aug_lighting": lambda c: {"kind": "lighting"},
    "aug_resized_crop": lambda c: {"kind": "random-resized-crop", "size": int(c[0])},
}
