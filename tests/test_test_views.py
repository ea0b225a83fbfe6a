"""The papers' test views on image folders (resdsl/train/views.py): [R]'s fully-convolutional multi-scale test and
[I]'s larger single crop, against references written here with torchvision's own transforms; the recipe's `test`
words and their checks."""
import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import decode_image
from torchvision.transforms.v2 import functional as TF

from resdsl import compile_spec
from resdsl.backends.torch_module import build_model
from resdsl.errors import SpecError
from resdsl.train.data import load_dataset
from resdsl.train.evaluation import evaluate
from resdsl.train.images import IMAGENET_MEAN, IMAGENET_STD, make_batch
from resdsl.train import session
from resdsl.train.views import Views, view_of
from test_train import resdsl
from test_train_data import make_folder

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "specs" / "tiny_folder.res")


def tiny_model():
    torch.manual_seed(0)
    return build_model(compile_spec(TINY), num_classes=2, in_channels=3, input_size=(32, 32)).eval()


def sharp(model):
    """The model with its logits 200 times larger: a random network's are near 0, where averaging softmax scores
    and averaging logits give about the same figures; [R]'s test averages the scores. Its losses are compared, not
    its errors: its scores can tie between two classes, and float sums break a tie either way."""
    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        fc.weight.mul_(200)
        fc.bias.mul_(200)
    return model


def normalised(picture: torch.Tensor) -> torch.Tensor:
    x = picture.float().div(255)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


def reference(model, folder: Path, views) -> dict:
    """Loss and top-1 error, each picture's softmax scores averaged over ``views(picture)`` (a list of tensors)."""
    losses, wrong, n = [], 0, 0
    for label, name in enumerate(("cat", "dog")):
        for path in sorted((folder / "val" / name).iterdir()):
            picture = decode_image(str(path), mode="RGB")
            with torch.no_grad():
                scores = torch.stack([model(v[None]).softmax(-1)[0] for v in views(picture)]).mean(0).log()
            losses.append(F.nll_loss(scores[None], torch.tensor([label])).item())
            wrong += int(scores.argmax().item() != label)
            n += 1
    return {"loss": sum(losses) / n, "error": 100.0 * wrong / n}


def ours(model, folder: Path, test) -> dict:
    data = load_dataset(str(folder))
    data.shape = (3, 32, 32)
    batches = session.test_batches(data, None, session.RunOptions(workers=0), 3, test=view_of(test),
                                   device=torch.device("cpu"))
    return evaluate(model, batches, torch.device("cpu"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    make_folder(root, per_class=3, size=(48, 40))  # 4:3 pictures, PNG and JPEG
    rng = np.random.default_rng(5)
    for name in ("cat", "dog"):  # and one 3:5 each
        Image.fromarray(rng.integers(0, 255, (50, 30, 3), dtype=np.uint8)).save(root / "val" / name / "tall.png")
    return root


def test_multi_scale_averages_the_whole_pictures_scores_at_every_scale(folder):
    """[R] Table 4's test: each whole picture resized to each shorter side, its softmax scores averaged."""
    model, scales = tiny_model(), (32, 40, 56)

    def views(picture):
        return [normalised(TF.resize(picture, [s], antialias=True)) for s in scales]

    want = reference(model, folder, views)
    got = ours(model, folder, {"view": "multi-scale", "scales": list(scales)})
    assert got["images"] == 8 and got["error"] == want["error"]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    sharpened, test = sharp(tiny_model()), {"view": "multi-scale", "scales": list(scales)}
    assert ours(sharpened, folder, test)["loss"] == pytest.approx(reference(sharpened, folder, views)["loss"],
                                                                  rel=1e-5, abs=1e-5)
    # without sizes, [R]'s scales {224, 256, 384, 480, 640} for this 32-pixel network: 32, 37, 55, 69, 91
    paper = [round(s * 32 / 224) for s in (224, 256, 384, 480, 640)]
    want = reference(model, folder, lambda p: [normalised(TF.resize(p, [s], antialias=True)) for s in paper])
    assert ours(model, folder, "multi-scale")["loss"] == pytest.approx(want["loss"], abs=1e-5)


def test_ten_crop_averages_the_softmax_scores_of_torchvisions_ten_crops(folder):
    """[R] Tables 2 and 3's "standard 10-crop testing": four corners and the center of the picture resized to 256,
    and their flips, each picture's softmax scores averaged (not its logits: another top-1 where crops disagree);
    here crops of 32 from 37 for a 32-pixel network."""
    def views(picture):
        return [normalised(v) for v in TF.ten_crop(TF.resize(picture, [37], antialias=True), [32])]

    model = tiny_model()
    want, got = reference(model, folder, views), ours(model, folder, "10-crop")
    assert got["images"] == 8 and got["error"] == want["error"]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    model = sharp(model)
    assert ours(model, folder, "10-crop")["loss"] == pytest.approx(reference(model, folder, views)["loss"], rel=1e-5,
                                                                   abs=1e-5)


def test_a_larger_single_crop_is_torchvisions_resize_and_center_crop(folder):
    """[I] Table 5's "single 320x320 crop from s = 320", here 40x40 from 40 on a 32-pixel network."""
    model = tiny_model()
    want = reference(model, folder, lambda p: [normalised(TF.center_crop(TF.resize(p, [40], antialias=True), 40))])
    got = ours(model, folder, {"view": "single-view", "scale": 40, "crop": 40})
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-5) and got["error"] == want["error"]


def test_multi_scale_batches_are_the_same_from_workers_and_where_the_model_is(folder):
    """The same views, decoded and resized one picture at a time in a DataLoader worker, or as a batch where the
    model is (on a GPU after nvJPEG; here the CPU)."""
    data = load_dataset(str(folder))
    one, encoded = (data.test_dataset(32, 37, scales=(32, 48), encoded=e) for e in (False, True))
    items = [encoded[i] for i in range(len(encoded))]
    batch = make_batch([i[0] for i in items], [i[3] for i in items], [0] * len(items), encoded.view, "cpu")
    assert isinstance(batch, Views) and batch.pictures == 8 and batch.per_picture == 2
    assert sorted(len(index) for index, _ in batch.groups) == [2, 2, 6, 6]  # 4:3 and 3:5 pictures, two scales
    model = tiny_model()
    with torch.no_grad():
        together = batch.scores(model)
        alone = torch.cat([one[i][0].scores(model) for i in range(len(one))])
    assert torch.allclose(together, alone, atol=1e-6)


def test_a_run_says_how_it_is_tested_and_eval_follows_its_recipe(tmp_path, folder):
    """The banner says how the run is tested, its closing line gives the final test's figures; --overwrite takes
    final-test.json as a run's own file; eval tests as the recipe says, or as --test says, and refuses a view the
    data cannot take."""
    run = tmp_path / "run"
    train = ["train", TINY, "--data", str(folder), "--workers", "0", "--device", "cpu", "--set",
             "test=multi-scale 32, 48", "--out", str(run)]
    for again in ([], ["--overwrite"]):  # the second time over the first run's files
        r = resdsl(*train, *again)
        assert r.returncode == 0, r.stderr[-2000:]
    assert ("test single view, 32x32 of shorter side 37 at each evaluation, then multi-scale, fully convolutional, "
            "shorter side 32, 48 at the end (final-test.json)") in r.stdout
    tested = json.loads((run / "final-test.json").read_text())
    assert (f"done: 3 iterations, test error (multi-scale, fully convolutional, shorter side 32, 48) "
            f"{tested['test_error']:.2f}%") in r.stdout
    assert json.loads((run / "config.json").read_text())["recipe"]["test"] == {"view": "multi-scale",
                                                                               "scales": [32, 48]}
    r = resdsl("eval", str(run))
    assert r.returncode == 0 and "(multi-scale, fully convolutional, shorter side 32, 48): top-1" in r.stdout, r
    assert f"top-1 error {tested['test_error']:.2f}%" in r.stdout  # the final test's figure
    r = resdsl("eval", str(run), "--test", "10-crop")
    assert r.returncode == 0 and "(10-crop, 32x32 of shorter side 37): top-1" in r.stdout, r
    r = resdsl("eval", str(run), "--test", "10-crop scale 40 crop 32")  # a view with sizes of its own
    assert r.returncode == 0 and "(10-crop, 32x32 of shorter side 40): top-1" in r.stdout, r
    r = resdsl("eval", str(run), "--test", "10-crop scale 30 crop 32")  # checked as a recipe's, located
    assert r.returncode == 1 and "--test:1:1: error: the test crop 32 is larger than the shorter side 30" in r.stderr
    r = resdsl("eval", "tests/specs/tiny.res", "--checkpoint", str(run), "--data", "synthetic", "--test",
               "multi-scale")
    assert r.returncode == 1 and "multi-scale testing needs an image-folder dataset" in r.stderr, r
    r = resdsl("eval", str(run), "--test", "single-view scale 36 crop 32", "--data", "synthetic")
    assert r.returncode == 1 and "single-view scale 36 crop 32 testing needs an image-folder" in r.stderr, r


RECIPE = 'extends "resnet50"\nnetwork t\nrecipe r\nrecipe r extends imagenet_resnet {{\n  test {}\n}}\n'


@pytest.mark.parametrize("words, value", [
    ("10-crop", "10-crop"),
    ("multi-scale", "multi-scale"),
    ("multi-scale 224, 256, 384, 480, 640", {"view": "multi-scale", "scales": [224, 256, 384, 480, 640]}),
    ("single-view scale 320 crop 320", {"view": "single-view", "scale": 320, "crop": 320}),
    ("10-crop scale 288 crop 256", {"view": "10-crop", "scale": 288, "crop": 256}),
])
def test_recipe_test_words(words, value):
    """A view without sizes stays its name (recipes, and so spec hashes, of earlier versions are unchanged)."""
    assert compile_spec(text=RECIPE.format(words)).recipe["test"] == value


@pytest.mark.parametrize("words, message", [
    ("single-view scale 256 crop 320", "the test crop 320 is larger than the shorter side 256"),
    ("multi-scale 224, 256, 224", "names a scale twice"),
    ("multi-scale 0, 256", "between 1 and 4096 pixels"),
])
def test_recipe_test_sizes_are_checked_where_written(words, message):
    with pytest.raises(SpecError, match=message) as err:
        compile_spec(text=RECIPE.format(words))
    assert err.value.span.line == 5


def test_reproduce_reports_each_runs_final_test_in_its_recipes_view(tmp_path, folder):
    """[R] Table 3's errors are 10-crop: an experiment's runs end with that test (final-test.json), the report takes
    its figures, top-5 too, and says how they were tested; a run stopped before its final test is resumed to it."""
    out = tmp_path / "exp"
    cmd = ["reproduce", "tests/experiments/tiny_folder.exp", "--data", str(folder), "--iters", "2", "--device", "cpu",
           "--workers", "0", "--no-estimate", "--out", str(out)]
    r = resdsl(*cmd)
    assert r.returncode == 0, r.stderr[-2000:]
    tested = json.loads((out / "tiny" / "seed-0" / "final-test.json").read_text())
    assert tested["view"] == "10-crop, 32x32 of shorter side 37" and tested["images"] == 8
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["test_errors"] == [tested["test_error"]] and row["top5_mean"] == tested["test_top5_error"]
    assert row["views"] == ["10-crop, 32x32 of shorter side 37"]
    report = (out / "report.md").read_text()
    assert "top-5 %: mean |" in report and "tested 10-crop, 32x32 of shorter side 37 (final-test.json)" in report
    (out / "tiny" / "seed-0" / "final-test.json").unlink()  # as if killed after the last checkpoint
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.reproduce import write_report

    exp = parse_experiment(str(ROOT / "tests/experiments/tiny_folder.exp"))
    write_report(exp, str(out), {"data": str(folder), "iters": 2}, None, "test", 1.0)  # its figures are not counted
    assert json.loads((out / "results.json").read_text())["rows"][0]["test_errors"] == []
    r = resdsl(*cmd, "--dry-run")
    assert re.search(r"tiny/seed-0 +to test +2/2", r.stdout), r.stdout
    r = resdsl(*cmd)
    assert r.returncode == 0 and "1 of 1 runs to do" in r.stdout, r.stdout + r.stderr[-2000:]
    assert json.loads((out / "tiny" / "seed-0" / "final-test.json").read_text()) == tested


def test_a_resumed_experiment_run_takes_the_devices_and_workers_given_anew(tmp_path):
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.runner import Job, train_command

    exp = parse_experiment(str(ROOT / "tests/experiments/tiny_folder.exp"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"iterations": 2, "final_test": {"view": "10-crop"}}))
    torch.save({"state": {"iter": 2}}, run / "checkpoint.pt")
    cmd = train_command(exp, Job(exp.rows[0], 0, str(run)), {"device": "cpu", "workers": 0, "iters": 2})
    assert cmd[3:] == ["train", "--resume", str(run), "--quiet", "--device", "cpu", "--workers", "0"]


def test_the_final_test_halves_batches_that_do_not_fit_and_stops_on_a_signal(tmp_path, monkeypatch, folder):
    """Out of memory (a multi-scale test's largest views are ~8 crops' pixels), the batches are halved down to one
    picture; Ctrl-C or SIGTERM stops the test with the trainer's "stopped" message, and nothing is written."""
    from resdsl.train import final
    from resdsl.train.session import Interrupted, TrainingError

    data = load_dataset(str(folder))
    data.shape = (3, 32, 32)
    s = type("S", (), {"recipe": {"batch": 128}, "data": data})()
    tried, said = [], []

    def test(s, view, pictures):
        tried.append(pictures)
        if pictures > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"loss": 1.0, "error": 50.0, "top5_error": 0.0, "images": 8}

    monkeypatch.setattr(final, "_test", test)
    view = view_of("multi-scale")
    assert final.run(s, str(tmp_path), view, 3, said.append)["test_error"] == 50.0
    assert tried == [10, 5, 2] and said[0] == "note: the final test ran out of memory; 5 pictures a batch"
    monkeypatch.setattr(final, "_test", lambda s, view, pictures: test(s, view, 99))
    with pytest.raises(TrainingError, match="ran out of memory with one picture a batch"):
        final.run(s, str(tmp_path / "b"), view, 3, said.append)

    def killed(s, view, pictures):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal stops the test")

    monkeypatch.setattr(final, "_test", killed)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match="SIGTERM received during the final test") as stop:
        final.run(s, str(tmp_path / "c"), view, 3, said.append)
    assert stop.value.status == 143 and not (tmp_path / "c" / "final-test.json").exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers given back


def test_a_sized_view_equal_to_the_evaluations_asks_no_final_test(folder):
    from resdsl.train import final

    data = load_dataset(str(folder))
    data.shape = (3, 32, 32)
    assert final.due({"test": {"view": "single-view", "scale": 37, "crop": 32}}, data) is None
    assert final.due({"test": "single-view"}, data) is None
    assert final.due({"test": {"view": "single-view", "scale": 40, "crop": 32}}, data)["scale"] == 40


def test_a_view_the_data_does_not_take_is_said(folder):
    from resdsl.train import final

    small = load_dataset("synthetic", train_subset=8, test_subset=4)
    assert final.plan_words(None, small, {"test": "10-crop", "dataset": "synthetic"}) == (
        "note: the recipe's test view (10-crop) is for image folders; synthetic's small images are tested whole")
    assert final.plan_words(None, small, {"test": "single-view", "dataset": "synthetic"}) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_multi_scale_scores_are_deterministic_on_cuda(folder):
    """A run with --deterministic ends with its final test under torch.use_deterministic_algorithms(True), which
    refuses CUDA's atomic index_add_: the scores must be added without it, to the same figures as on the CPU."""
    model = tiny_model()
    data = load_dataset(str(folder))
    one = data.test_dataset(32, 37, scales=(32, 48))
    views = [one[i][0] for i in range(len(one))]
    torch.use_deterministic_algorithms(True)
    try:
        with torch.no_grad():
            on_gpu = torch.cat([v.to("cuda").scores(model.cuda()) for v in views]).cpu()
    finally:
        torch.use_deterministic_algorithms(False)
    with torch.no_grad():
        on_cpu = torch.cat([v.scores(model.cpu()) for v in views])
    assert torch.allclose(on_gpu, on_cpu, atol=1e-5)


def test_an_experiment_restarts_with_other_workers(tmp_path):
    """--workers changes how fast a run goes, not what it computes: a restart may give another number, and a
    record written when it was part of the options (as null) is read as before."""
    from resdsl.experiment.parse import parse_experiment
    from resdsl.experiment.folder import check_record
    from resdsl.experiment.runner import PASSED

    exp = parse_experiment(str(ROOT / "tests/experiments/tiny_folder.exp"))
    out = tmp_path / "exp"
    check_record(str(out), exp, {"workers": 4, "iters": 2}, 1)
    record = json.loads((out / "experiment.json").read_text())
    assert "workers" not in record["options"]
    (out / "tiny" / "seed-0").mkdir(parents=True)
    (out / "tiny" / "seed-0" / "checkpoint.pt").write_bytes(b"x")  # a run has checkpointed: options are fixed
    check_record(str(out), exp, {"workers": 0, "iters": 2}, 1)
    record["options"] = {k: None for k in PASSED} | {"iters": 2, "no_download": None, "deterministic": None,
                                                      "channels_last": None}  # an older record's keys
    (out / "experiment.json").write_text(json.dumps(record))
    check_record(str(out), exp, {"workers": 2, "iters": 2}, 1)
    with pytest.raises(Exception, match="started with options --iters 2"):
        check_record(str(out), exp, {"iters": 3}, 1)


def test_test_batches_hold_about_the_same_pixels_whatever_the_view():
    from resdsl.train.views import batch_pictures

    assert batch_pictures(view_of("single-view"), 256, 224) == 256
    assert batch_pictures(view_of("10-crop"), 256, 224) == 25
    assert batch_pictures(view_of("multi-scale"), 256, 224) == 10  # [R]'s five sides: ~24 crops' worth a picture
    assert batch_pictures(view_of({"view": "single-view", "scale": 320, "crop": 320}), 256, 224) == 125
    assert batch_pictures(view_of({"view": "multi-scale", "scales": [224, 1024]}), 256, 224) == 8
    assert batch_pictures(view_of("multi-scale"), 1, 224) == 1


def test_a_hand_edited_test_view_in_a_record_is_named():
    """config.json's recipe test and final_test are read back by resume and eval: a damaged one is refused by its
    field (rundir.read_config), not met as a KeyError or a ValueError inside the final test."""
    from resdsl.train.record import problem

    record = {"recipe": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0, "batch": 4, "lr": 0.1,
                         "schedule": {"kind": "constant"}, "length": {"value": 3, "unit": "iterations"},
                         "test": {"view": "multi-scale", "scales": [32, 48]}},
              "options": {"seed": 0, "channels_last": False, "deterministic": False}, "iterations": 3,
              "final_test": {"view": "10-crop", "scale": None, "crop": None, "scales": []}}
    assert problem(record) is None
    assert problem(dict(record, final_test={"view": "multi-scale", "scales": "32"})).startswith("final_test is ")
    bad = dict(record, recipe=dict(record["recipe"], test={"view": "single-view", "scale": "320", "crop": 320}))
    assert problem(bad).startswith("recipe.test is ")


def test_a_confidently_wrong_picture_has_a_finite_loss_in_every_view():
    """The views' mean softmax score of the true class can be below float32's smallest number (a logit gap over
    ~104): its log is taken in log space, so the loss is that gap, not infinity (eval printed "loss inf")."""
    from resdsl.train.evaluation import evaluate
    from resdsl.train.views import Views

    class Sure(torch.nn.Module):  # class 1 by 200 over class 0, whatever it sees
        def forward(self, x):
            return torch.tensor([[0.0, 200.0]]).expand(x.shape[0], 2)

    y = torch.zeros(3, dtype=torch.int64)
    crops = torch.zeros(3, 10, 3, 4, 4)  # 10-crop: (pictures, views, C, H, W)
    scales = Views([(torch.arange(3), torch.zeros(3, 3, 4, 4)), (torch.arange(3), torch.zeros(3, 3, 6, 6))], 3, 2)
    for x in (crops, scales):
        figures = evaluate(Sure(), [(x, y)], torch.device("cpu"))
        assert figures["loss"] == pytest.approx(200.0) and figures["error"] == 100.0
