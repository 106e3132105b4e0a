"""Data-parallel training: 2 processes on localhost (mlx.launch, ring backend) against one."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SAMPLE_TV as SAMPLE

LAUNCH = Path(sys.executable).with_name("mlx.launch")
ARGS = [
    "train", str(SAMPLE), "--d-model", "32", "--heads", "2", "--h-layers", "1", "--l-layers", "1",
    "--h-cycles", "1", "--l-cycles", "1", "--halt-max-steps", "2", "--batch-size", "64",
    "--epochs", "1", "--json", "--quiet", "--seed", "3",
]


def _history(out: Path) -> list[dict]:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # written once, by rank 0
    return [json.loads(line) for line in (runs[0] / "history.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not LAUNCH.exists() and shutil.which("mlx.launch") is None, reason="mlx.launch not installed")
@pytest.mark.parametrize("act_training", ["every", "carry"])
def test_two_ranks_match_one_process(tmp_path, act_training):
    launch = str(LAUNCH) if LAUNCH.exists() else shutil.which("mlx.launch")
    env = {**os.environ, "FINHRM_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    port = str(random.randint(20000, 40000))
    two = subprocess.run(
        [launch, "-n", "2", "--backend", "ring", "--starting-port", port,
         sys.executable, "-m", "finhrm_cli", *ARGS, "--act-training", act_training, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads(two.stdout)  # one JSON document: only rank 0 prints
    assert Path(summary["run"]).parent == tmp_path / "two"
    cfg = json.loads((Path(summary["run"]) / "config.json").read_text())
    assert cfg["processes"] == 2
    one = subprocess.run([sys.executable, "-m", "finhrm_cli", *ARGS, "--act-training", act_training,
                          "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    h2, h1 = _history(tmp_path / "two"), _history(tmp_path / "one")
    assert [h["step"] for h in h2] == [h["step"] for h in h1]
    for a, b in zip(h2, h1):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_mae"] == pytest.approx(b["val_mae"], rel=1e-4)
