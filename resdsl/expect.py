"""`expect` lines: parse the written figure and compare at the precision the author wrote."""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from . import syntax as ast
from .errors import SpecError
from .ops import shape_text

_SUFFIX = {"": 0, "K": 3, "M": 6, "G": 9, "T": 12}
_QUANTITY = re.compile(r"^([0-9][0-9_]*)(?:\.([0-9]+))?([KMGT]?)$")


@dataclass(frozen=True)
class ExpectResult:
    what: str
    expected: str
    actual: str
    ok: bool
    line: int
    span: object = None  # the Span of the expect item, for located messages

    def to_json(self) -> dict:
        return {"what": self.what, "expected": self.expected, "actual": self.actual, "ok": self.ok,
                "line": self.line}


def _quantity(item: ast.ExpectItem) -> tuple[Decimal, Decimal]:
    """(value, unit of the last written digit) of a figure such as '21.8M' or '269_722'."""
    m = _QUANTITY.match(item.text)
    if not m:
        raise SpecError(f"'{item.text}' is not a count for '{item.what}'", item.span,
                        hint="write a number such as 269722, 21.8M or 3.66G")
    whole, frac, suffix = m.group(1).replace("_", ""), m.group(2) or "", m.group(3)
    exp = _SUFFIX[suffix]
    value = Decimal(f"{whole}.{frac}" if frac else whole) * (Decimal(10) ** exp)
    unit = Decimal(10) ** (exp - len(frac))
    if unit < 1:
        unit = Decimal(1)
    return value, unit


def _format_actual(actual: int, item: ast.ExpectItem) -> str:
    m = _QUANTITY.match(item.text)
    frac, suffix = (m.group(2) or "", m.group(3)) if m else ("", "")
    if not suffix:
        return f"{actual}"
    scaled = Decimal(actual) / (Decimal(10) ** _SUFFIX[suffix])
    return f"{scaled:.{max(len(frac), 3)}f}{suffix} ({actual:,})"


def check(items: list[ast.ExpectItem], facts: dict) -> list[ExpectResult]:
    """Compare each expectation with the compiled facts (params, macs, flops, layers, output shape)."""
    results = []
    for item in items:
        written = ("~" if item.approx else "") + item.text
        if item.what == "output":
            if _QUANTITY.match(item.text) and not re.search(r"[._KMGT]", item.text):
                want = (int(item.text),)
            elif re.fullmatch(r"[0-9]+x[0-9]+x[0-9]+", item.text):
                want = tuple(int(v) for v in item.text.split("x"))
            else:
                raise SpecError(f"'{item.text}' is not a shape", item.span,
                                hint="e.g. 'output 1000' or 'output 64x8x8'")
            got = tuple(facts["output"])
            results.append(ExpectResult("output", written, shape_text(got), got == want, item.span.line,
                                        item.span))
            continue
        if "x" in item.text:
            raise SpecError(f"'{item.what}' is a count, not a shape", item.span)
        actual = int(facts[item.what])
        value, unit = _quantity(item)
        diff = abs(Decimal(actual) - value)
        ok = diff <= unit if item.approx else (value - unit / 2 <= actual < value + unit / 2)
        results.append(ExpectResult(item.what, written, _format_actual(actual, item), bool(ok), item.span.line,
                                    item.span))
    return results
