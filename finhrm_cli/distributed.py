"""Data-parallel training across processes and machines on MLX's own distributed layer.

``finhrm train`` runs unchanged under ``mlx.launch -n N ...`` (ring backend over TCP, or MPI
where installed).  With one process every function here is a no-op, so a plain run behaves
exactly as before.  Rank 0 alone writes the run folder and draws progress; the other ranks
learn the run folder's path from it.
"""

from __future__ import annotations

from pathlib import Path

_GROUP = None
_PATH_BYTES = 4096


def group():
    """The world group (size 1 when not launched by mlx.launch or mpirun)."""
    global _GROUP
    if _GROUP is None:
        from finhrm_cli.blas import mlx_core

        mx = mlx_core()
        _GROUP = mx.distributed.init()
    return _GROUP


def size() -> int:
    return group().size()


def rank() -> int:
    return group().rank()


def is_main() -> bool:
    return rank() == 0


def all_sum(x):
    """Sum an mx.array over all processes (identity with one)."""
    if size() == 1:
        return x
    from finhrm_cli.blas import mlx_core

    return mlx_core().distributed.all_sum(x, group=group())


def broadcast_path(path: Path | None) -> Path:
    """Rank 0's path, on every rank."""
    if size() == 1:
        return Path(path)
    from finhrm_cli.blas import mlx_core

    mx = mlx_core()
    import numpy as np

    buf = np.zeros(_PATH_BYTES, dtype=np.int32)
    if is_main():
        raw = str(path).encode("utf-8")[:_PATH_BYTES]
        buf[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    out = np.array(all_sum(mx.array(buf)))
    return Path(bytes(out[out > 0].astype(np.uint8)).decode("utf-8"))
