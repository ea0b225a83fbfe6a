"""`resdsl` command line: click commands only; all work happens in resdsl.pipeline and the backends."""
from __future__ import annotations

import json
import os
import sys

import click

from resdsl.cost import human
from resdsl.errors import SpecError, printable

EXIT_SPEC = 1  # a bad spec, a failed expect
EXIT_USAGE = 2  # click's own usage errors
EXIT_INTERNAL = 70


def _fail(err: SpecError) -> None:
    click.echo(err.render(), err=True)
    sys.exit(EXIT_SPEC)


def _guard(fn):
    """Run a command body; spec errors become located messages, and nothing becomes a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpecError as err:
            _fail(err)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except RecursionError:
            click.echo("resdsl: error: the spec nests too deeply to compile", err=True)
            sys.exit(EXIT_SPEC)
        except BrokenPipeError:
            sys.exit(EXIT_SPEC)
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if os.environ.get("RESDSL_DEBUG"):
                raise
            click.echo(f"resdsl: internal error: {type(exc).__name__}: {exc}\n"
                       "hint: this is a bug in resdsl; rerun with RESDSL_DEBUG=1 for the traceback and report it",
                       err=True)
            sys.exit(EXIT_INTERNAL)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="resdsl", prog_name="resdsl")
def main() -> None:
    """resdsl: describe residual networks exactly, check them before they run."""


def _summary(net) -> str:
    rows = [("stage", "units", "output", "params", "MACs")]
    g = net.groups
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
           f"order {net.graph.graph['order']}, {net.layers} layers",
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


def _write_output(path: str, text: str | bytes) -> None:
    """Write a generated file: atomically where it is a regular file or new, through where it is a device or a
    pipe; a missing folder, a full disk or an unsuitable target is a clear error, not a traceback."""
    from resdsl.train.fileio import OutputError, write_output

    try:
        write_output(path, text)
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("compile")
@click.argument("spec", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counts and expectations.")
@click.option("--dump-ir", is_flag=True, help="Print the checked IR, one operation per line.")
@click.option("--emit-python", "emit_py", type=click.Path(dir_okay=False, writable=True),
              help="Write standalone PyTorch source (imports only torch) with a build() function.")
@click.option("--emit-trainer", "trainer_dir", type=click.Path(file_okay=False),
              help="Write a self-contained folder (model.py, the trainer, recipe.json, train.py) that trains with only "
                   "torch and torchvision installed.")
@click.option("--onnx", "onnx_out", type=click.Path(dir_okay=False, writable=True),
              help="Export the model as ONNX and validate it with onnx.checker (needs torch and onnx).")
@_guard
def compile_cmd(spec: str, as_json: bool, dump_ir: bool, emit_py: str | None, trainer_dir: str | None,
                onnx_out: str | None) -> None:
    """Parse, check and count SPEC; print a per-stage summary (exit 1 if any expect fails)."""
    from resdsl.pipeline import compile_spec

    net = compile_spec(spec)
    info = sys.stderr if as_json or dump_ir else sys.stdout
    if emit_py:
        from resdsl.backends.python_source import emit_python

        _write_output(emit_py, emit_python(net))
        click.echo(f"wrote {emit_py}", file=info)
    if trainer_dir:
        from resdsl.backends.trainer_folder import emit_trainer

        try:
            files = emit_trainer(net, trainer_dir)
        except OSError as exc:
            raise click.ClickException(f"cannot write {trainer_dir}: {exc.strerror or exc}") from None
        click.echo(f"wrote {trainer_dir}/ ({len(files)} files); run: python {trainer_dir}/train.py --data ...",
                   file=info)
    if onnx_out:
        try:
            from resdsl.backends.onnx_export import export_onnx
        except ImportError as exc:
            raise click.ClickException(f"--onnx needs PyTorch: {exc}") from None
        from resdsl.train.fileio import OutputError

        try:
            facts = export_onnx(net, onnx_out)
        except (ImportError, RuntimeError, OutputError) as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"cannot write {onnx_out}: {exc.strerror or exc}") from None
        click.echo(f"wrote {onnx_out} (opset {facts['opset']}, {facts['nodes']} nodes, checked)", file=info)
    if as_json:
        click.echo(json.dumps(net.to_json(), indent=2))
    elif dump_ir:
        click.echo(net.dump_ir(), nl=False)
    else:
        click.echo(_summary(net))
    from resdsl.errors import render_diagnostic

    for e in net.expects:
        if not e.ok:
            click.echo(render_diagnostic("error", f"expect {e.what} {e.expected} does not hold: actual {e.actual}",
                                         e.span, None, net.spec.sources.get(e.span.path)), err=True)
    if not net.ok:
        sys.exit(EXIT_SPEC)


@main.command("train", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                        "help_option_names": []}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@_guard
def train_cmd(args: tuple[str, ...]) -> None:
    """Train SPEC with its recipe (see `resdsl train --help`)."""
    from resdsl.train.cli import make_parser, options_from

    parser = make_parser("resdsl train", with_spec=True)
    ns = parser.parse_args(list(args))
    spec = ns.spec
    if spec is None:
        if not ns.resume:
            parser.error("give a SPEC to train (or --resume RUNDIR)")
        spec = _spec_of_run(ns.resume)
    if ns.nproc and "RANK" not in os.environ:
        sys.exit(_launch_processes(spec, ns, list(args)))
    _run_training(spec, ns, options_from)


def _spec_of_run(run_dir: str) -> str:
    from resdsl.train.rundir import RunDirError, read_config

    try:
        cfg = read_config(run_dir)
    except RunDirError as exc:
        raise click.ClickException(str(exc)) from None
    spec = cfg.get("spec_path") or cfg.get("spec")
    if not isinstance(spec, str):
        raise click.ClickException(f"--resume {run_dir}: config.json names no spec; give the spec as well")
    return spec


def _launch_processes(spec: str, ns, args: list[str]) -> int:
    """--nproc N: check what can be checked once, fix the run directory for all ranks, then start torchrun."""
    import datetime as dt

    from resdsl.pipeline import compile_spec
    from resdsl.train.cli import relaunch_with_torchrun
    from resdsl.train.rundir import default_path

    net = compile_spec(spec)
    batch = ns.batch_size or (net.recipe or {}).get("batch")
    if batch and batch % ns.nproc:
        raise click.ClickException(f"the batch size {batch} does not split evenly over --nproc {ns.nproc} "
                                   "processes; choose a batch size that is a multiple of it")
    if not ns.out and not ns.resume:  # every rank must write to the same run directory
        args += ["--out", default_path("runs", net.name, dt.datetime.now().strftime("%Y%m%d-%H%M%S"))]
    return relaunch_with_torchrun(ns.nproc, ["-m", "resdsl_cli.main", "train", *args])


def spec_hash(net) -> str:
    """What identifies a run's network and recipe: the checked IR without source locations, and the recipe."""
    import hashlib

    ir = "\n".join(line.rsplit(" @", 1)[0] for line in net.dump_ir().splitlines())
    text = ir + "\n" + json.dumps(net.recipe, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _model_fn(spec_path: str):
    """Build the spec's model for a dataset's shape, re-running the shape checks (located errors)."""
    from resdsl.backends.torch_module import build_model

    def model_fn(shape, num_classes):
        return build_model(spec_path, num_classes=num_classes, in_channels=shape[0], input_size=tuple(shape[1:]))

    return model_fn


def _run_training(spec: str, ns, options_from) -> None:
    from resdsl import __version__
    from resdsl.errors import Span
    from resdsl.pipeline import compile_spec
    from resdsl.train.loop import run_with_errors, train

    net = compile_spec(spec)
    if net.recipe is None:
        raise SpecError("the spec names no training recipe", Span(spec, 1, 1), source=net.spec.source,
                        hint="add e.g. 'include \"recipes.res\"' and 'recipe cifar_resnet'")
    opts = options_from(ns, net.name)
    opts.extra_config = {"spec": spec, "spec_path": os.path.abspath(spec) if os.path.isfile(spec) else spec,
                         "spec_hash": spec_hash(net), "network": net.name, "resdsl": __version__,
                         "params": net.params, "macs": net.macs}
    result, failure = run_with_errors(train, _model_fn(spec), net.recipe, opts)
    if failure:
        message, code = failure
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike; one message is enough
            click.echo(f"resdsl: {'stopped' if code == 130 else 'error'}: {message}", err=True)
        sys.exit(code)
    last = result["last"]
    if last is not None:
        click.echo(f"done: {result['iterations']} iterations, test error {last['test_error']:.2f}% "
                   f"(top-5 {last['test_top5_error']:.2f}%), run directory {result['run_dir']}")


@main.command("eval")
@click.argument("spec", type=click.Path(path_type=str))
@click.option("--checkpoint", required=True, type=click.Path(path_type=str), help="checkpoint.pt or a run directory")
@click.option("--data", help="dataset name or ImageNet-layout folder (default: the recipe's)")
@click.option("--data-dir", help="where datasets are")
@click.option("--test-subset", type=click.IntRange(min=1), help="evaluate on the first N test images")
@click.option("--view", type=click.Choice(["auto", "single", "10-crop"]), default="auto", show_default=True,
              help="auto: 10-crop for image folders, single view otherwise")
@click.option("--device", type=click.Choice(["auto", "cuda", "mps", "cpu"]), default="auto")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--no-download", is_flag=True)
@_guard
def eval_cmd(spec, checkpoint, data, data_dir, test_subset, view, device, batch_size, no_download) -> None:
    """Report top-1 and top-5 test error of a trained SPEC."""
    from resdsl.pipeline import compile_spec
    from resdsl.train import checkpoint as ckpt
    from resdsl.train.data import BatchPipeline, DataError, FolderData, load_dataset, worker_errors_unwrapped
    from resdsl.train.loop import TrainingError, evaluate, pick_device

    net = compile_spec(spec)
    recipe = net.recipe or {}
    if os.path.isdir(checkpoint):
        checkpoint = os.path.join(checkpoint, "checkpoint.pt")
    try:
        state = ckpt.load(checkpoint)
        recipe = state.get("recipe", recipe)
        name = data or recipe.get("dataset")
        if not name:
            raise click.UsageError("pass --data: neither the spec's recipe nor the checkpoint names a dataset")
        split = tuple(recipe["split"]) if recipe.get("split") else None  # evaluate on the held-out part it trained beside
        ds = load_dataset(name, data_dir, download=not no_download, split=split, test_subset=test_subset)
        if isinstance(ds, FolderData):
            from resdsl.train.data import crop_size

            size = crop_size(recipe.get("augment", []))
            ds.shape = (3, size, size)
        dev = pick_device(device)
        model = _model_fn(spec)(ds.shape, ds.num_classes)
        ckpt.load_weights(model, state["model"], checkpoint)
        model.to(dev)
        ten = view == "10-crop" or (view == "auto" and isinstance(ds, FolderData))
        if isinstance(ds, FolderData):
            import torch

            test = ds.test_dataset(crop=ds.shape[1], resize=round(ds.shape[1] * 256 / 224), ten_crop=ten)
            batches = worker_errors_unwrapped(
                torch.utils.data.DataLoader(test, batch_size=max(1, batch_size // (10 if ten else 1))))
        else:
            if view == "10-crop":
                raise click.UsageError("10-crop testing needs an image-folder dataset")
            ds = ds.to(dev)
            pipeline = BatchPipeline(ds, recipe.get("normalize", "none"), [])
            if state.get("normalization"):
                pipeline.load_stats(state["normalization"])
            batches = pipeline.test_batches(batch_size)
        res = evaluate(model, batches, dev)
    except (ckpt.CheckpointError, DataError, TrainingError) as exc:
        click.echo(f"resdsl: error: {exc}", err=True)
        sys.exit(EXIT_SPEC)
    views = "10-crop" if ten else "single view"
    click.echo(f"{net.name} on {name} ({views}): top-1 error {res['error']:.2f}%, top-5 error "
               f"{res['top5_error']:.2f}%, loss {res['loss']:.4f}")


FORMATS = ("svg", "png", "pdf", "dot")


@main.command("viz")
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Output file (default: NAME-VIEW.FORMAT in the current folder; '-' for stdout).")
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
    from resdsl.pipeline import compile_spec

    if len(specs) > 1 and view != "unit":
        raise click.UsageError("several specs can only be drawn together with --view unit")
    if fmt is None:
        ext = os.path.splitext(output)[1].lstrip(".").lower() if output and output != "-" else ""
        if ext and ext not in FORMATS:
            raise click.UsageError(f"cannot tell the format from '{output}': use --format with one of "
                                   f"{', '.join(FORMATS)}")
        fmt = ext or "svg"
    nets = [compile_spec(p) for p in specs]
    if view == "overview":
        dot = gv.overview_dot(nets[0])
    elif view == "full":
        try:
            dot = gv.full_dot(nets[0])
        except ValueError as exc:
            click.echo(f"resdsl: error: {exc}", err=True)
            sys.exit(EXIT_SPEC)
    else:
        dot = gv.unit_dot([(n, os.path.splitext(os.path.basename(p))[0]) for n, p in zip(nets, specs)],
                          typical_only=len(nets) > 1 and not all_units)
    if fmt == "dot":
        data = dot.encode()
    else:
        try:
            data = gv.render(dot, fmt)
        except gv.RenderError as exc:
            click.echo(f"resdsl: error: {exc}", err=True)
            sys.exit(EXIT_SPEC)
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    if output is None:
        output = f"{nets[0].name}-{view}.{fmt}" if len(nets) == 1 else f"units.{fmt}"
    _write_output(output, data)
    click.echo(f"wrote {output} ({view} view, {fmt}, {len(data):,} bytes)")


if __name__ == "__main__":
    main()
