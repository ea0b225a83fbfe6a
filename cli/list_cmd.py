"""`resdsl list`: the packaged specs with their paper, table or figure, parameters and multiply-adds."""
from __future__ import annotations

import fnmatch
import json
import sys

import click

from resdsl import catalog
from resdsl.cost import human
from resdsl.pipeline import compile_spec

from resdsl.errors import printable

from .common import EXIT_SPEC, guard

PAPER_CHOICES = tuple(catalog.PAPERS)  # R, I, WRN, SD, torchvision, timm


def _row(entry: catalog.Entry) -> dict:
    """One spec's line, compiled live (all 52 compile in about a second) so the counts cannot go stale."""
    net = compile_spec(str(entry.path))
    return {"name": entry.name, "paper": entry.paper, "where": entry.where, "network": net.name,
            "params": net.params, "macs": net.macs, "layers": net.layers, "path": str(entry.path)}


def _table(rows: list[dict]) -> str:
    cells = [("name", "paper", "table/figure", "params", "MACs")]
    for r in rows:
        paper = f"[{r['paper']}]" if r["paper"] not in ("torchvision", "timm") else r["paper"]
        cells.append((r["name"], paper, r["where"], human(r["params"]), human(r["macs"])))
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    align = ("<", "<", "<", ">", ">")
    return "\n".join("  ".join(f"{c:{a}{w}}" for c, a, w in zip(line, align, widths)).rstrip() for line in cells)


LIST_EXAMPLES = """\b
Examples:
  resdsl list                       # every packaged spec
  resdsl list 'resnet110*' --paper I
  resdsl compile resnet1001_preact  # then use a name anywhere a spec path goes
  resdsl train resnet20 --data fashion-mnist
"""


@click.command("list", epilog=LIST_EXAMPLES)
@click.argument("pattern", required=False)
@click.argument("experiments_pattern", required=False, metavar="")
@click.option("--paper", type=click.Choice(PAPER_CHOICES, case_sensitive=False),
              help="Only the specs of one source: R ([R] Deep Residual Learning), I ([I] Identity Mappings), "
                   "WRN (Wide Residual Networks), SD (Stochastic Depth), torchvision or timm.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list: name, paper, where, network, params, "
              "macs, layers, path.")
@guard
def list_cmd(pattern: str | None, experiments_pattern: str | None, paper: str | None, as_json: bool) -> None:
    """List the packaged specs, with their sources and counts.

    Every command takes a packaged spec's name wherever it takes a spec path. A name is the spec's path under
    specs/ without .res (resnet50 is the paper's, torchvision/resnet50 torchvision's); an existing file of the
    same name wins. One line per spec: its name, the paper ([R] = "Deep Residual Learning for Image
    Recognition", [I] = "Identity Mappings in Deep Residual Networks", [WRN], [SD], torchvision or timm), the table
    or figure it reproduces, and its parameters and multiply-adds for one image. PATTERN filters the names
    (shell-style wildcards). `resdsl list experiments [PATTERN]` lists the packaged experiments instead
    (`resdsl reproduce NAME`).
    """
    if pattern == "experiments":
        _list_experiments(as_json, paper, experiments_pattern)
        return
    if experiments_pattern is not None:
        raise click.UsageError(f"one PATTERN at a time (a second, {experiments_pattern!r}, follows only "
                               "'experiments')")
    rows = [_row(e) for e in catalog.entries() if _wanted(e, pattern, paper)]
    if not rows:
        within = f" of [{paper.upper()}]" if paper and paper.lower() in ("r", "i") else f" of {paper}" if paper else ""
        click.echo(printable(f"resdsl: no packaged spec{within} matches" + (f" '{pattern}'" if pattern else "")),
                   err=True)
        sys.exit(EXIT_SPEC)
    click.echo(json.dumps(rows, indent=2) if as_json else _table(rows))


def _list_experiments(as_json: bool, paper: str | None, pattern: str | None) -> None:
    """`resdsl list experiments [PATTERN]`: the packaged experiment files that `resdsl reproduce NAME` runs
    (``paper``: only those whose source is that paper's, as `[R] Table 6`; ``pattern``: names, shell-style)."""
    from resdsl.experiment import catalog as experiments

    rows = [{"name": e.name, "source": e.source, "title": e.title, "rows": e.rows, "seeds": e.seeds,
             "path": str(e.path)} for e in experiments.entries()
            if (not paper or e.source.lower().startswith(f"[{paper.lower()}]"))
            and (pattern is None or fnmatch.fnmatchcase(e.name, pattern))]
    if not rows:
        click.echo("resdsl: no packaged experiment" + (f" reproduces [{paper}]" if paper else "")
                   + (f"{' and' if paper else ''} matches '{pattern}'" if pattern else ""), err=True)
        sys.exit(EXIT_SPEC)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    src = max(len(r["source"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['source']:<{src}}  {r['rows']:>2} rows x {r['seeds']} seeds  "
                   f"{r['title']}")


def _wanted(entry: catalog.Entry, pattern: str | None, paper: str | None) -> bool:
    if paper and entry.paper.lower() != paper.lower():
        return False
    return pattern is None or fnmatch.fnmatchcase(entry.name, pattern)
