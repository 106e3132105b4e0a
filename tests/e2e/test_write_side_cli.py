"""Run files and folders, the write side, through the command line: names in training data,
outputs that would land on special files or in a run, the run lifecycle (interrupted, finished,
resumed), locks and filesystem errors.

The tests that need a trained run get a home of their own holding a copy of the session's run
(conftest.py); the lifecycle tests train their own tiny runs in their own homes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finhrm_cli import fsutil
from finhrm_cli.run import store
from finhrm_cli.run import lock
from finhrm_cli.run import files
from finhrm_cli.errors import RunError
from helpers import TINY_D16 as TINY
from helpers import cli, one_error_line, write_csv
from helpers import evil_prepared as _evil_prepared


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    # named after the series of the session's run, so that predict picks that run by itself
    return write_csv(tmp_path_factory.mktemp("write_side_data") / "synthetic_tradingview.csv")


@pytest.fixture
def private_home(trained_run, tmp_path_factory):
    """A FINHRM_HOME of the test's own holding a copy of the session's trained run (its latest
    run), to lock, write beside or resume without touching the shared one."""
    home = tmp_path_factory.mktemp("home")
    shutil.copytree(trained_run, home / "runs" / trained_run.name)
    return home


@pytest.fixture
def private_run(private_home, trained_run):
    """The copy of the trained run in private_home."""
    return private_home / "runs" / trained_run.name


# ------------------------------------------------------------------ names never escape


def test_train_on_crafted_names_keeps_every_file_inside_the_run(tmp_path):
    evil = _evil_prepared(tmp_path, "../../evil")
    dots = write_csv(tmp_path / "...csv", seed=5)  # stem ".."
    runs = tmp_path / "runs"
    res = cli(["train", evil, dots, *TINY, "--epochs", "1", "-o", runs, "--json"], tmp_path / "home")
    assert res.exit_code == 0, res.output
    run = Path(json.loads(res.stdout)["run"])
    assert run.parent == runs
    assert sorted(p.name for p in runs.iterdir()) == [run.name]  # nothing beside the run
    assert sorted(p.name for p in (run / "data").iterdir()) == ["data", "evil"]
    assert not (tmp_path / "evil").exists()
    for p in run.rglob("*"):
        assert Path(os.path.realpath(p)).is_relative_to(run)
    cfg = json.loads((run / "config.json").read_text())
    assert [s["name"] for s in cfg["series"]] == ["evil", "data"]
    # and the run still evaluates its own two series
    res = cli(["evaluate", run, "--json"], tmp_path / "home")
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------ outputs


def _special_targets(tmp_path: Path, run: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    regular = tmp_path / "regular.csv"
    regular.write_text("keep me\n")
    link = tmp_path / "link.csv"
    link.symlink_to(regular)
    folder = tmp_path / "folder"
    folder.mkdir()
    return {
        "device": Path("/dev/full"), "fifo": fifo, "symlink": link, "folder": folder,
        "run weights": run / "model.safetensors", "new file in run": run / "preds.csv",
        "run data": run / "data" / "x.csv",
    }


def test_outputs_refuse_special_files_and_run_folders(private_home, private_run, data_csv, tmp_path):
    targets = _special_targets(tmp_path, private_run)
    before = {k: (p.lstat().st_mode, p.lstat().st_size) if p.exists() or p.is_symlink() else None
              for k, p in targets.items()}
    for what, target in targets.items():
        for args in (["predict", data_csv, "-o", target], ["evaluate", private_run, "--plot", target]):
            res = cli(args, private_home)
            assert res.exit_code == 2, (what, res.output)
            line = one_error_line(res)
            assert str(target) in line, line
            opt = "--output" if args[0] == "predict" else "--plot"
            assert opt in line and ("run" in line or "exists and is" in line), line
    after = {k: (p.lstat().st_mode, p.lstat().st_size) if p.exists() or p.is_symlink() else None
             for k, p in targets.items()}
    assert after == before  # the device is still a device, the weights untouched, nothing created
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert (tmp_path / "regular.csv").read_text() == "keep me\n"
    # the runs home itself is no place for outputs either
    res = cli(["predict", data_csv, "-o", private_home / "runs" / "p.csv"], private_home)
    assert res.exit_code == 2 and "runs home" in one_error_line(res)


def test_output_to_a_regular_file_is_replaced(private_home, private_run, data_csv, tmp_path):
    out = tmp_path / "old.csv"
    out.write_text("old\n")
    res = cli(["predict", data_csv, "-o", out, "--format", "csv"], private_home)
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("ticker,date,target_date,close,pred_high")


def test_prepare_out_refuses_run_folders_and_foreign_folders(private_home, private_run, data_csv, tmp_path):
    res = cli(["prepare", data_csv, "-o", private_run / "data"], private_home)
    assert res.exit_code == 2 and "inside the run folder" in one_error_line(res)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    res = cli(["prepare", data_csv, "-o", foreign], private_home)
    assert res.exit_code == 2 and "not a prepared folder" in one_error_line(res)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ lifecycle


def test_interrupt_while_finalising_is_resumable(tmp_path, data_csv, monkeypatch):
    """Ctrl-C after training ended but before metrics.json: resume hint, run unfinished, and
    `--resume` finishes it (and cleans stale temp files); latest-run lookups skip it."""
    home = tmp_path / "home"
    res = cli(["train", data_csv, *TINY, "--epochs", "1", "--json"], home)
    assert res.exit_code == 0, res.output
    done = Path(json.loads(res.stdout)["run"])

    calls = []

    def ctrl_c(self, metrics):
        calls.append(metrics)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(store.RunWriter, "save_metrics", ctrl_c)
        res = cli(["train", data_csv, *TINY, "--seed", "1"], home)
    assert calls and res.exit_code == 130
    line = one_error_line(res)
    assert "finhrm train --resume" in line, line
    runs = sorted(p for p in (home / "runs").iterdir() if p != done)
    assert len(runs) == 1
    stuck = runs[0]
    assert not (stuck / "metrics.json").exists()
    assert lock.run_status(stuck) == "unfinished" and lock.run_status(done) == "finished"
    state = json.loads((stuck / "state" / "state.json").read_text())
    assert state["stopped"] in ("converged", "patience")  # training itself had ended

    # without --model the latest *finished* run is used
    for cmd in (["predict", data_csv, "--json"], ["evaluate", "--json"], ["inspect", "--json"]):
        res = cli(cmd, home)
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["run"] == str(done), cmd
    # naming the unfinished run works, with one warning line on stderr
    res = cli(["predict", data_csv, "--model", stuck, "--json"], home)
    assert res.exit_code == 0, res.output
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith(("warning:", "error:"))]
    assert len(warn) == 1 and warn[0].startswith("warning:") and "unfinished" in warn[0], res.stderr
    lst = json.loads(cli(["inspect", "--list", "--json"], home).stdout)["runs"]
    assert {r["name"]: r["status"] for r in lst} == {done.name: "finished", stuck.name: "unfinished"}
    table = cli(["inspect", "--list"], home)
    assert "unfinished" in table.output and "--resume" in table.output

    # stale temp files are cleaned when the run is resumed; fresh ones are left alone
    old = stuck / ".metrics.json.abc123.tmp"
    old_st = stuck / "state" / ".state.0123456789ab.tmp.safetensors"
    fresh = stuck / ".config.json.fresh1.tmp"
    for p in (old, old_st, fresh):
        p.write_bytes(b"half")
    long_ago = time.time() - 2 * fsutil.STALE_SECONDS
    os.utime(old, (long_ago, long_ago))
    os.utime(old_st, (long_ago, long_ago))

    res = cli(["train", "--resume", stuck, "--json"], home)
    assert res.exit_code == 0, res.output
    assert (stuck / "metrics.json").exists() and lock.run_status(stuck) == "finished"
    assert not old.exists() and not old_st.exists() and fresh.exists()
    cfg = json.loads((stuck / "config.json").read_text())
    assert cfg["conformal"]
    res = cli(["predict", data_csv, "--model", stuck, "--json"], home)
    assert res.exit_code == 0 and "warning" not in res.stderr
    assert json.loads(res.stdout)["rows"][0]["pred_high_lo"] is not None
    # and now it is finished: a further resume says so in one line
    res = cli(["train", "--resume", stuck, "--quiet"], home)
    assert res.exit_code == 2 and "finished" in one_error_line(res)


def test_no_finished_run_is_one_line(tmp_path, data_csv, monkeypatch):
    home = tmp_path / "home"
    with monkeypatch.context() as m:
        m.setattr(store.RunWriter, "save_metrics", lambda self, metrics: (_ for _ in ()).throw(KeyboardInterrupt))
        assert cli(["train", data_csv, *TINY, "--epochs", "1"], home).exit_code == 130
    res = cli(["predict", data_csv], home)
    assert res.exit_code == 2
    line = one_error_line(res)
    assert "no finished run" in line and "--resume" in line


# ------------------------------------------------------------------ lock


def test_second_train_of_a_locked_run_is_refused(private_home, private_run):
    with lock.RunLock(private_run):
        assert lock.run_status(private_run) == "training"
        assert [r["status"] for r in store.list_runs(private_home / "runs") if r["name"] == private_run.name] == ["training"]
        history = (private_run / "history.jsonl").read_bytes()
        res = cli(["train", "--resume", private_run, "--quiet"], private_home)
        assert res.exit_code == 2
        line = one_error_line(res)
        assert "another `finhrm train`" in line and str(os.getpid()) in line
        assert (private_run / "history.jsonl").read_bytes() == history
        with pytest.raises(RunError, match="another"):
            lock.RunLock(private_run).acquire()
    assert lock.run_status(private_run) == "finished"


def test_lock_dies_with_its_process(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    code = f"from finhrm_cli.run import lock; lock.RunLock({str(run)!r}).acquire(); print('ok', flush=True); import time; time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ok"
        assert lock.is_locked(run)
        p.kill()
        p.wait(10)
        assert not lock.is_locked(run)
        with lock.RunLock(run):
            pass
    finally:
        if p.poll() is None:
            p.kill()


# ------------------------------------------------------------------ filesystem errors


def test_disk_full_during_training_names_the_file_and_the_resume(tmp_path, data_csv, monkeypatch):
    home = tmp_path / "home"
    real = store.RunWriter.append_history
    n = []

    def full(self, record):
        n.append(1)
        if len(n) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "history.jsonl"))
        return real(self, record)

    monkeypatch.setattr(store.RunWriter, "append_history", full)
    res = cli(["train", data_csv, *TINY], home)
    assert res.exit_code == 1, res.output
    line = one_error_line(res)
    run = next((home / "runs").iterdir())
    assert f"{run}/history.jsonl: no space left" in line and f"finhrm train --resume {run}" in line, line


def test_read_only_output_place_is_one_line(private_home, private_run, data_csv, tmp_path, monkeypatch):
    def ro(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro"))

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", ro)
    res = cli(["predict", data_csv, "-o", tmp_path / "ro" / "p.csv"], private_home)
    assert res.exit_code == 2
    line = one_error_line(res)
    assert str(tmp_path / "ro") in line and "read-only" in line and "writable" in line


def test_stdout_on_a_full_device_is_one_line(tmp_path):
    env = {**os.environ, "FINHRM_HOME": str(tmp_path), "NO_COLOR": "1"}
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "finhrm_cli", "inspect", "--list", "--json"], stdout=full,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert p.returncode == 1, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "standard output" in lines[0] and "no space left" in lines[0], p.stderr
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr


# ------------------------------------------------------------------ resume


def test_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, data_csv):
    """A run with its config and data but no saved state (killed in the first epoch) is
    unfinished, and `--resume` trains it in its own folder to the same weights."""
    home = tmp_path / "home"
    res = cli(["train", data_csv, *TINY, "--epochs", "1", "--json"], home)
    assert res.exit_code == 0, res.output
    run = Path(json.loads(res.stdout)["run"])
    weights = (run / "model.safetensors").read_bytes()
    import shutil

    shutil.rmtree(run / "state")
    for f in ("metrics.json", "model.safetensors"):
        (run / f).unlink()
    (run / "history.jsonl").write_text('{"epoch": 1, "stale": true}\n')
    assert lock.run_status(run) == "unfinished"
    res = cli(["train", "--resume", run, "--json"], home)
    assert res.exit_code == 0, res.output
    assert lock.run_status(run) == "finished"
    assert (run / "model.safetensors").read_bytes() == weights  # same seed, same data: same weights
    assert all("stale" not in ln for ln in (run / "history.jsonl").read_text().splitlines())


def test_resume_of_a_read_only_run_is_one_line(private_home, private_run, monkeypatch):
    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system", str(self.run_dir / files.LOCK))

    monkeypatch.setattr(lock.RunLock, "acquire", read_only)
    res = cli(["train", "--resume", private_run, "--quiet"], private_home)
    assert res.exit_code == 2
    line = one_error_line(res)
    assert f"{private_run}/train.lock: the file system is read-only" in line and "must be writable" in line, line
