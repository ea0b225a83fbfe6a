"""A run folder is the run's own: what another hand put in it (a symbolic link to a file elsewhere, a named pipe,
a hand-edited record) never makes resdsl write outside it, hang, crash or echo a foreign file's text. Each case
ends in a clear message, or the run goes on without writing through the link."""
from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_train import QUICK, resdsl  # noqa: E402
from test_train_trust import TINY, _unfinished_run  # noqa: E402

NEW = [TINY, *QUICK, "--iters", "2", "--eval-every", "2"]


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    return victim


@pytest.mark.parametrize("planted", ["link", "dangling link", "pipe"])
def test_a_lock_file_that_is_not_the_runs_own_is_refused(tmp_path, planted):
    """The lock file is written with the process id: a link in its place would have that overwrite the file it
    points at (or create one elsewhere), a pipe would block. Both are refused, and nothing elsewhere changes."""
    run, victim = tmp_path / "run", _victim(tmp_path)
    run.mkdir()
    if planted == "pipe":
        os.mkfifo(run / ".lock")
    else:
        os.symlink(victim if planted == "link" else tmp_path / "elsewhere", run / ".lock")
    r = resdsl("train", *NEW, "--out", str(run), timeout=120)
    assert r.returncode == 1 and "internal error" not in r.stderr, r.stderr
    assert f"{run}/.lock is {'a named pipe, not a regular file' if planted == 'pipe' else 'a symbolic link'}" \
        in r.stderr, r.stderr
    assert victim.read_text() == "precious\n" and not (tmp_path / "elsewhere").exists()
    assert not (run / "config.json").exists()


def test_a_resumed_run_writes_through_no_link_and_echoes_no_control_character(tmp_path):
    """train.log and metrics.jsonl are appended to: a link in their place is not followed (the log is then not kept,
    which is said once; metrics.jsonl is rewritten as the run's own file on resuming). A record's text reaches the
    banner escaped: a line break or a terminal escape in it cannot add a line or reach the terminal."""
    run, victim = _unfinished_run(tmp_path), _victim(tmp_path)
    (run / "train.log").unlink()
    os.symlink(victim, run / "train.log")
    os.symlink(victim, run / ".resdsl-write-test.tmp")  # the name the folder's write probe once had
    metrics = tmp_path / "metrics-elsewhere.jsonl"
    shutil.move(run / "metrics.jsonl", metrics)
    os.symlink(metrics, run / "metrics.jsonl")
    cfg = json.loads((run / "config.json").read_text())
    cfg["spec"] = "tiny\ntouch PWNED \x1b[31m#"
    (run / "config.json").write_text(json.dumps(cfg))
    before = metrics.read_text()
    r = resdsl("train", "--resume", str(run))
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious\n" and metrics.read_text() == before
    assert "not writing" in r.stderr and "train.log: it is a symbolic link" in r.stderr, r.stderr
    assert "(tiny\\ntouch PWNED \\x1b[31m#)" in r.stdout and "\x1b" not in r.stdout, r.stdout
    assert not (run / "metrics.jsonl").is_symlink()
    assert [json.loads(x)["iter"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_a_named_pipe_for_a_record_is_refused_at_once(tmp_path, name):
    """Reading a named pipe would wait for a writer for ever: every reader of a run's records refuses one."""
    run = _unfinished_run(tmp_path)
    (run / name).unlink()
    os.mkfifo(run / name)
    commands = [["train", "--resume", str(run)], ["eval", str(run), "--device", "cpu"]]
    for command in commands[: 2 if name == "config.json" else 1]:
        r = resdsl(*command, timeout=120)
        assert r.returncode == 1 and "internal error" not in r.stderr, r.stderr
        assert "named pipe" in r.stderr, r.stderr


@pytest.mark.parametrize("row", [
    {"iter": 6, "lr": 0.1, "train_error": "x", "test_error": 50.0},
    {"iter": 6, "lr": 0.1, "train_error": {"a": 1}, "test_error": 50.0},
    {"iter": "6"},
    ["iter", 6],
])
def test_a_metrics_row_of_the_wrong_kind_is_a_damaged_line(tmp_path, row):
    """A line that is JSON but not a row of figures is dropped like an unreadable one, with the same warning; the
    readers of finished runs take it as no row (it used to fail deep inside the curves' plot)."""
    from resdsl.train.rundir import metrics_rows

    run = _unfinished_run(tmp_path)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    assert metrics_rows(str(run))[-1] is None and metrics_rows(str(run))[0]["test_top5_error"] is not None
    r = resdsl("train", "--resume", str(run), "--quiet")
    assert r.returncode == 0 and "dropped unreadable line(s) 3;" in r.stderr, r.stderr
    assert [json.loads(x)["iter"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6, 8, 10, 12]


def test_a_record_naming_a_file_that_is_no_spec_does_not_show_its_text(tmp_path):
    """A run's record may name any file as its spec (runs older than spec_files): one that is not recognisably a
    spec is named, never quoted (an edited record must not print /etc/shadow's first line)."""
    run = _unfinished_run(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:SECRET-HASH:20228:0:99999:7:::\n")
    cfg = json.loads((run / "config.json").read_text())
    del cfg["spec_files"]
    for path_too in (True, False):  # spec_path and spec, or spec alone (spec_path missing)
        cfg["spec"] = str(secret)
        cfg.update(spec_path=str(secret)) if path_too else cfg.pop("spec_path", None)
        (run / "config.json").write_text(json.dumps(cfg))
        r = resdsl("eval", str(run), "--device", "cpu")
        assert r.returncode == 1 and "SECRET" not in r.stderr + r.stdout, r.stderr
        assert f"names {secret} as the run's spec, which is not a resdsl spec" in r.stderr, r.stderr


@pytest.mark.parametrize("final_test,fragment", [("10-crop", None), ({"view": "10-crop"}, None),
                                                 ("a-view", "final_test: unknown test view 'a-view'")])
def test_a_recorded_final_test_is_read_as_a_view(tmp_path, final_test, fragment):
    """config.json's final_test may hold a view's name or a partial table (as the record's check allows): a resumed
    run reads it as a whole view, and an unknown one is a damaged record."""
    from resdsl.train.loop import _recorded_final_test
    from resdsl.train.rundir import RunDirError

    run = _unfinished_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["final_test"] = final_test
    (run / "config.json").write_text(json.dumps(cfg))
    if fragment is None:
        assert _recorded_final_test(str(run)) == {"view": "10-crop", "scale": None, "crop": None, "scales": ()}
    else:
        with pytest.raises(RunDirError, match=fragment):
            _recorded_final_test(str(run))


def test_the_way_to_start_again_is_quoted_for_the_shell(tmp_path):
    """A run stopped before its first checkpoint is started again with --overwrite: the command shown for it
    quotes the folder's name (one with spaces and a `$(...)` is copied and pasted as it is)."""
    run = tmp_path / "my run $(id)"
    shutil.move(_unfinished_run(tmp_path), run)
    (run / "checkpoint.pt").unlink()
    r = resdsl("train", "--resume", str(run))
    assert r.returncode == 1 and f"--out {shlex.quote(str(run))} --overwrite" in r.stderr, r.stderr


def test_files_resdsl_places_replace_a_link_with_a_file_of_the_usual_permissions(tmp_path):
    """write_owned (a run's or an experiment's own files) replaces a link in its place, leaving what it points at
    alone, and the new file gets the umask's permissions, not the link's (0777) nor its target's."""
    from resdsl.train.fileio import write_owned

    victim = _victim(tmp_path)
    victim.chmod(0o600)
    os.symlink(victim, tmp_path / "report.md")
    write_owned(str(tmp_path / "report.md"), "ours\n")
    umask = os.umask(0)
    os.umask(umask)
    assert victim.read_text() == "precious\n" and not (tmp_path / "report.md").is_symlink()
    assert (tmp_path / "report.md").read_text() == "ours\n"
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("found,ok", [({"test_error": 7.5, "test_top5_error": 1.0, "view": "10-crop"}, True),
                                      ({"test_error": 7.5, "test_top5_error": "x"}, False),
                                      ({"test_error": 7.5, "view": ["10-crop"]}, False),
                                      ({"test_error": True}, False)])
def test_a_final_test_file_of_the_wrong_kind_is_no_figure(tmp_path, found, ok):
    from resdsl.train import final

    (tmp_path / final.FILE).write_text(json.dumps(found))
    assert (final.read(str(tmp_path)) == found) is ok


def test_out_naming_the_resumed_folder_itself_is_no_conflict(tmp_path):
    """`--resume RUN --out RUN/` (a script that always passes --out) names the same folder: the run goes on; only
    another folder is refused."""
    run = _unfinished_run(tmp_path)
    r = resdsl("train", "--resume", str(run), "--out", f"{run}/", "--quiet")
    assert r.returncode == 0, r.stderr
