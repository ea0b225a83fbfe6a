"""Learning-rate schedules: the papers' step decay, warm-up that really returns to the base lr, plateau."""
from __future__ import annotations

import pytest

from resdsl.errors import SpecError
from resdsl.train.schedule import LRSchedule, from_recipe

CIFAR = {"lr": 0.1, "length": {"value": 64000, "unit": "iterations"},
         "schedule": {"kind": "step", "milestones": [32000, 48000], "gamma": 0.1},
         "warmup": {"length": 400, "unit": "iterations", "lr": 0.01, "until_error": None}}


def test_cifar_recipe_lr_curve():
    s, total = from_recipe(CIFAR, iters_per_epoch=390)
    assert total == 64000
    assert [s.lr_at(i) for i in (0, 399)] == [0.01, 0.01]
    s.observe_train_error(399, 90.0)  # the warm-up ends by count
    assert s.lr_at(400) == 0.1 and s.lr_at(31999) == 0.1
    assert s.lr_at(32000) == pytest.approx(0.01) and s.lr_at(48000) == pytest.approx(0.001)


def test_warmup_until_error_ends_early_and_returns_to_base():
    recipe = dict(CIFAR, warmup=dict(CIFAR["warmup"], until_error=80.0))
    s, _ = from_recipe(recipe, 390)
    s.observe_train_error(10, 85.0)
    assert s.lr_at(11) == 0.01
    s.observe_train_error(10, 80.0)  # "below 80%": not at 80
    assert s.lr_at(11) == 0.01 and not s.warmup_done
    s.observe_train_error(11, 79.0)
    assert s.lr_at(12) == 0.1 and s.lr_at(200) == 0.1
    restored = from_recipe(recipe, 390)[0]
    restored.load_state_dict(s.state_dict())
    assert restored.lr_at(12) == 0.1


def test_a_warmup_without_a_length_ends_only_by_its_error_rule():
    """[R]'s rule: lr 0.01 until the training error is below 80%, however long that takes, but at most until the
    first lr drop ("the rest of the learning schedule is as done previously": a net that never gets below 80%, as
    plain-110 may, still follows the milestones); the banner and config.json say so, and a resumed run reads the
    same rule back."""
    from resdsl.train.report import effective_recipe, schedule_words

    recipe = dict(CIFAR, warmup=dict(CIFAR["warmup"], length=None, until_error=80.0))
    s, total = from_recipe(recipe, 390)
    for it in range(0, 5000, 100):
        s.observe_train_error(it, 85.0)
    assert s.lr_at(5000) == 0.01 and not s.warmup_done
    s.observe_train_error(5000, 79.9)
    assert s.lr_at(5001) == 0.1
    assert schedule_words(recipe, s, total, 390).endswith("; warm-up lr 0.01 until training error < 80% (at most "
                                                          "32,000 iterations, to the first lr drop)")
    ran = effective_recipe(recipe, s, total)
    assert ran["warmup"]["length"] is None and from_recipe(ran, 390)[0].warmup_iters == 32000
    stuck, _ = from_recipe(recipe, 390)
    for it in range(31999):
        stuck.observe_train_error(it, 85.0)
    assert stuck.lr_at(31999) == 0.01 and not stuck.warmup_done
    stuck.observe_train_error(31999, 85.0)
    assert stuck.warmup_done and [stuck.lr_at(i) for i in (32000, 48000)] == pytest.approx([0.01, 0.001])
    cosine, _ = from_recipe(dict(recipe, schedule={"kind": "cosine"}), 390)
    assert cosine.warmup_iters == 64000  # no drop to stop at: the run's length at most


def test_length_override_scales_milestones_and_warmup():
    s, total = from_recipe(CIFAR, 390, length_override=(640, "iterations"))
    assert total == 640 and s.milestones == [320, 480] and s.warmup_iters == 4
    s, total = from_recipe(CIFAR, 100, length_override=(2, "epochs"))
    assert total == 200 and s.milestones == [100, 150]


def test_a_milestone_and_a_warmup_written_as_0_are_0():
    """`schedule step 0, 3` drops the lr at the start and at 3, `warmup 0` is no warm-up: the run written (they
    were moved to 1: two drops at 1, one warm-up iteration); a milestone or warm-up scaled down stays at 1 or later."""
    recipe = {"lr": 0.1, "length": {"value": 6, "unit": "iterations"},
              "schedule": {"kind": "step", "milestones": [0, 3], "gamma": 0.1},
              "warmup": {"length": 0, "unit": "iterations", "lr": 0.5, "until_error": None}}
    s, _ = from_recipe(recipe, 10)
    assert s.milestones == [0, 3] and s.warmup_iters == 0 and s.warmup_done
    assert [s.lr_at(i) for i in (0, 2, 3)] == pytest.approx([0.01, 0.01, 0.001])
    s, _ = from_recipe({**recipe, "schedule": {"kind": "step", "milestones": [1, 3], "gamma": 0.1},
                        "warmup": {**recipe["warmup"], "length": 1}}, 10, length_override=(2, "iterations"))
    assert s.milestones == [1, 1] and s.warmup_iters == 1


def test_a_run_short_enough_to_merge_two_milestones_says_so():
    """--iters 3 puts [R]'s 32k and 48k at iteration 2: both decays happen there (x0.01), and the banner says so."""
    from resdsl.train.report import schedule_words

    s, total = from_recipe(CIFAR, 390, length_override=(3, "iterations"))
    assert s.milestones == [2, 2] and s.lr_at(1) == 0.1 and s.lr_at(2) == pytest.approx(0.001)
    assert schedule_words(CIFAR, s, total, 390).startswith("3 iterations (0.007692 epochs of 390), lr x0.1 at 2 "
                                                           "(2 times)")
    s, total = from_recipe(CIFAR, 390, length_override=(1, "epochs"))
    assert schedule_words(CIFAR, s, total, 390).startswith("390 iterations (1 epoch of 390)")


def test_epoch_schedule():
    recipe = {"lr": 0.1, "length": {"value": 90, "unit": "epochs"},
              "schedule": {"kind": "step", "milestones": [30, 60], "gamma": 0.1}, "warmup": None}
    s, total = from_recipe(recipe, iters_per_epoch=10)
    assert total == 900 and s.lr_at(299) == 0.1 and s.lr_at(300) == pytest.approx(0.01)


def test_plateau():
    s = LRSchedule(0.1, 1000, "plateau", gamma=0.1, patience=2)
    for err in (50, 40, 41, 40.5):
        s.observe_val_error(err)
    assert s.lr_at(0) == pytest.approx(0.01)


def test_a_plateau_schedule_without_numbers_takes_the_documented_ones():
    """docs/language.md: `schedule plateau` multiplies the lr by gamma 0.1 after patience 5 evaluations."""
    import resdsl

    text = ("network p\ninput 1x8x8\nstem cifar 4\nstages 4x1\nunit basic\nshortcut A\norder post\nhead avgpool fc 2\n"
            "recipe r\n"
            "recipe r {\n  lr 0.1\n  batch 8\n  length 10 iterations\n  schedule plateau\n}\n")
    schedule = resdsl.compile_spec(text=text).recipe["schedule"]
    assert (schedule["kind"], schedule["gamma"], schedule["patience"]) == ("plateau", 0.1, 5)


def test_milestones_set_on_the_command_line_count_in_the_runs_length(at_root):
    """`--set 'schedule=step 100, 150' --iters 200`: the milestones the user wrote for 200 iterations stay at 100
    and 150 (the recipe's own 32k/48k scale to an overridden length); a --set length is not replaced."""
    from resdsl.recipes import recipe_with_settings
    from resdsl.resolve import resolve_path

    spec = resolve_path("specs/resnet20.res")
    written = recipe_with_settings(spec, ["momentum=0.95", "schedule=step 100, 150"], (200, "iterations"))
    s, total = from_recipe(written, 390, (200, "iterations"))
    assert total == 200 and s.milestones == [100, 150] and written["momentum"] == 0.95
    s, total = from_recipe(recipe_with_settings(spec, ["momentum=0.95"], (200, "iterations")), 390,
                           (200, "iterations"))
    assert total == 200 and s.milestones == [100, 150]  # the recipe's 32000, 48000 scaled to 200
    epochs = recipe_with_settings(spec, ["schedule=step 2, 3"], (4, "epochs"))
    assert from_recipe(epochs, 390, (4, "epochs"))[0].milestones == [780, 1170]
    assert recipe_with_settings(spec, ["schedule=step 10", "length=20 iterations"], (200, "iterations"))[
        "length"] == {"value": 20, "unit": "iterations"}
    # a warm-up given with the run's length counts as written too, while the recipe's milestones still scale
    warm = recipe_with_settings(spec, ["warmup=4 iterations lr 0.001"], (8, "iterations"))
    s, total = from_recipe(warm, 390, (8, "iterations"))
    assert s.warmup_iters == 4 and s.milestones == [4, 6]
    per_epoch = recipe_with_settings(spec, ["momentum=0.9", "warmup=2 lr 0.01"], (4, "epochs"))
    assert from_recipe(per_epoch, 390, (4, "epochs"))[0].warmup_iters == 780  # no unit: the run's, epochs
    for warmup, run in (("warmup=10 iterations lr 0.01", (8, "iterations")), ("warmup=2 lr 0.01", (1, "epochs"))):
        with pytest.raises(SpecError, match=r"warm-up is not shorter than the whole run") as info:
            recipe_with_settings(spec, ["momentum=0.9", warmup], run)
        assert (info.value.span.path, info.value.span.line) == ("--set", 2)
    preact = resolve_path("specs/resnet110_preact.res")  # the recipe's own 400-iteration warm-up scales
    assert from_recipe(recipe_with_settings(preact, ["momentum=0.9"], (640, "iterations")), 390,
                       (640, "iterations"))[0].warmup_iters == 4


def test_the_warmup_ends_on_the_mean_error_of_the_last_20_batches():
    """The loop feeds [R]'s rule the mean training error of the last 20 batches, so one lucky batch does not end
    ResNet-110's warm-up."""
    import torch
    from types import SimpleNamespace

    from resdsl.train.points import observe_warmup

    schedule = from_recipe(dict(CIFAR, warmup=dict(CIFAR["warmup"], length=None, until_error=80.0)), 390)[0]
    s, state = SimpleNamespace(schedule=schedule, world=1), {"recent_errors": []}
    for it in range(19):
        observe_warmup(s, state, it, torch.tensor(90), 100)  # 90% wrong
    observe_warmup(s, state, 19, torch.tensor(10), 100)  # one batch at 10%: the mean of 20 is 86%
    assert not schedule.warmup_done and schedule.lr_at(20) == 0.01
    for it in range(20, 31):  # 10% batches until the 20 batches' mean is below 80%
        observe_warmup(s, state, it, torch.tensor(10), 100)
        assert schedule.warmup_done == (sum(state["recent_errors"]) / 20 < 80)
    assert schedule.warmup_done and schedule.lr_at(31) == 0.1


class _Unread:
    """A batch's error still on the device: reading it (which waits for the device) fails the test."""

    def item(self):
        raise AssertionError("the batch's error was read from the device")

    __int__ = __float__ = __index__ = item


def test_a_warmup_of_a_fixed_length_reads_no_error_and_an_error_rule_does():
    from types import SimpleNamespace

    from resdsl.train.points import observe_warmup

    fixed, _ = from_recipe(CIFAR, 390)  # [I]'s 400 iterations at 0.01
    state = {"recent_errors": []}
    for it in range(400):
        observe_warmup(SimpleNamespace(schedule=fixed, world=1), state, it, _Unread(), 128)
    assert fixed.warmup_done and fixed.lr_at(400) == 0.1 and state["recent_errors"] == []
    ruled, _ = from_recipe(dict(CIFAR, warmup=dict(CIFAR["warmup"], until_error=80.0)), 390)
    with pytest.raises(AssertionError, match="was read"):
        observe_warmup(SimpleNamespace(schedule=ruled, world=1), state, 0, _Unread(), 128)
