"""`resdsl compile`: summary, --json, --dump-ir, exit codes, located errors on stderr."""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from resdsl_cli.main import main
from conftest import CIFAR20


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_summary_rows(at_root):
    r = run("compile", "specs/resnet34_optionB.res")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "resnet34_optionB" in out and "34 layers" in out
    for row in ("stem", "layer1", "layer4", "head", "total"):
        assert any(line.startswith(row) for line in out.splitlines()), row
    assert "21,797,672" in out and "expect params 21.8M: ok" in out


def test_json_schema(at_root):
    r = run("compile", "specs/resnet20.res", "--json")
    d = json.loads(r.stdout)
    assert {"name", "input", "output", "params", "macs", "flops", "layers", "stages", "expect"} <= set(d)
    assert d["input"] == [3, 32, 32] and d["output"] == [10] and d["flops"] == 2 * d["macs"]
    assert d["stages"][2] == {"name": "layer3", "units": 3, "output": [64, 8, 8], "params": d["stages"][2]["params"],
                              "macs": d["stages"][2]["macs"]}
    assert sum(s["params"] for s in d["stages"]) + d["stem"]["params"] + d["head"]["params"] == d["params"]
    assert all(e["ok"] for e in d["expect"]) and {"what", "expected", "actual", "ok"} <= set(d["expect"][0])


def test_failed_expect_exits_1(write_spec):
    path = write_spec(CIFAR20 + "expect params 1M\n")
    r = run("compile", path, "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["expect"][0]["ok"] is False
    assert r.stderr.startswith(f"{path}:8:8: error: expect params 1M does not hold")


def test_spec_error_format(write_spec):
    path = write_spec(CIFAR20.replace("shortcut A", "shortcut Q"))
    r = run("compile", path)
    assert r.exit_code == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == f"{path}:5:10: error: unexpected 'Q'"
    assert lines[1] == "    shortcut Q" and lines[2] == "             ^" and lines[3].startswith("hint:")


def test_missing_file_and_directory(tmp_path):
    r = run("compile", str(tmp_path / "nope.res"))
    assert r.exit_code == 1 and r.stderr.startswith(f"{tmp_path / 'nope.res'}:1:1: error: cannot read spec")
    r = run("compile", str(tmp_path))
    assert r.exit_code == 1 and "is a directory" in r.stderr


def test_usage_errors_exit_2():
    assert run("compile").exit_code == 2
    assert run("compile", "x.res", "--bogus").exit_code == 2
    assert run("frobnicate").exit_code == 2
    for flag in ("--emit-python", "--emit-trainer", "--onnx"):  # an empty name did nothing, and said nothing
        r = run("compile", "specs/resnet20.res", flag, "")
        assert r.exit_code == 2 and f"{flag} needs a file or folder name" in r.output
    r = run("compile", "specs/resnet20.res", "--onnx", "-")  # wrote a file named '-', where '-' elsewhere is stdout
    assert r.exit_code == 2 and "--onnx writes a binary file" in r.output
    r = run("compile", "specs/resnet20.res", "--json", "--dump-ir")  # --dump-ir was dropped without a word
    assert r.exit_code == 2 and "give one of them" in r.output


def test_dump_ir(at_root):
    r = run("compile", "specs/resnet20.res", "--dump-ir")
    assert r.exit_code == 0 and r.stdout.startswith("# network resnet20")
    assert "layer2.0.shortcut_zero_pad = zero_pad /2 16->32 (layer1.2.relu_out) : 32x16x16" in r.stdout


def test_real_process_does_not_import_torch(at_root):
    code = ("import sys, runpy; sys.argv=['resdsl','compile','specs/resnet1001_preact.res','--json'];\n"
            "try:\n runpy.run_module('resdsl_cli.main', run_name='__main__')\n"
            "except SystemExit as e: assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'compiling imported torch'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] == 10_327_706


def test_an_input_written_channels_last_is_a_warning(write_spec):
    """`input 32x32x3` compiles (32 channels of 32x3 images) but is most likely 3x32x32: said, located, exit 0."""
    import resdsl

    path = write_spec(CIFAR20.replace("input 3x32x32", "input 32x32x3"))
    r = run("compile", path)
    assert r.exit_code == 0, r.output
    assert f"{path}:2:1: warning: input 32x32x3 is 32 channels of 32x3-pixel images" in r.stderr
    assert "hint: resdsl reads channels x height x width: 3x32x32" in r.stderr
    assert resdsl.compile_spec(text=CIFAR20).warnings() == []


def test_output_into_a_closed_pipe_is_a_quiet_failure():
    """`resdsl list | program` where the program has gone: no traceback, no 'internal error', a failure status."""
    import os

    read, write = os.pipe()
    os.close(read)  # closed before the command starts: its first write fails, whatever the timing
    proc = subprocess.Popen([sys.executable, "-m", "resdsl_cli.main", "list"], stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and err == "", err


def test_counts_in_words():
    from resdsl.cost import human

    assert [human(n) for n in (0, 999, 1000, 269722, 10 ** 6, 25_557_032, 3.664e9)] == \
        ["0", "999", "1.00K", "270K", "1.00M", "25.6M", "3.66G"]


def test_the_summary_names_every_stage_that_has_an_order_of_its_own(tmp_path):
    spec = tmp_path / "mixed.res"
    spec.write_text(CIFAR20 + "stage 2: order preact\nstage 3: order bn-after-add\n")
    r = run("compile", str(spec))
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1] == ("input 3x32x32 -> output 10, order post; stage 2: preact; "
                                        "stage 3: bn-after-add, 20 layers")


def test_a_bug_is_an_internal_error_of_its_own_status(monkeypatch):
    """An unexpected exception (a bug in resdsl) is one line naming it, a hint to report it, and exit status 70
    (EX_SOFTWARE), apart from a user's error (1): never a traceback, and with RESDSL_DEBUG=1 the traceback."""
    import resdsl.pipeline

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(resdsl.pipeline, "compile_spec", broken)
    monkeypatch.delenv("RESDSL_DEBUG", raising=False)
    r = CliRunner().invoke(main, ["compile", "resnet20"])
    assert r.exit_code == 70 and "resdsl: internal error: ZeroDivisionError: a bug" in r.output, r.output
    assert "RESDSL_DEBUG=1" in r.output and "Traceback" not in r.output
    monkeypatch.setenv("RESDSL_DEBUG", "1")
    r = CliRunner().invoke(main, ["compile", "resnet20"])
    assert isinstance(r.exception, ZeroDivisionError)


def test_an_output_that_is_a_file_the_network_is_compiled_from_is_refused(tmp_path, monkeypatch):
    """`--emit-python`, `--onnx` and `viz -o` naming the spec, or a recipe file it includes (here through a link),
    would replace it with what it compiles to: refused before anything is written, the files unchanged."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes.res").write_text('include "recipes"\nrecipe quick extends cifar_resnet {\n  lr 0.05\n}\n')
    spec = CIFAR20 + 'include "recipes.res"\nrecipe quick\n'
    (tmp_path / "net.res").write_text(spec)
    (tmp_path / "link.res").symlink_to("recipes.res")
    for args, flag in ((["compile", "net.res", "--emit-python", "net.res"], "--emit-python net.res"),
                       (["compile", "net.res", "--onnx", "link.res"], "--onnx link.res"),
                       (["viz", "net.res", "--format", "dot", "-o", "net.res"], "-o net.res")):
        r = run(*args)
        assert r.exit_code == 2 and f"{flag} is " in r.output and "a file the network is compiled from" in r.output
    assert (tmp_path / "net.res").read_text() == spec and (tmp_path / "link.res").is_symlink()
    assert (tmp_path / "recipes.res").read_text().startswith('include "recipes"')
    assert run("compile", "net.res", "--emit-python", "net.py").exit_code == 0  # another name is written
    r = run("viz", "net.res", "-o", "")
    assert r.exit_code == 2 and "-o needs a file name, not an empty one" in r.output


def test_outputs_that_would_overwrite_each_other_are_refused(tmp_path, monkeypatch, at_root):
    """Two outputs of one compile naming one file, or --emit-python into the --emit-trainer folder, would leave
    only the last written (a trainer whose train.py is model source): a usage error before anything is written."""
    spec = str(tmp_path / "r20.res")
    (tmp_path / "r20.res").write_text(CIFAR20)
    monkeypatch.chdir(tmp_path)
    r = run("compile", spec, "--onnx", "x.onnx", "--emit-python", "./x.onnx")
    assert r.exit_code == 2 and "--emit-python and --onnx name the same file" in r.output, r.output
    r = run("compile", spec, "--emit-trainer", "tr", "--emit-python", "tr/train.py")
    assert r.exit_code == 2 and "tr/train.py is the trainer's train.py in the --emit-trainer folder" in r.output
    r = run("compile", spec, "--emit-trainer", "tr", "--emit-python", "./tr")
    assert r.exit_code == 2 and "--emit-python ./tr is the --emit-trainer folder" in r.output, r.output
    r = run("compile", spec, "--emit-trainer", "tr", "--emit-python", "tr/resdsl_train/x.py")
    assert r.exit_code == 2 and "is the trainer's resdsl_train/x.py" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r20.res"]
    r = run("compile", "resnet20", "--emit-trainer", "tr", "--emit-python", "tr/net.py")  # beside the trainer: fine
    assert r.exit_code == 0 and (tmp_path / "tr" / "net.py").exists() and (tmp_path / "tr" / "train.py").exists()
