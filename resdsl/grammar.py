"""The spec grammar (grammar.lark) as a Lark parser, and what it says in words: the word lists of its keyword
terminals are read from the grammar itself, so the hints of syntax errors and the tables of units.py can never
disagree with what the parser accepts."""
from __future__ import annotations

import functools
import re
from pathlib import Path

from lark import Lark

GRAMMAR_PATH = Path(__file__).parent / "grammar.lark"
# a terminal defined as alternatives of quoted words: `ORDER: "post" | "bn-after-add" | ...`
_WORD_TERMINAL = re.compile(r'^([A-Z_][A-Z0-9_]*)(?:\.\d+)?\s*:\s*("[^"\n]*"(?:\s*\|\s*"[^"\n]*")*)\s*$', re.M)


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser of spec files (built once; Lark caches its tables on disk)."""
    return Lark(GRAMMAR_PATH.read_text(), parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=False, cache=True)


@functools.lru_cache(maxsize=1)
def terminal_words() -> dict[str, tuple[str, ...]]:
    """Each keyword terminal's words, in the grammar's order: {'ORDER': ('post', 'bn-after-add', ...), ...}."""
    return {m.group(1): tuple(re.findall(r'"([^"\n]*)"', m.group(2)))
            for m in _WORD_TERMINAL.finditer(GRAMMAR_PATH.read_text())}


@functools.lru_cache(maxsize=None)
def alternatives(rule: str) -> dict[str, str]:
    """The alternatives of a rule written `rule: "rule" (rule_a | rule_b | ...)`, each with the keyword its own
    definition starts with: {'unit_basic': 'basic', 'unit_single': 'single', ...} for 'unit'."""
    text = GRAMMAR_PATH.read_text()
    m = re.search(rf'^{rule}\s*:\s*"{rule}"\s*\(([^)]*)\)', text, re.M)
    if m is None:
        raise KeyError(rule)
    out = {}
    for alternative in (a.strip() for a in m.group(1).split("|")):
        first = re.search(rf'^{alternative}\s*:\s*"([^"]+)"', text, re.M)
        if first is None:
            raise KeyError(f"{alternative} does not start with a keyword")
        out[alternative] = first.group(1)
    return out


def expected_terminals(lark_parser, text: str, offset: int) -> set[str] | None:
    """The terminals a Lark LALR parser accepts after ``text[:offset]`` (None when the prefix itself fails): the
    words a syntax error's hint offers, for specs and experiment files alike."""
    try:
        ip = lark_parser.parse_interactive(text[:offset])
        ip.exhaust_lexer()
        return set(ip.accepts())
    except Exception:  # noqa: BLE001 - any failure only means we give no expected list
        return None
