"""Fault injection: kill `finhrm train` at random points, the final seconds included,
and check that every run left behind is complete (loads and predicts with intervals) or
resumable (`train --resume` completes it).

A tiny model trains in a subprocess; the test watches the run folder's files to find the
stage to kill at (no hook in the code): the first file of the run, random moments of training,
and the moment the saved state says training ended (before metrics.json, the last file).
Set FINHRM_FAULT_SEED to replay a seed; it is printed on failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finhrm_cli.run import store
from finhrm_cli.run import lock
from finhrm_cli.run import create
from finhrm_cli.cli import app
from helpers import synthetic_ohlcv

pytestmark = pytest.mark.slow

TINY = [
    "--d-model", "16", "--heads", "2", "--h-layers", "1", "--l-layers", "1",
    "--h-cycles", "1", "--l-cycles", "1", "--halt-max-steps", "2",
    "--batch-size", "32", "--epochs", "2", "--patience", "5", "--quiet",
]


def _csv(path: Path, n: int = 700) -> Path:
    d = synthetic_ohlcv(n, 11)
    cols = ["date", "open", "high", "low", "close", "volume"]
    rows = [",".join(cols)] + [",".join([str(d["date"][i])] + [f"{d[c][i]:.6f}" for c in cols[1:]]) for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _cli(args, home):
    return CliRunner().invoke(app, [str(a) for a in args], env={"FINHRM_HOME": str(home), "NO_COLOR": "1"},
                              catch_exceptions=False)


def _wait(pred, proc, timeout: float = 120.0, every: float = 0.003) -> bool:
    """Poll ``pred`` until true (-> True) or the process ends first / time runs out (-> False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return bool(pred())
        time.sleep(every)
    return False


def _training_ended(run: Path) -> bool:
    try:
        info = json.loads((run / "state" / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("stopped") in ("converged", "patience")


class Trainer:
    def __init__(self, tmp: Path, data: Path):
        self.runs, self.home, self.data = tmp / "runs", tmp / "home", data
        self.runs.mkdir(exist_ok=True)

    def start(self):
        before = set(self.runs.iterdir())
        env = {**os.environ, "FINHRM_HOME": str(self.home), "NO_COLOR": "1"}
        env.pop("FINHRM_DEBUG", None)
        proc = subprocess.Popen([sys.executable, "-m", "finhrm_cli", "train", str(self.data), *TINY, "-o", str(self.runs)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        new = []

        def run_dir():
            new[:] = [p for p in self.runs.iterdir() if p not in before and not p.name.startswith(".")]  # (not the staging folder)
            return bool(new)

        return proc, run_dir, new


def _check_left_behind(run: Path, data: Path, home: Path, what: str) -> str:
    """The run must be complete, or resumable to complete; returns what it was."""
    if not (run / "config.json").exists():
        # killed while the folder was being filled: not a run, and nothing treats it as one
        assert run.name not in [r["name"] for r in store.list_runs(run.parent)], what
        # ...and a later run creation removes it once it is stale (here: at once)
        assert create.clean_abandoned(run.parent, older_than=-1) == [run], (what, list(run.iterdir()))
        return "abandoned, cleaned"
    status = lock.run_status(run)
    assert status != "training", f"{what}: the dead process still holds the lock"
    if status == "unfinished":
        res = _cli(["train", "--resume", run, "--quiet", "--json"], home)
        assert res.exit_code == 0, f"{what}: resume failed: {res.output}"
        assert lock.run_status(run) == "finished", what
    res = _cli(["predict", data, "--model", run, "--json"], home)
    assert res.exit_code == 0, f"{what}: {res.output}"
    row = json.loads(res.stdout)["rows"][0]
    assert row["pred_high_lo"] is not None and row["pred_low_hi"] is not None, what
    assert "warning" not in res.stderr, what
    return status


def test_kills_at_random_points_leave_complete_or_resumable_runs(tmp_path):
    seed = int(os.environ.get("FINHRM_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    data = _csv(tmp_path / "bars.csv")
    t = Trainer(tmp_path, data)
    outcomes = []

    # 1. SIGKILL the moment the saved state says training ended, before metrics.json
    proc, run_dir, new = t.start()
    assert _wait(run_dir, proc), proc.communicate()
    t_cfg = time.monotonic() if _wait(lambda: (new[0] / "config.json").exists(), proc) else None
    hit = _wait(lambda: _training_ended(new[0]), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    span = max(time.monotonic() - t_cfg, 0.5) if t_cfg else 3.0  # how long training takes here
    final_caught = hit and not (new[0] / "metrics.json").exists()
    outcomes.append(("SIGKILL final", _check_left_behind(new[0], data, t.home, f"seed {seed}, SIGKILL final")))

    plans = [
        ("SIGKILL early", signal.SIGKILL, "dir", 0.0),
        ("SIGKILL random", signal.SIGKILL, "config", rng.uniform(0, span)),
        ("SIGINT random", signal.SIGINT, "config", rng.uniform(0, span)),
        ("SIGINT x2 final", signal.SIGINT, "final", 0.0),
    ]
    for name, sig, stage, delay in plans:
        what = f"seed {seed}, {name} after {delay:.2f}s"
        proc, run_dir, new = t.start()
        assert _wait(run_dir, proc), (what, proc.communicate())
        if stage == "config":
            _wait(lambda: (new[0] / "config.json").exists(), proc)
        elif stage == "final":
            _wait(lambda: _training_ended(new[0]), proc)
        time.sleep(delay)
        proc.send_signal(sig)
        if name.startswith("SIGINT x2"):
            time.sleep(0.03)
            if proc.poll() is None:
                proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        if sig == signal.SIGINT:
            assert "Traceback" not in err and "internal error" not in err, (what, err)
            assert proc.returncode in (0, 130), (what, proc.returncode, err)
            if proc.returncode == 130 and (new[0] / "config.json").exists() and not (new[0] / "metrics.json").exists():
                lines = [ln for ln in err.splitlines() if ln.strip()]
                assert len(lines) == 1 and "finhrm train --resume" in lines[0], (what, err)
        else:
            # 0: training ended before the kill landed (timings vary); the run is then checked the same way
            assert proc.returncode in (-signal.SIGKILL, 0), (what, proc.returncode, err)
        outcomes.append((name, _check_left_behind(new[0], data, t.home, what)))

    # every run the home lists is finished now, and latest-run lookups find one
    listed = store.list_runs(t.runs)
    assert listed and all(r["status"] == "finished" for r in listed), (seed, outcomes)
    print(f"seed {seed}: final stage caught before metrics.json: {final_caught}; outcomes {outcomes}")


# A Ctrl-C that lands while the first best weights are being written: the process gets the
# signal from inside ``save_weights`` (before the file exists), so the timing is exact.
_SIGINT_IN_SAVE = """
import os, signal, sys
from finhrm_cli.run import store
orig, hit = store.RunWriter.save_weights, []
def save_weights(self, model):
    if not hit:
        hit.append(1)
        os.kill(os.getpid(), signal.SIGINT)
    return orig(self, model)
store.RunWriter.save_weights = save_weights
from finhrm_cli.cli import main
sys.argv = ["finhrm"] + sys.argv[1:]
main()
"""


def test_ctrl_c_while_the_first_best_weights_are_saved_leaves_a_resumable_run(tmp_path):
    """The state saved on Ctrl-C may name a best epoch only once its weights are on disk:
    otherwise a resume whose later epochs never beat it ends with no model.safetensors."""
    data = _csv(tmp_path / "bars.csv")
    runs, home = tmp_path / "runs", tmp_path / "home"
    env = {**os.environ, "FINHRM_HOME": str(home), "NO_COLOR": "1"}
    env.pop("FINHRM_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", _SIGINT_IN_SAVE, "train", str(data), *TINY, "-o", str(runs)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 130, proc.stderr
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    info = json.loads((run / "state" / "state.json").read_text())
    if info.get("best_epoch") is not None:  # the state names a best epoch: its weights exist
        assert (run / "model.safetensors").is_file()
    assert _check_left_behind(run, data, home, "Ctrl-C in the first save_weights") == "unfinished"
