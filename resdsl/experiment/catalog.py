"""The catalogue of packaged experiments: every ``.exp`` file under experiments/ by name, e.g. ``r-table6``.

Naming rule: an experiment's name is its file's stem (``experiments/r-table6.exp`` is ``r-table6``), which is
also the name its ``experiment`` line gives. Wherever an experiment is accepted, an existing file path wins over
a name, as for specs (``resdsl.catalog``).

The experiments folder is ``resdsl/experiments/`` in an installed wheel (pyproject.toml maps the package
``resdsl.experiments`` onto the top-level ``experiments/``) and the repository's ``experiments/`` in a source
checkout or an editable install. Nothing here imports torch, or trains anything.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..errors import Span, SpecError
from .parse import parse_experiment

SUFFIX = ".exp"
LISTING_HINT = "`resdsl list experiments` shows every packaged experiment"


@dataclass(frozen=True)
class Entry:
    """One packaged experiment, as listed: its name, file, paper reference ('[R] Table 6, Fig. 6'), title, and
    how many rows it trains, each ``seeds`` times."""

    name: str
    path: Path
    source: str
    title: str
    rows: int
    seeds: int


def experiments_root() -> Path:
    """The folder of packaged experiments: resdsl/experiments/ when installed from a wheel, else the
    checkout's experiments/."""
    return catalog.packaged_folder("experiments")


def names() -> list[str]:
    """Every packaged experiment's name, sorted."""
    return sorted(p.stem for p in experiments_root().glob("*" + SUFFIX) if p.is_file())


def entries() -> list[Entry]:
    """Every packaged experiment, parsed, for `resdsl list experiments`."""
    root = experiments_root()
    return [_entry(name, root / (name + SUFFIX)) for name in names()]


def _entry(name: str, path: Path) -> Entry:
    exp = parse_experiment(path)
    return Entry(name, path, exp.source, exp.title, len(exp.rows), exp.seeds)


def locate(name_or_path: str | os.PathLike) -> Path:
    """The experiment file to read: an existing file as given, else the packaged experiment of that name.

    An unknown name raises SpecError with the closest names and a hint to list them; a path to something that
    is not a file (a folder, a pipe) is returned for the reader to refuse at its path.
    """
    text = os.fspath(name_or_path)
    if os.path.isfile(text):
        return Path(text)
    known = names()
    if text in known:  # before folders: a run folder called r-table6 must not hide the experiment r-table6
        return experiments_root() / (text + SUFFIX)
    if os.path.exists(text):
        return Path(text)  # a folder or a pipe: the reader says so at its path
    if text.endswith(SUFFIX):
        stem = Path(text).stem
        hint = (f"the packaged experiment '{stem}' is given by name, without a folder or suffix: {stem}"
                if stem in known else LISTING_HINT)
        raise SpecError(f"cannot read experiment file '{text}': no such file", Span(text, 1, 1), hint=hint)
    raise SpecError(f"no experiment file or packaged experiment named '{text}'", None, hint=_suggestion(text))


def close_names(word: str, limit: int = 4) -> list[str]:
    """Packaged experiment names most like ``word`` (r-tabel6 finds r-table6)."""
    return difflib.get_close_matches(word, names(), n=limit, cutoff=0.6)


def _suggestion(word: str) -> str:
    close = close_names(word)
    return f"did you mean {', '.join(close)}? {LISTING_HINT}" if close else LISTING_HINT


__all__ = ["Entry", "SUFFIX", "experiments_root", "names", "entries", "locate", "close_names"]
