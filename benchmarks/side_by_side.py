"""finhrm's engine against the PyTorch reference, alternating runs, quiet and busy.

For each round, for each load (quiet; one other core kept busy, see ``bench_train.py
--busy``), runs ``bench_train.py`` and the reference ``torch_hrm_bench.py`` one after the
other with the same flags, and prints the samples/s of both and their ratio (median over
rounds).  The reference needs PyTorch (``pip install torch==2.13.0``); it is looked up in
``../shared/bench/`` beside the project unless ``--reference PATH`` is given.

    python benchmarks/side_by_side.py [--rounds 2] [--loads 0 1] [-- extra flags for both]

Thread settings for finhrm come from the environment as a user would set them
(``MKL_NUM_THREADS`` and friends); ``--threads`` is passed to both scripts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_train import busy  # noqa: E402


def run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, default=HERE.parents[1] / "shared" / "bench" / "torch_hrm_bench.py")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--loads", type=int, nargs="+", default=[0, 1], help="busy processes per variant")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("extra", nargs="*", help="flags for both scripts (after --)")
    args = ap.parse_args()
    if not args.reference.exists():
        sys.exit(f"reference not found: {args.reference} (pass --reference PATH)")
    common = ["--steps", str(args.steps), *args.extra]
    res: dict[tuple[int, str], list[dict]] = {}
    for r in range(args.rounds):
        for load in args.loads:
            for name, cmd in (("finhrm", [sys.executable, str(HERE / "bench_train.py"), *common]),
                              ("torch", [sys.executable, str(args.reference), *common])):
                with busy(load):
                    out = run(cmd)
                res.setdefault((load, name), []).append(out)
                print(f"round {r + 1} busy={load} {name}: train {out['train_samples_per_s']} "
                      f"infer {out['infer_samples_per_s']}", file=sys.stderr)
    print("| load | finhrm train | torch train | ratio | finhrm infer | torch infer | ratio |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for load in args.loads:
        med = {name: {k: statistics.median(o[k] for o in res[(load, name)])
                      for k in ("train_samples_per_s", "infer_samples_per_s")} for name in ("finhrm", "torch")}
        f, t = med["finhrm"], med["torch"]
        rt = f["train_samples_per_s"] / t["train_samples_per_s"]
        ri = f["infer_samples_per_s"] / t["infer_samples_per_s"]
        label = "quiet" if load == 0 else f"{load} core(s) busy"
        print(f"| {label} | {f['train_samples_per_s']:.1f} | {t['train_samples_per_s']:.1f} | {rt:.2f} "
              f"| {f['infer_samples_per_s']:.1f} | {t['infer_samples_per_s']:.1f} | {ri:.2f} |")
        summary.append({"busy": load, "finhrm": f, "torch": t, "train_ratio": rt, "infer_ratio": ri})
    print(json.dumps({"rounds": args.rounds, "results": summary}))


if __name__ == "__main__":
    main()
