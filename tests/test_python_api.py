"""resdsl as a Python library, the way a notebook or a training script uses it: errors that say where, a warning
through Python's warnings, spec text wherever a spec is taken, override values checked as Python values, whole
modules that pickle, TorchScript, ONNX from Python."""
from __future__ import annotations

import copy
import linecache
import pickle
import subprocess
import sys
import warnings

import pytest

import resdsl
from conftest import ROOT

torch = pytest.importorskip("torch")

BAD = ("network n\ninput 3x32x32\nstem cifar 16\nunit basic\nshortcut A\nstages 16x1, 32x1 /2, 16x1 /2\n"
       "head avgpool fc 10\n")


def _error(fn, *args, **kwargs) -> resdsl.SpecError:
    with pytest.raises(resdsl.SpecError) as info:
        fn(*args, **kwargs)
    return info.value


def test_an_uncaught_spec_error_says_where_and_pickles():
    """A traceback shows str(err): it is the located message the command line prints, hint included; and a process
    pool's worker can send the error back (pickle), whole."""
    err = _error(resdsl.compile_spec, text=BAD, name="mine.res")
    assert str(err).startswith("mine.res:6:") and "shortcut A cannot shrink channels (32 -> 16)" in str(err)
    assert str(err) == err.render()
    err.notes.append("a note")
    for back in (pickle.loads(pickle.dumps(err)), copy.deepcopy(err)):
        assert type(back) is resdsl.SpecError and back.render() == err.render() and back.span == err.span


def test_a_channels_last_input_is_a_python_warning_and_said_once_by_the_cli(tmp_path):
    text = BAD.replace("3x32x32", "32x32x3").replace("16x1 /2\n", "64x1 /2\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resdsl.compile_spec(text=text, name="cl.res")
        resdsl.build_model(text)  # through another function of resdsl: still the caller's line
    assert [w.category for w in caught] == [resdsl.SpecWarning] * 2
    assert str(caught[0].message).startswith("cl.res:2:1: warning: input 32x32x3 is 32 channels")
    assert [w.filename for w in caught] == [__file__] * 2  # the caller's line, not resdsl's
    (tmp_path / "cl.res").write_text(text)
    r = subprocess.run([sys.executable, "-m", "resdsl_cli.main", "compile", str(tmp_path / "cl.res")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stderr.count("warning: input 32x32x3") == 1 and "SpecWarning" not in r.stderr


def test_spec_text_is_taken_wherever_a_spec_is(tmp_path):
    text = resdsl.compile_spec("resnet20").spec.source.replace('"recipes.res"', '"recipes"')
    assert resdsl.compile_spec(text).params == 269722
    assert "class Network(nn.Module)" in resdsl.emit_python(text)
    assert "digraph" in resdsl.draw(text).source
    odd = tmp_path / "two\nlines.res"  # a pathlib.Path is a path, whatever its name holds
    odd.write_text(resdsl.compile_spec("resnet20").spec.source.replace('"recipes.res"', '"recipes"'))
    assert sum(p.numel() for p in resdsl.build_model(odd).parameters()) == 269722


def test_arguments_are_checked_as_python_values():
    with pytest.raises(TypeError, match="takes a spec file or packaged spec's name, or text"):
        resdsl.compile_spec()
    for kwargs, message in ((dict(num_classes=2.7), "num_classes must be a whole number, not 2.7"),
                            (dict(num_classes=True), "num_classes must be a whole number, not True"),
                            (dict(in_channels="3"), "in_channels must be a whole number"),
                            (dict(input_size=32), r"input_size must be \(height, width\)"),
                            (dict(input_size=(32,)), r"input_size must be \(height, width\)")):
        with pytest.raises(TypeError, match=message):
            resdsl.compile_spec("resnet20", **kwargs)
    import numpy as np

    assert resdsl.compile_spec("resnet20", num_classes=np.int64(7)).output_shape == (7,)
    # a value out of range is the spec's to locate, at its statement; a note says where the value came from
    err = _error(resdsl.compile_spec, "resnet20", num_classes=0)
    assert "number of classes must be between 1" in err.message
    assert err.notes == ["the shapes are the spec's with num_classes=0 (given to compile_spec or build_model)"]
    err = _error(resdsl.build_model, resdsl.compile_spec("resnet20"), num_classes=0)  # a compiled one, again
    assert "num_classes=0" in err.notes[-1]


def test_a_whole_model_pickles_and_loads_in_a_fresh_process(tmp_path):
    """torch.save(model) (not only its state_dict) and deepcopy: the generated classes are rebuilt from their
    source where they are not loaded yet."""
    model = resdsl.build_model("resnet110_preact").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.save({"model": model, "x": x, "y": model(x)}, tmp_path / "whole.pt")
    code = ("import torch; d = torch.load(r'%s', weights_only=False); m = d['model']\n"
            "assert type(m).__module__ == 'resdsl_generated_resnet110_preact'\n"
            "assert m.resdsl_network == 'resnet110_preact'\n"
            "print(torch.equal(m(d['x']), d['y']))" % (tmp_path / "whole.pt"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "True", r.stderr
    twin = copy.deepcopy(model)
    assert type(twin) is type(model) and torch.equal(twin(x), model(x))


def test_classes_are_found_again_while_they_live_and_subclasses_pickle_by_name(monkeypatch):
    """Past the cache of recent networks, a network still in use keeps its classes (isinstance and unpickling see
    the very class); a user's subclass of a generated class pickles as any class does."""
    from resdsl.backends import torch_module

    monkeypatch.setattr(torch_module, "_KEPT", 1)
    model = resdsl.build_model("resnet20")
    resdsl.build_model("resnet32")  # pushes resnet20's source out of the recent ones
    assert type(pickle.loads(pickle.dumps(model))) is type(model) and type(copy.deepcopy(model)) is type(model)
    assert isinstance(resdsl.build_model("resnet20"), type(model))
    global Mine

    class Mine(type(model)):
        pass

    mine = Mine.__new__(Mine)
    mine.__dict__.update(model.__dict__)
    assert type(pickle.loads(pickle.dumps(mine))) is Mine


def test_one_set_of_classes_per_network_and_one_traceback_source():
    """Building a network again reuses its classes and its linecache entry: a sweep does not grow memory per
    build."""
    before = len(linecache.cache)
    a, b = resdsl.build_model("resnet20"), resdsl.build_model("resnet20")
    assert type(a) is type(b) and len(linecache.cache) <= before + 1


def test_option_a_networks_script_with_torchscript():
    """Option A's zero-padding helper is annotated, so TorchScript does not take its ints for tensors."""
    model = resdsl.build_model("resnet20").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in newer torch; still in use
        scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(scripted(x), model(x), atol=1e-6)


def test_export_onnx_from_python_keeps_the_callers_model_mode(tmp_path):
    """Exported in eval mode; the model is given back as it came, each module's mode (frozen BatchNorms in a
    training model) included."""
    pytest.importorskip("onnx")
    model = resdsl.build_model("resnet20").train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    facts = resdsl.export_onnx("resnet20", str(tmp_path / "m.onnx"), model=model)
    assert facts["opset"] == 17 and (tmp_path / "m.onnx").stat().st_size > 1e6 and model.training
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_a_checked_networks_repr_is_one_line():
    text = repr(resdsl.compile_spec("resnet50"))
    assert text.startswith("<CheckedNetwork resnet50 (") and "25,557,032 params" in text and len(text) < 200


def test_export_onnx_takes_the_input_a_model_was_built_for(tmp_path):
    """A model built for Fashion-MNIST's 1x28x28 is exported with that input (it was run at the spec's 3x32x32);
    a module that does not say its input and does not take the spec's is refused in words."""
    onnx = pytest.importorskip("onnx")
    model = resdsl.build_model("resnet20", in_channels=1, input_size=(28, 28), num_classes=7)
    resdsl.export_onnx("resnet20", str(tmp_path / "fm.onnx"), model=model)
    dims = onnx.load(str(tmp_path / "fm.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    del model.resdsl_input_shape  # as a module from elsewhere
    with pytest.raises(RuntimeError, match="the model given does not take a 3x32x32 input .*expected input"):
        resdsl.export_onnx("resnet20", str(tmp_path / "x.onnx"), model=model)
    assert not (tmp_path / "x.onnx").exists()


def test_weights_past_an_onnx_files_limit_are_refused_before_exporting(tmp_path, monkeypatch):
    """protobuf holds 2 GiB: a larger model is refused in words (it was torch's 'specify the output file name')."""
    pytest.importorskip("onnx")
    from resdsl.backends import onnx_export

    monkeypatch.setattr(onnx_export, "ONNX_MAX_BYTES", 1_000_000)  # resnet20's 1.1 MB of weights, past it
    with pytest.raises(RuntimeError, match=r"resnet20's weights take .* GiB, and an ONNX file holds at most 2 GiB"):
        resdsl.export_onnx("resnet20", str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


def test_export_onnx_never_writes_over_a_file_the_network_is_compiled_from(tmp_path):
    """`resdsl.export_onnx(spec, spec)` (two paths mixed up in a notebook) is refused before anything is written,
    as `resdsl compile --onnx` refuses it: it replaced the user's spec with ONNX bytes."""
    for name in ("resnet20.res", "recipes.res"):
        (tmp_path / name).write_bytes((ROOT / "specs" / name).read_bytes())
    spec, recipes = tmp_path / "resnet20.res", tmp_path / "recipes.res"
    before = spec.read_bytes(), recipes.read_bytes()
    for out in (str(spec), str(tmp_path / "." / "resnet20.res"), str(recipes)):
        with pytest.raises(ValueError, match="a file the network is compiled from"):
            resdsl.export_onnx(str(spec), out)
    assert (spec.read_bytes(), recipes.read_bytes()) == before


def test_one_damaged_packaged_spec_leaves_the_other_names_working(tmp_path, monkeypatch):
    """A packaged file that is not UTF-8 made every lookup by name fail with UnicodeDecodeError."""
    from resdsl import catalog

    for name in ("resnet20.res", "recipes.res"):
        (tmp_path / name).write_bytes((ROOT / "specs" / name).read_bytes())
    (tmp_path / "onnx.res").write_bytes(b"\x08\x08\x12\x07pytorch\xff\xfe")  # a spec written over by ONNX
    (tmp_path / "broken.res").write_bytes(b"# caf\xe9\nnetwork broken\n")  # resdsl list showed an internal error
    monkeypatch.setattr(catalog, "specs_root", lambda: tmp_path)
    assert "resnet20" in catalog.names() and "broken" in [e.name for e in catalog.entries()]  # resdsl list
    assert resdsl.compile_spec("resnet20").params == 269722
