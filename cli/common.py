"""What every `resdsl` command shares: exit statuses, the guard that turns errors into messages, output files."""
from __future__ import annotations

import functools
import os
import sys

import click

from resdsl.errors import SpecError
from resdsl.train.dataerror import printable, shown

from . import EXIT_SIGINT, STOPPED

EXIT_SPEC = 1  # a bad spec, a failed expect
EXIT_INTERNAL = 70


def gpus(device: str | None) -> int:
    """How many CUDA GPUs runs on ``device`` (--device; None: not given, as auto) may use."""
    if device not in (None, "auto", "cuda"):
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def compile_arg(spec: str):
    """The network a SPEC argument names: a file or a packaged spec's name, never spec text (which
    resdsl.compile_spec takes for a string with a line break that names no file)."""
    from resdsl.pipeline import compile_spec, is_spec_text

    if is_spec_text(spec):
        raise SpecError(f"no spec file or packaged spec named '{spec}'", None)
    return compile_spec(spec)


def fail(err: SpecError) -> None:
    click.echo(err.render(), err=True)
    sys.exit(EXIT_SPEC)


def guard(fn):
    """Run a command body; spec errors become located messages, and nothing becomes a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpecError as err:
            fail(err)
        except (click.exceptions.Exit, click.UsageError, SystemExit):
            raise
        except KeyboardInterrupt:  # Ctrl-C where no stop handler took it (a run's loop checkpoints and stops)
            click.echo(STOPPED, err=True)
            sys.exit(EXIT_SIGINT)
        except click.ClickException as exc:  # a failure (not a misuse): said as every other resdsl error is
            click.echo(shown(f"resdsl: error: {exc.format_message()}"), err=True)
            sys.exit(exc.exit_code)
        except RecursionError:
            click.echo("resdsl: error: the spec nests too deeply to compile", err=True)
            sys.exit(EXIT_SPEC)
        except BrokenPipeError:
            sys.exit(EXIT_SPEC)
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if os.environ.get("RESDSL_DEBUG"):
                raise
            click.echo(shown(f"resdsl: internal error: {type(exc).__name__}: {exc}\n"
                             "hint: this is a bug in resdsl; rerun with RESDSL_DEBUG=1 for the traceback and report "
                             "it"), err=True)
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun worker: no teardown (train.cli.end_worker)
                from resdsl.train.cli import end_worker

                end_worker(EXIT_INTERNAL)
            sys.exit(EXIT_INTERNAL)

    return wrapper


def say_warnings(net) -> None:
    """The spec's warnings (what compiles but is most likely not meant), located, on stderr."""
    for text in net.said_warnings():
        click.echo(text, err=True)


def refuse_sources_as_output(nets, *outputs: tuple[str, str | None]) -> None:
    """An output (flag, path) that is a file the networks were compiled from would replace the spec with what it
    compiles to (CheckedNetwork.source_at): refused before anything is written."""
    for flag, out in outputs:
        source = next((s for net in nets for s in [net.source_at(out)] if s), None) if out and out != "-" else None
        if source:
            raise click.UsageError(printable(f"{flag} {out} is {source}, a file the network is compiled from: "
                                             "writing there would replace the spec; give the output another name"))


def write_output(path: str, text: str | bytes) -> None:
    """Write a generated file: atomically where it is a regular file or new, through where it is a device or a
    pipe; a missing folder, a full disk or an unsuitable target is a clear error, not a traceback."""
    from resdsl.train.fileio import OutputError, write_output

    try:
        write_output(path, text)
    except OutputError as exc:
        raise click.ClickException(printable(str(exc))) from None
