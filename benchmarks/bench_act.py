"""The time a user waits for ``finhrm train``, by how ACT spends training compute.

Runs the real command line on the first ``--rows`` sessions (default 4,000) of a daily file,
one configuration after another and alternating over ``--repeat`` rounds (A B C A B C...), in
throw-away homes, and prints one JSON line per run and a summary:

* ``every``: every segment for every window (``act_training = "every"``);
* ``carry``: HRM's carry-and-replace (``act_training = "carry"``): a window costs the
  segments it uses;
* ``trm``: carry-and-replace with the Tiny Recursive Model's single halting head
  (``halt_head = "trm"``: no q_continue target, no extra segment);
* ``one``: ``--halt-max-steps 1`` (one segment, no ACT), the floor.

Each line has the wall time of the whole command (start-up, data, training, the linear
partner and scoring), the validation MAE the run kept, the mean segments a training window
ran in its last epoch, and the ratio to ``one``.  Any extra arguments after ``--`` go to
every ``finhrm train`` (e.g. ``-- --seed 1``).

    python benchmarks/bench_act.py                     # S&P 500 (the bench extra's arch file)
    python benchmarks/bench_act.py --csv prices.csv --rows 4000 --repeat 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "every": ('[train]\nact_training = "every"\n', []),
    "carry": ('[train]\nact_training = "carry"\n', []),
    "trm": ('[model]\nhalt_head = "trm"\n[train]\nact_training = "carry"\n', []),
    "one": ('[train]\nact_training = "every"\n', ["--halt-max-steps", "1"]),
}


def sp500_csv() -> Path:
    """The S&P 500 daily bars the bench extra ships (``arch``), as a plain CSV path."""
    import arch

    return Path(arch.__file__).parent / "data" / "sp500" / "sp500.csv.gz"


def first_rows(src: Path, rows: int, dst: Path) -> Path:
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt") as f:
        lines = f.read().splitlines()
    dst.write_text("\n".join(lines[: rows + 1]) + "\n")
    return dst


def run(name: str, data: Path, tmp: Path, extra: list[str]) -> dict:
    toml, flags = CONFIGS[name]
    cfg = tmp / f"{name}.toml"
    cfg.write_text(toml)
    home = Path(tempfile.mkdtemp(dir=tmp))
    env = {**os.environ, "FINHRM_HOME": str(home), "NO_COLOR": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "finhrm_cli", "train", str(data), "--config", str(cfg), *flags,
                          *extra, "--json", "-q"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{name}: finhrm train failed: {out.stderr.strip()[-400:]}")
    res = json.loads(out.stdout)
    run_dir = Path(res["run"])
    hist = [json.loads(ln) for ln in (run_dir / "history.jsonl").read_text().splitlines() if ln.strip()]
    last = hist[-1] if hist else {}
    return {"config": name, "wall_s": round(wall, 1), "val_mae": last.get("best_val_mae"),
            "segments_per_window": last.get("train_segments"), "epochs": res.get("epochs_run")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, help="a daily file (default: the S&P 500 from the bench extra)")
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = first_rows(args.csv or sp500_csv(), args.rows, tmp / "bars.csv")
        results = []
        for _ in range(args.repeat):
            for name in args.configs:
                r = run(name, data, tmp, extra)
                results.append(r)
                print(json.dumps(r), flush=True)
    summary = {}
    for name in args.configs:
        walls = sorted(r["wall_s"] for r in results if r["config"] == name)
        summary[name] = {"median_wall_s": walls[len(walls) // 2],
                         "val_mae": [r["val_mae"] for r in results if r["config"] == name]}
    if "one" in summary:
        for name in summary:
            summary[name]["x_one"] = round(summary[name]["median_wall_s"] / summary["one"]["median_wall_s"], 2)
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
