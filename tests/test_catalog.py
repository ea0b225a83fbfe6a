"""Packaged specs by name: `resnet50`, `torchvision/resnet50`; paths win; unknown names; `resdsl list`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import resdsl
from conftest import CIFAR20, ROOT
from regen_golden import GOLDEN, spec_paths
from resdsl import catalog
from resdsl.cost import human
from resdsl_cli.list_cmd import list_cmd
from resdsl_cli.main import main

COUNTS = json.loads((GOLDEN / "counts.json").read_text())
# every network spec file under specs/ by its catalogue name (its path under specs/ without .res)
BY_NAME = {rel.removeprefix("specs/").removesuffix(".res"): rel for rel in spec_paths()}


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Work from a folder outside the repository, as an installed user would."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_catalogue_is_every_spec_file():
    assert catalog.specs_root() == ROOT / "specs"  # a source checkout reads the repository's folder
    assert catalog.names() == sorted(BY_NAME)
    assert len(BY_NAME) >= 52 and "recipes" not in catalog.names()  # recipe-only files have no name


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "torchvision/resnet50", "resnet1001_preact"])
def test_names_resolve_from_anywhere(name, elsewhere):
    net = resdsl.compile_spec(name)
    golden = COUNTS[BY_NAME[name]]
    assert (net.name, net.params, net.macs, net.layers) == (golden["name"], golden["params"], golden["macs"],
                                                             golden["layers"])
    assert net.spec.path == str(ROOT / BY_NAME[name])


def test_paper_and_torchvision_resnet50_are_different_specs(elsewhere):
    v1, v15 = resdsl.compile_spec("resnet50"), resdsl.compile_spec("torchvision/resnet50")
    assert v1.params == v15.params and (v1.macs, v15.macs) == (3_857_973_248, 4_089_184_256)


def test_build_model_by_name(elsewhere):
    model = resdsl.build_model("torchvision/resnet18", num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512 - 513_000 + 5_130


def test_emit_python_by_name_matches_path(elsewhere):
    assert resdsl.emit_python("resnet20") == resdsl.emit_python(str(ROOT / "specs/resnet20.res"))


def test_existing_file_wins_over_name(elsewhere):
    (elsewhere / "resnet20").write_text(CIFAR20.replace("network resnet20", "network mine").replace("fc 10", "fc 7"))
    net = resdsl.compile_spec("resnet20")
    assert (net.name, net.output_shape, net.spec.path) == ("mine", (7,), "resnet20")


def test_folder_does_not_hide_name(elsewhere):
    (elsewhere / "resnet20").mkdir()  # e.g. a run directory named after the spec
    assert resdsl.compile_spec("resnet20").spec.path == str(ROOT / "specs/resnet20.res")
    (elsewhere / "mine").mkdir()
    with pytest.raises(resdsl.SpecError, match="'mine' is a directory"):
        resdsl.compile_spec("mine")


def test_relative_paths_keep_working(at_root):
    assert resdsl.compile_spec("specs/torchvision/resnet50.res").spec.path == "specs/torchvision/resnet50.res"


def test_unknown_name_suggests_close_names(elsewhere):
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec("resnet5")
    err = info.value
    assert err.message == "no spec file or packaged spec named 'resnet5'"
    assert "resnet50, resnet56" in err.hint and "resdsl list" in err.hint
    with pytest.raises(resdsl.SpecError, match="named '../specs/resnet20'"):  # names never escape the folder
        resdsl.compile_spec("../specs/resnet20")


@pytest.mark.parametrize("word, first", [("resnet18", "torchvision/resnet18"), ("resnet18_optA", "resnet18_optionA"),
                                         ("torchvison/resnet34", "torchvision/resnet34"), ("plain", "plain110")])
def test_close_names(word, first):
    assert catalog.close_names(word)[0] == first
    assert catalog.close_names("zzzz") == []


def test_missing_path_that_names_a_packaged_spec(elsewhere):
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec("specs/torchvision/resnet50.res")
    assert info.value.render().splitlines() == [
        "specs/torchvision/resnet50.res:1:1: error: cannot read spec 'specs/torchvision/resnet50.res': no such file",
        "hint: the packaged spec 'torchvision/resnet50' is given by name: e.g. resdsl compile torchvision/resnet50 "
        "(`resdsl list` shows every packaged spec)"]
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.compile_spec("nope.res")
    assert info.value.hint is None and str(info.value.span) == "nope.res:1:1"


def test_cli_compile_by_name_and_unknown_name(elsewhere):
    r = CliRunner().invoke(main, ["compile", "resnet1001_preact"])
    assert r.exit_code == 0 and "10,327,706" in r.stdout
    r = CliRunner().invoke(main, ["compile", "resnet5"])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.splitlines()[0] == "resdsl: error: no spec file or packaged spec named 'resnet5'"
    assert r.stderr.splitlines()[1].startswith("hint: did you mean resnet50")


@pytest.mark.parametrize("header, source", [
    ("# [R] Table 6: CIFAR-10 ResNet-110", ("R", "Table 6")),
    ("# [I] Table 2, Fig. 4(b) BN after addition, 8.17%: ResNet-110", ("I", "Table 2, Fig. 4(b)")),
    ("# [R] section 4.2 and Table 6: CIFAR-10 ResNet-20", ("R", "section 4.2, Table 6")),
    ("\n# torchvision.models.resnet50 (v1.5).", ("torchvision", "models.resnet50")),
    ("network x  # [R] Table 1", ("", "")),
])
def test_source_of_header(header, source):
    assert catalog.source_of(header + "\nnetwork x\n") == source


def test_every_spec_names_its_paper_and_table():
    for e in catalog.entries():
        library = e.name.split("/")[0]  # torchvision/ and timm/ name their library; the others a paper
        expected = library if library in ("torchvision", "timm") else e.paper
        assert e.paper in catalog.PAPERS and e.paper == expected and e.where, (e.name, e.paper, e.where)


def test_list_json_has_every_spec_with_golden_counts(elsewhere):
    r = CliRunner().invoke(list_cmd, ["--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(rows) == set(BY_NAME)
    for name, row in rows.items():
        golden = COUNTS[BY_NAME[name]]
        assert (row["network"], row["params"], row["macs"], row["layers"]) == \
            (golden["name"], golden["params"], golden["macs"], golden["layers"]), name


def test_list_table_one_line_per_spec(elsewhere):
    r = CliRunner().invoke(list_cmd, [])
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and lines[0].split() == ["name", "paper", "table/figure", "params", "MACs"]
    assert len(lines) == 1 + len(BY_NAME)
    for line in lines[1:]:
        golden = COUNTS[BY_NAME[line.split()[0]]]
        assert line.split()[-2:] == [human(golden["params"]), human(golden["macs"])], line
    words = [line.split() for line in lines]
    assert ["resnet110", "[R]", "Table", "6", "1.73M", "253M"] in words
    assert ["torchvision/resnet50", "torchvision", "models.resnet50", "25.6M", "4.09G"] in words


def test_list_filters(elsewhere):
    r = CliRunner().invoke(list_cmd, ["resnet110*", "--paper", "i", "--json"])
    names = [row["name"] for row in json.loads(r.stdout)]
    assert names and all(n.startswith("resnet110_") for n in names) and "resnet110" not in names
    r = CliRunner().invoke(list_cmd, ["--paper", "torchvision", "--json"])
    assert [row["name"] for row in json.loads(r.stdout)] == sorted(n for n in BY_NAME if n.startswith("torchvision/"))
    r = CliRunner().invoke(list_cmd, ["zzz*"])
    assert r.exit_code == 1 and "no packaged spec matches 'zzz*'" in r.stderr
    r = CliRunner().invoke(list_cmd, ["experiments", "--paper", "r", "--json"])  # the experiments of [R] alone
    sources = [row["source"] for row in json.loads(r.stdout)]
    assert sources and all(s.startswith("[R] ") for s in sources)
    r = CliRunner().invoke(list_cmd, ["experiments", "--paper", "wrn"])
    assert r.exit_code == 1 and "no packaged experiment reproduces [WRN]" in r.stderr
    r = CliRunner().invoke(list_cmd, ["experiments", "i-table3*", "--json"])  # a PATTERN, as for specs
    assert [row["name"] for row in json.loads(r.stdout)] == ["i-table3", "i-table3-cifar100"]
    r = CliRunner().invoke(list_cmd, ["resnet20", "--paper", "i"])  # the filter, not the name, is why
    assert r.exit_code == 1 and "no packaged spec of [I] matches 'resnet20'" in r.stderr


def test_list_is_a_resdsl_command():
    """Fails until cli/main.py registers it: main.add_command(list_cmd)."""
    r = CliRunner().invoke(main, ["list", "--help"])
    assert r.exit_code == 0 and "resdsl list" in r.stdout


def test_names_and_list_do_not_import_torch(tmp_path):
    code = ("import sys, resdsl\n"
            "from resdsl_cli.list_cmd import list_cmd\n"
            "assert resdsl.compile_spec('torchvision/resnet152').params == 60_192_808\n"
            "try:\n list_cmd(['--json'])\n"
            "except SystemExit as e: assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'compiling by name imported torch'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == len(BY_NAME)
