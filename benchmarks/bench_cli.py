"""Wall time of the command line as a user feels it, start-up included.

* ``finhrm --help``
* ``finhrm predict`` on a 2,500-row CSV (the next session's high and low), with a run trained
  at the default model size (one short epoch, into a temporary FINHRM_HOME) unless
  ``--model RUN`` is given.

Each command runs ``--repeat`` times after one warm-up; prints one JSON line with the
median and best wall seconds.  ``predict_cold`` runs each repetition with an empty kernel
cache (a fresh ``FINHRM_CACHE`` folder, as on a new machine or container; see
``finhrm_cli/blas.py``); ``predict`` is warm (the cache kept).  Usage:
``python benchmarks/bench_cli.py [--model RUN]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "synthetic_yahoo.csv"


def finhrm_exe() -> list[str]:
    exe = Path(sys.executable).with_name("finhrm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "finhrm_cli"]


def timed(cmd: list[str], env: dict, repeat: int, cold_root: Path | None = None) -> dict:
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm the file cache
    times = []
    for i in range(repeat):
        run_env = env if cold_root is None else {**env, "FINHRM_CACHE": str(cold_root / f"cold{i}")}
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=run_env, capture_output=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {out.stderr.decode()[-1000:]}")
    return {"median_s": round(statistics.median(times), 3), "best_s": round(min(times), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="an existing run to predict with (default: train a small one)")
    ap.add_argument("--rows", type=int, default=2500)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    exe = finhrm_exe()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FINHRM_HOME": tmp, "NO_COLOR": "1", "FINHRM_CACHE": str(Path(tmp) / "cache")}
        lines = SAMPLE.read_text().splitlines()
        data = Path(tmp) / "bars.csv"
        data.write_text("\n".join([lines[0], *lines[-args.rows:]]) + "\n")
        model = args.model
        if model is None:
            out = subprocess.run([*exe, "train", str(data), "--epochs", "1", "--json", "--quiet"],
                                 env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"training the benchmark model failed: {out.stderr[-1000:]}")
            model = json.loads(out.stdout)["run"]
        res = {
            "help": timed([*exe, "--help"], env, args.repeat),
            "predict_cold": timed([*exe, "predict", str(data), "--model", model], env, args.repeat, Path(tmp)),
            "predict": timed([*exe, "predict", str(data), "--model", model], env, args.repeat),
            "rows": args.rows,
        }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
