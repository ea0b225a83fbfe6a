"""`resdsl` command line: click commands only; all work happens in resdsl.pipeline and the backends."""
from __future__ import annotations

import json
import os
import shlex
import sys
import warnings

import click

from resdsl.cost import human
from resdsl.errors import SpecWarning, printable

from .common import EXIT_SPEC, compile_arg, guard as _guard, refuse_sources_as_output, say_warnings, shown
from .common import write_output as _write_output

warnings.filterwarnings("ignore", category=SpecWarning)  # the commands say them located, with say_warnings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="resdsl", prog_name="resdsl")
def main() -> None:
    """resdsl: describe residual networks exactly, check them before they run."""


def _summary(net) -> str:
    rows = [("stage", "units", "output", "params", "MACs")]
    g = net.parts
    rows.append(("stem", "-", "x".join(map(str, g["stem"]["output"])), f"{g['stem']['params']:,}",
                 human(g["stem"]["macs"])))
    for st in net.stages():
        rows.append((st["name"], str(st["units"]), "x".join(map(str, st["output"])), f"{st['params']:,}",
                     human(st["macs"])))
    rows.append(("head", "-", "x".join(map(str, g["head"]["output"])), f"{g['head']['params']:,}",
                 human(g["head"]["macs"])))
    rows.append(("total", "", "", f"{net.params:,}", human(net.macs)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    align = ["<", ">", "<", ">", ">"]
    out = [f"{net.name}  ({printable(net.spec.path)})",
           f"input {'x'.join(map(str, net.input_shape))} -> output {'x'.join(map(str, net.output_shape))}, "
           f"order {_orders(net.graph.graph)}, {net.layers} layers",
           ""]
    for i, r in enumerate(rows):
        out.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths)).rstrip())
        if i == 0 or i == len(rows) - 2:
            out.append("  ".join("-" * w for w in widths))
    out.append(f"MACs are multiply-accumulates for one image; FLOPs = 2 x MACs = {human(net.flops)}")
    if net.recipe:
        r = net.recipe
        out.append(f"recipe {r['name']}: {r['optimizer']} lr {r['lr']:g}, batch {r['batch']}, "
                   f"{r['length']['value']} {r['length']['unit']}")
    for e in net.expects:
        status = "ok" if e.ok else "FAILED"
        out.append(f"expect {e.what} {e.expected}: {status} (actual {e.actual})")
    return "\n".join(out)


COMPILE_EXAMPLES = """\b
Examples:
  resdsl compile specs/resnet34_optionB.res          # a spec file: per-stage summary and every expect
  resdsl compile resnet1001_preact --json            # a packaged spec by name (resdsl list), as JSON
  resdsl compile resnet20 --emit-python model.py     # standalone PyTorch source
  resdsl compile resnet20 --emit-trainer trainer/    # a folder that trains with only torch installed
"""

VIZ_EXAMPLES = """\b
Examples:
  resdsl viz resnet1001_preact                       # overview: stages with collapsed repeats
  resdsl viz resnet110 --view unit -o units.png      # every distinct unit, each operation in order
  resdsl viz resnet110 resnet110_preact --view unit  # several specs' units side by side
  resdsl viz resnet20 --view full -o net.pdf         # every layer with tensor shapes
"""


def _write_trainer(net, trainer_dir: str, overwrite: bool, info) -> None:
    from resdsl.backends.trainer_folder import emit_trainer

    try:
        files = emit_trainer(net, trainer_dir, overwrite=overwrite)
    except OSError as exc:
        raise click.ClickException(printable(f"cannot write {trainer_dir}: {exc.strerror or exc}")) from None
    train_py = shlex.quote(os.path.join(trainer_dir, "train.py"))  # a command to paste into a shell
    click.echo(printable(f"wrote {trainer_dir}/ ({len(files)} files); run: python {train_py} --data ..."), file=info)


def _refuse_clashing_outputs(emit_py: str | None, trainer_dir: str | None, onnx_out: str | None) -> None:
    """Outputs of one compile that are one file, or a file of the trainer's, would overwrite each other (the second
    written wins, or the trainer is left with model source for its train.py): refused before any is written."""
    from resdsl.backends.trainer_folder import writes

    files = [(flag, value) for flag, value in (("--emit-python", emit_py), ("--onnx", onnx_out))
             if value and value != "-"]
    if len(files) == 2 and os.path.realpath(files[0][1]) == os.path.realpath(files[1][1]):
        raise click.UsageError("--emit-python and --onnx name the same file; give each a file of its own")
    for flag, value in files if trainer_dir else []:
        rel = os.path.relpath(os.path.realpath(value), os.path.realpath(trainer_dir))
        if rel == ".":
            raise click.UsageError(printable(f"{flag} {value} is the --emit-trainer folder; give it a file name"))
        if writes(rel):
            raise click.UsageError(printable(f"{flag} {value} is the trainer's {rel} in the --emit-trainer folder "
                                             f"{trainer_dir}; give it another name"))


@main.command("compile", epilog=COMPILE_EXAMPLES)
@click.argument("spec", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counts and expectations.")
@click.option("--dump-ir", is_flag=True, help="Print the checked IR, one operation per line.")
@click.option("--emit-python", "emit_py", type=click.Path(dir_okay=False, writable=True, allow_dash=True),
              help="Write standalone PyTorch source (imports only torch) with a build() function; - writes it to "
                   "standard output (the summary then goes to standard error).")
@click.option("--emit-trainer", "trainer_dir", type=click.Path(file_okay=False),
              help="Write a self-contained folder (model.py, the trainer, recipe.json, train.py) that trains with only "
                   "torch and torchvision installed. Into a folder that exists, only the files resdsl wrote there "
                   "and that are unchanged are replaced.")
@click.option("--overwrite", is_flag=True,
              help="With --emit-trainer: also replace trainer files that were edited or not written by resdsl.")
@click.option("--onnx", "onnx_out", type=click.Path(dir_okay=False, writable=True),
              help="Export the model as ONNX and validate it with onnx.checker (needs torch and onnx).")
@_guard
def compile_cmd(spec: str, as_json: bool, dump_ir: bool, emit_py: str | None, trainer_dir: str | None,
                overwrite: bool, onnx_out: str | None) -> None:
    """Parse, check and count SPEC; print a per-stage summary (exit 1 if any expect fails)."""
    for flag, value in (("--emit-python", emit_py), ("--emit-trainer", trainer_dir), ("--onnx", onnx_out)):
        if value is not None and not value.strip():
            raise click.UsageError(f"{flag} needs a file or folder name, not an empty one")
    if overwrite and not trainer_dir:
        raise click.UsageError("--overwrite goes with --emit-trainer (it says which files of the folder may be "
                               "replaced)")
    if onnx_out == "-":
        raise click.UsageError("--onnx writes a binary file; give it a file name (- would be a file named '-')")
    if as_json and dump_ir:
        raise click.UsageError("--json and --dump-ir both print to standard output; give one of them")
    source_out = emit_py == "-"  # like viz -o -: standard output
    if source_out and (as_json or dump_ir):
        raise click.UsageError("--emit-python - writes the source to standard output, where --json and --dump-ir "
                               "write too; give the source a file name")
    _refuse_clashing_outputs(emit_py, trainer_dir, onnx_out)
    net = compile_arg(spec)
    refuse_sources_as_output([net], ("--emit-python", emit_py), ("--onnx", onnx_out))
    from resdsl.backends.trainer_folder import spec_in_the_way

    if trainer_dir and (said := spec_in_the_way(net, trainer_dir)):
        raise click.UsageError(printable(f"--emit-trainer {trainer_dir}: {said}"))
    info = sys.stderr if as_json or dump_ir or source_out else sys.stdout
    if trainer_dir:  # first: --emit-python or --onnx may write beside the trainer, in its folder
        _write_trainer(net, trainer_dir, overwrite, info)
    if emit_py:
        from resdsl.backends.python_source import emit_python

        if source_out:
            click.echo(emit_python(net), nl=False)
        else:
            _write_output(emit_py, emit_python(net))
            click.echo(printable(f"wrote {emit_py}"), file=info)
    if onnx_out:
        _write_onnx(net, onnx_out, info)
    if as_json:
        click.echo(json.dumps(net.to_json(), indent=2))
    elif dump_ir:
        click.echo(net.dump_ir(), nl=False)
    else:
        click.echo(_summary(net), file=info)
    from resdsl.errors import render_diagnostic

    say_warnings(net)
    for e in net.expects:
        if not e.ok:
            click.echo(render_diagnostic("error", f"expect {e.what} {e.expected} does not hold: actual {e.actual}",
                                         e.span, None, net.spec.sources.get(e.span.path)), err=True)
    if not net.ok:
        sys.exit(EXIT_SPEC)


def _write_onnx(net, path: str, info) -> None:
    try:
        from resdsl.backends.onnx_export import export_onnx
    except ImportError as exc:
        raise click.ClickException(f"--onnx needs PyTorch: {exc}") from None
    from resdsl.train.fileio import OutputError

    try:
        facts = export_onnx(net, path)
    except (ImportError, RuntimeError, OutputError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(printable(f"cannot write {path}: {exc.strerror or exc}")) from None
    click.echo(printable(f"wrote {path} (opset {facts['opset']}, {facts['nodes']} nodes, checked)"), file=info)


FORMATS = ("svg", "png", "pdf", "dot")


@main.command("viz", epilog=VIZ_EXAMPLES)
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Output file (default: NAME-VIEW.FORMAT in the current folder, units.FORMAT for several specs; '-' "
                   "for stdout).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Output format (default: from -o's extension, "
              "else svg).")
@click.option("--view", type=click.Choice(["overview", "unit", "full"]), default="overview", show_default=True,
              help="overview: stages with collapsed repeats ([R] Fig. 3); unit: the distinct units ([I] Fig. 2/4); "
                   "full: every layer with tensor shapes.")
@click.option("--all-units", is_flag=True, help="With several specs and --view unit, draw every distinct unit of "
              "each, not only its most common one.")
@_guard
def viz_cmd(specs: tuple[str, ...], output: str | None, fmt: str | None, view: str, all_units: bool) -> None:
    """Draw a block diagram of SPEC (several SPECs side by side with --view unit)."""
    from resdsl.backends import graphviz as gv

    if output is not None and not output.strip():
        raise click.UsageError("-o needs a file name, not an empty one")
    if len(specs) > 1 and view != "unit":
        raise click.UsageError("several specs can only be drawn together with --view unit")
    ext = os.path.splitext(output)[1].lstrip(".").lower() if output and output != "-" else ""
    if fmt is None:
        if ext and ext not in FORMATS:
            raise click.UsageError(printable(f"cannot tell the format from '{output}': use --format with one of "
                                             f"{', '.join(FORMATS)}"))
        fmt = ext or "svg"
    elif ext in FORMATS and ext != fmt:
        raise click.UsageError(printable(f"-o {output} names a .{ext} file but --format is {fmt}: change one of "
                                         "them"))
    if output == "-" and sys.stdout is None:  # Python's word for a standard output that was closed
        raise click.UsageError("-o - writes to the standard output, and this command has none (it was closed): use "
                               "-o FILE")
    if len(specs) == 1 and all_units:  # one spec's unit view draws every distinct unit already
        raise click.UsageError("--all-units goes with several specs and --view unit (one spec's --view unit draws "
                               "every distinct unit of it)")
    if output == "-" and fmt in ("png", "pdf") and sys.stdout.isatty():
        raise click.UsageError(f"--format {fmt} -o - would write binary data to the terminal: redirect it to a "
                               "file or a program, or use -o FILE")
    nets = [compile_arg(p) for p in specs]
    if output is None:
        output = f"{nets[0].name}-{view}.{fmt}" if len(nets) == 1 else f"units.{fmt}"
    refuse_sources_as_output(nets, ("-o", output))
    if view == "overview":
        dot = gv.overview_dot(nets[0])
    elif view == "full":
        try:
            dot = gv.full_dot(nets[0])
        except ValueError as exc:
            click.echo(shown(f"resdsl: error: {exc}; use --view overview (or --view unit)"), err=True)
            sys.exit(EXIT_SPEC)
    else:
        dot = gv.unit_dot(list(zip(nets, _panel_names(specs))),
                          typical_only=len(nets) > 1 and not all_units)
    if fmt == "dot":
        data = dot.encode()
    else:
        try:
            data, warnings = gv.render_with_warnings(dot, fmt)
        except gv.RenderError as exc:
            click.echo(shown(f"resdsl: error: {exc}"), err=True)
            sys.exit(EXIT_SPEC)
        for warning in warnings:
            click.echo(shown(f"resdsl: warning: {warning}"), err=True)
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    _write_output(output, data)
    click.echo(printable(f"wrote {output} ({view} view, {fmt}, {len(data):,} bytes)"))


def _orders(g: dict) -> str:
    """The network's order, and a stage's own where a `stage N: order` gives it another ("post; stage 2: preact")."""
    other = [f"stage {st['index']}: {st['order']}" for st in g["stages"] if st["order"] != g["order"]]
    return "; ".join([g["order"], *other])


def _panel_names(specs: tuple[str, ...]) -> list[str]:
    """Each side-by-side panel's name: its file's name without .res, or the spec as given where two would be
    named alike (resnet50 and torchvision/resnet50)."""
    names = [os.path.splitext(os.path.basename(p))[0] for p in specs]
    return [n if names.count(n) == 1 else p for n, p in zip(names, specs)]


from .list_cmd import list_cmd  # noqa: E402 - registered after main is defined
from .train_cmd import eval_cmd, train_cmd  # noqa: E402
from .reproduce_cmd import reproduce_cmd  # noqa: E402
from .analyze_cmd import analyze  # noqa: E402

main.add_command(train_cmd)
main.add_command(eval_cmd)
main.add_command(list_cmd)
main.add_command(reproduce_cmd)
main.add_command(analyze)

if __name__ == "__main__":  # `python -m resdsl_cli.main`, as older resdsl started its processes
    from . import stop_on_ctrl_c

    stop_on_ctrl_c()
    main()
