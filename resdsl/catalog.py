"""The catalogue of packaged specs: every network under specs/ by name, e.g. ``resnet50``, ``torchvision/resnet50``.

Naming rule: a spec's name is its path under the specs folder without the ``.res`` suffix, with ``/`` between
folders (``specs/resnet1001_preact.res`` is ``resnet1001_preact``, ``specs/torchvision/resnet50.res`` is
``torchvision/resnet50``). Files that declare no ``network`` (``recipes.res``, which the specs include) have no
name. Wherever a spec is accepted, an existing file path wins over a name.

The specs folder is ``resdsl/specs/`` in an installed wheel (pyproject.toml maps the package ``resdsl.specs``
onto the top-level ``specs/``) and the repository's ``specs/`` in a source checkout or an editable install.
Nothing here imports torch, or compiles anything.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import Span, SpecError

SUFFIX = ".res"
PAPERS = {"R": "Deep Residual Learning for Image Recognition (He et al. 2016)",
          "I": "Identity Mappings in Deep Residual Networks (He et al. 2016)",
          "WRN": "Wide Residual Networks (Zagoruyko & Komodakis 2016)",
          "SD": "Deep Networks with Stochastic Depth (Huang et al. 2016)",
          "torchvision": "torchvision.models",
          "timm": "timm.models (PyTorch Image Models)"}
_NETWORK = re.compile(r"^[ \t]*network[ \t]", re.MULTILINE)
_PAPER_TAG = re.compile(r"#\s*\[(R|I|WRN|SD)\]\s*([^:]*)")
_REFERENCE = re.compile(r"Table \d+|Fig\. \d+(?:\([a-z]\))?|section [\d.]*\d|appendix")
_LIBRARY = re.compile(r"#\s*(torchvision|timm)\.models\.(\w+)")


@dataclass(frozen=True)
class Entry:
    """One packaged spec: its name, file, source (a PAPERS key: R, I, ..., torchvision, timm) and where in it (e.g.
    'Table 6')."""

    name: str
    path: Path
    paper: str
    where: str


def specs_root() -> Path:
    """The folder of packaged specs: resdsl/specs/ when installed from a wheel, else the checkout's specs/."""
    return packaged_folder("specs")


def packaged_folder(folder: str) -> Path:
    """A top-level data folder of the project (specs/, experiments/): resdsl/<folder>/ in an installed wheel,
    where pyproject.toml maps it, else the checkout's <folder>/."""
    package = Path(__file__).resolve().parent
    installed, checkout = package / folder, package.parent / folder
    if installed.is_dir():
        return installed
    if (package.parent / "pyproject.toml").is_file() and checkout.is_dir():  # a source tree, not site-packages
        return checkout
    raise SpecError(f"resdsl's packaged {folder} are missing (looked in {installed} and {checkout})", None,
                    hint=f"reinstall resdsl; a wheel ships them under resdsl/{folder}/")


def shown_path(path: str) -> str:
    """A spec file's path as emitted code shows it: a packaged file as specs/NAME.res (the same on every machine,
    not where the package is installed), any other as it was given."""
    inside = _packaged(path)
    return path if inside is None else "specs/" + inside.as_posix()


def named(path: str) -> str:
    """A spec file as a command takes it on any machine: a packaged spec by its name (resnet20), any other file by
    its path."""
    inside = _packaged(path)
    return path if inside is None or inside.suffix != SUFFIX else _name_of(Path(path).resolve(), specs_root().resolve())


def _packaged(path: str) -> Path | None:
    """``path`` inside the packaged specs' folder, or None."""
    try:
        return Path(path).resolve().relative_to(specs_root().resolve())
    except (ValueError, OSError, SpecError):
        return None


def _name_of(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def names() -> list[str]:
    """Every packaged spec's name, sorted."""
    root = specs_root()
    return sorted(_name_of(p, root) for p in root.rglob("*" + SUFFIX) if _declares_network(p))


def _declares_network(path: Path) -> bool:
    """Whether a packaged file declares a network (a recipe file does not); one damaged file (not UTF-8) leaves
    the others' names working: it is said to be damaged where it is compiled."""
    try:
        return bool(_NETWORK.search(path.read_text(encoding="utf-8-sig", errors="replace")))
    except OSError:
        return False


def entries() -> list[Entry]:
    """Every packaged spec with the paper and table/figure its header comment names."""
    root = specs_root()
    return [_entry(name, root / (name + SUFFIX)) for name in names()]


def _entry(name: str, path: Path) -> Entry:
    paper, where = source_of(path.read_text(encoding="utf-8-sig", errors="replace"))  # a damaged file is listed
    return Entry(name, path, paper, where)


def source_of(text: str) -> tuple[str, str]:
    """(paper, where) from a spec's first comment line: '# [I] Table 2, Fig. 4(b) ...: ...' gives
    ('I', 'Table 2, Fig. 4(b)'); '# torchvision.models.resnet50 ...' gives ('torchvision', 'models.resnet50'),
    '# timm.models.resnet50d ...' ('timm', 'models.resnet50d'); ('', '') when the header names none of PAPERS."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    tagged = _PAPER_TAG.match(header.strip())
    if tagged:  # the references are the words before the header's first colon
        return tagged.group(1), ", ".join(_REFERENCE.findall(tagged.group(2)))
    library = _LIBRARY.match(header.strip())
    if library:
        return library.group(1), "models." + library.group(2)
    return "", ""


def locate(spec: str | os.PathLike) -> str:
    """The file to compile for ``spec``: an existing file as given, else the packaged spec of that name.

    An unknown name raises SpecError with the closest names; a missing ``.res`` path keeps the reader's usual
    error unless a packaged spec has its name, which the hint then gives.
    """
    text = os.fspath(spec)
    if os.path.isfile(text):
        return text
    if text in names():  # before folders: a run directory called resnet20 must not hide the spec resnet20
        return str(specs_root() / (text + SUFFIX))
    if os.path.exists(text):
        return text  # a folder: the reader says so at its path
    if text.endswith(SUFFIX):
        _missing_path(text)  # raises, with the name as a hint, when a packaged spec has this path's name
        return text  # the reader reports the missing file at its path
    raise SpecError(f"no spec file or packaged spec named '{text}'", None, hint=_suggestion(text))


def packaged_file(name: str) -> str | None:
    """The packaged file an `extends`/`include` names when no file is there: a packaged spec's or recipe file's
    name, without .res, as the command line takes it (``resnet20``, ``torchvision/resnet50``, ``recipes``), so
    that a spec copied out of the package can name its parents. A path (``resnet50.res``) is never read as a name:
    which packaged file a copy's relative path meant cannot be told (specs/ and specs/torchvision/ both have a
    resnet50.res). None where the packaged specs have no such file."""
    parts = Path(name).parts
    if not parts or name.endswith(SUFFIX) or Path(name).is_absolute() or ".." in parts:
        return None
    try:
        path = specs_root() / (name + SUFFIX)
        return str(path) if path.is_file() else None
    except (SpecError, OSError, ValueError):  # no packaged specs, a name too long for a path
        return None


def packaged_names_like(path: str) -> list[str]:
    """The names of the packaged files (specs and recipe files) whose file name is ``path``'s, for a hint."""
    base = os.path.basename(path)
    if not base.endswith(SUFFIX):
        return []
    try:
        root = specs_root()
        found = [_name_of(p, root) for p in root.rglob("*" + SUFFIX) if p.name == base and p.is_file()]
        return sorted(found, key=lambda n: (n.count("/"), n))  # the top folder's first
    except (SpecError, OSError, ValueError):
        return []


def _missing_path(path: str) -> None:
    """A missing 'specs/resnet20.res' or 'resnet20.res' is most likely meant as a packaged name: say which."""
    parts = Path(path.removesuffix(SUFFIX)).parts
    known = set(names())
    for start in range(len(parts)):
        name = "/".join(parts[start:])
        if name in known:
            raise SpecError(f"cannot read spec '{path}': no such file", Span(path, 1, 1),
                            hint=f"the packaged spec '{name}' is given by name: e.g. resdsl compile {name} "
                                 "(`resdsl list` shows every packaged spec)")


def close_names(word: str, limit: int = 4) -> list[str]:
    """Packaged names most like ``word``, matched on the whole name or its last part (resnet18 finds
    torchvision/resnet18)."""
    def score(name: str) -> float:
        candidates = (name, name.rsplit("/", 1)[-1])
        prefix = 0.9 if word and any(c.startswith(word) for c in candidates) else 0.0  # resnet18 -> resnet18_optionA
        return max(prefix, *(difflib.SequenceMatcher(None, word, c).ratio() for c in candidates))

    scored = sorted(((score(n), n) for n in names()), key=lambda s: (-s[0], s[1]))
    return [n for s, n in scored[:limit] if s >= 0.6]


def _suggestion(word: str) -> str:
    close = close_names(word)
    listing = "`resdsl list` shows every packaged spec"
    return f"did you mean {', '.join(close)}? {listing}" if close else listing


__all__ = ["Entry", "PAPERS", "specs_root", "names", "entries", "source_of", "locate", "packaged_file", "shown_path",
           "named", "packaged_names_like", "close_names"]
