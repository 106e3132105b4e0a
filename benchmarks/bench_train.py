"""Training and inference throughput of finhrm's own engine (MLX), on random data.

Same flags and the same definition as the PyTorch reference (torch_hrm_bench.py), so the two
can be run side by side: one training sample = one window taken through all halt_max_steps
segments (forward + extra no-grad Q-target pass + backward + AdamW step per segment), no
early halting (worst case).  Inference = a forward through all segments.  Prints one JSON line.

    python benchmarks/bench_train.py                       # default: d128, 2+2 layers, 2x2 cycles
    python benchmarks/bench_train.py --h-cycles 1 --l-cycles 1 --seq-len 5 --batch 8
    python benchmarks/bench_train.py --busy                # with one core kept busy by another process

``--busy N`` starts N background processes that keep a core busy each (a single-threaded
numpy loop, like another job on the machine) for the whole measurement, and stops them at
the end.  ``benchmarks/side_by_side.py`` runs this and the PyTorch reference alternately,
quiet and busy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BUSY_LOOP = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)\n"
    "while True:\n"
    "    b = np.tanh(a @ a.T * 1e-3) + np.exp(-a * a)\n"
)


@contextlib.contextmanager
def busy(n: int):
    """N single-threaded CPU hogs running for the duration of the block."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=env) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--d", type=int, default=128); a("--h-layers", type=int, default=2); a("--l-layers", type=int, default=2)
    a("--h-cycles", type=int, default=2); a("--l-cycles", type=int, default=2)
    a("--halt-max-steps", type=int, default=4); a("--seq-len", type=int, default=10)
    a("--features", type=int, default=18); a("--batch", type=int, default=64)
    a("--infer-batch", type=int, default=256); a("--steps", type=int, default=30)
    a("--warmup", type=int, default=5)
    a("--threads", type=int, default=None, help="BLAS threads (default: what finhrm picks, see blas.auto_threads)")
    a("--grad-accum", type=int, default=1)
    a("--busy", type=int, nargs="?", const=1, default=0, help="keep N other cores busy meanwhile (default 1)")
    args = p.parse_args()
    with busy(args.busy):
        run(args)


def run(args) -> None:
    # BLAS threads must be set before MKL/MLX load; by default finhrm picks them as the CLI does
    if args.threads is not None:
        for var in ("MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    from finhrm_cli import blas
    from finhrm_cli.train import step
    from finhrm_cli.forecast import inference
    from finhrm_cli.config import ModelConfig, TrainConfig

    mx = blas.mlx_core()

    mcfg = ModelConfig(
        n_features=args.features, seq_len=args.seq_len, d_model=args.d, n_heads=max(1, args.d // 32),
        h_layers=args.h_layers, l_layers=args.l_layers, h_cycles=args.h_cycles, l_cycles=args.l_cycles,
        halt_max_steps=args.halt_max_steps, halt_exploration=0.1,
    )
    tcfg = TrainConfig(batch_size=args.batch, grad_accum=args.grad_accum, lr=1e-4, weight_decay=0.1)
    model = step.build_model(mcfg, 0)
    rng = np.random.default_rng(0)
    n = args.warmup + args.steps
    A, B, T, F = args.grad_accum, args.batch, args.seq_len, args.features
    xs = rng.standard_normal((n, A, B, T, F)).astype(np.float32)
    ys = rng.standard_normal((n, A, B, 2)).astype(np.float32)
    model.set_target_stats(ys.reshape(-1, 2))
    # every batch runs all segments (training never skips them), the reference's worst case
    trainer = step.Trainer(model, tcfg, n * args.halt_max_steps, seed=0)

    def step(i):
        out = trainer.train_batch(mx.array(xs[i]), mx.array(ys[i]))
        return float(out["reg_sum"].item()) / max(float(out["n_scored"].item()), 1.0)

    t0 = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.warmup, n):
        loss = step(i)
    train_s = time.perf_counter() - t0

    xi = rng.standard_normal((n, args.infer_batch, T, F)).astype(np.float32)
    for i in range(args.warmup):
        inference.predict(model, xi[i], batch_size=args.infer_batch)
    t0 = time.perf_counter()
    for i in range(args.warmup, n):
        inference.predict(model, xi[i], batch_size=args.infer_batch)
    infer_s = time.perf_counter() - t0

    print(json.dumps({
        "framework": "mlx", "mlx_version": mx.__version__, "blas": blas.info().get("kind"),
        "train_samples_per_s": round(args.steps * A * B / train_s, 2),
        "infer_samples_per_s": round(args.steps * args.infer_batch / infer_s, 2),
        "train_ms_per_step": round(1000 * train_s / args.steps, 2),
        "warmup_s": round(compile_s, 2),
        "params": model.param_counts()["trainable"], "final_loss": round(loss, 4),
        "d": args.d, "h_layers": args.h_layers, "l_layers": args.l_layers,
        "h_cycles": args.h_cycles, "l_cycles": args.l_cycles,
        "halt_max_steps": args.halt_max_steps, "seq_len": T, "features": F, "batch": B,
        "grad_accum": A, "infer_batch": args.infer_batch, "steps": args.steps, "warmup": args.warmup,
        "threads": args.threads if args.threads is not None else blas.info().get("threads"), "busy": args.busy,
    }))


if __name__ == "__main__":
    main()
