"""Inference with a trained HRM: all segments per window, ACT halting (MLX + numpy).

``predict`` runs every segment and keeps the last; ``predict(act=True)`` (``predict_act``
also gives the segment) keeps, per sample, the prediction of the first segment where
``q_halt > q_continue`` (the last otherwise) and stops a chunk of windows once all of them
have halted (an early exit: a model that halts at step 1 costs one segment);
``segment_outputs`` returns every segment's prediction, Q probabilities and Q logits for ACT
statistics.

**Compiled only where it pays.**  ``mx.compile`` fuses the elementwise work into kernels that
MLX's CPU backend builds with the system C++ compiler on first use (cached afterwards, see
``finhrm_cli.blas``).  The compiled pass is faster on big inputs and its outputs equal
the plain graph's to float32 rounding (a 2,600-row backfill differed by at most 1e-6 in the
price, in the last printed digit), but each process pays to trace it even with the kernels
cached, and far more on a fresh machine (docs/speed.md).  So a model switches to the
compiled pass only once it has forecast more than ``COMPILE_ABOVE`` windows in this
process, and only where its kernels need no compiler (``_use_compiled``): a one-off command
on a few hundred windows runs the plain graph, and so does a backfill on a machine whose
kernel cache lacks this model's kernels (the compiler would cost far more than the compiled
pass saves).  Training, which waits for the compiler for its own step anyway, builds them
while validating, so a later backfill or walk-forward on that machine runs compiled.

**Batch shapes.**  Windows go through in chunks of ``batch_size`` (128); the last chunk is
padded to the smallest of 8, 32 or ``batch_size`` that holds it, so the one-window forecast
of ``finhrm predict`` costs an 8-row batch, not a 128-row one.  A window's forecast must not
depend on which chunk it lands in: BLAS kernels are chosen by matrix size, and a single row (M = seq_len + 1 tokens) takes a different path and
differs in the last bits, which is why nothing smaller than 8 windows is run.  The CLI test
that compares ``predict``'s row with the same row of ``predict --all`` guards this.
"""

from __future__ import annotations

import weakref
from functools import partial

import numpy as np

from finhrm_cli.blas import mlx_core
from finhrm_cli.errors import UsageError

mx = mlx_core()

from finhrm_cli.model.hrm import HRM  # noqa: E402


class Usage:
    """What inference keeps per model between calls: the windows it has forecast in this
    process, its compiled forward pass once made, and whether this process may build the
    compiled kernels (``build_kernels``: training, which waits for the compiler anyway).
    Held here, keyed by the model's identity and dropped with the model, never as attributes
    on the MLX module."""

    def __init__(self):
        self.seen = 0
        self.compiled = None
        self.compiled_segment = None
        self.build_kernels = False


def _kernels_marker(model: HRM, kind: str = "all"):
    """The file that says this model's compiled forward pass (``kind``: every segment at once,
    or one segment for the halted early exit) is in the persistent kernel cache
    (``finhrm_cli.blas``); None without a persistent cache (nothing to find later)."""
    import dataclasses
    import hashlib
    import json
    from pathlib import Path

    from finhrm_cli import blas

    folder = blas.info().get("kernel_cache")
    if not folder:
        return None
    sig = json.dumps([dataclasses.asdict(model.cfg), getattr(mx, "__version__", "?"), PREDICT_BATCH,
                      list(_SMALL_BATCHES)] + ([] if kind == "all" else [kind]), sort_keys=True)
    return Path(folder) / f".finhrm-forward-{hashlib.sha256(sig.encode()).hexdigest()[:24]}"


def _use_compiled(model: HRM, u: Usage, kind: str = "all") -> bool:
    """The compiled pass pays only past ``COMPILE_ABOVE`` windows, and only where its kernels
    need no compiler: made already in this process, found in the kernel cache, or built by a
    process that waits for the compiler anyway (training).  A cold backfill runs plain."""
    if u.seen <= COMPILE_ABOVE:
        return False
    if (u.compiled if kind == "all" else u.compiled_segment) is not None or u.build_kernels:
        return True
    marker = _kernels_marker(model, kind)
    return marker is not None and marker.is_file()


def _built(model: HRM, kind: str = "all") -> None:
    """Record that this model's compiled kernels are in the persistent cache (best effort)."""
    marker = _kernels_marker(model, kind)
    if marker is not None and not marker.exists():
        try:
            from finhrm_cli.fsutil import atomic_write_bytes

            atomic_write_bytes(marker, b"", mode=0o600)
        except OSError:
            pass


_USAGE: dict[int, Usage] = {}


def usage(model: HRM) -> Usage:
    u = _USAGE.get(id(model))
    if u is None:
        u = _USAGE[id(model)] = Usage()
        weakref.finalize(model, _USAGE.pop, id(model), None)
    return u


def _infer_fn(model: HRM, compiled: bool = False):
    """Every segment's prediction, Q probabilities and Q logits for a batch of windows;
    ``compiled`` gives the ``mx.compile``-d version (made once per model)."""
    if compiled:
        u = usage(model)
        if u.compiled is None:
            u.compiled = partial(mx.compile, inputs=model.state)(_infer_fn(model))
        return u.compiled
    M = model.cfg.halt_max_steps

    def all_segments(x):
        x_emb = model.embed(x)
        carry = model.initial_carry(x.shape[0])
        preds, qh, qc = [], [], []
        for _ in range(M):
            carry, pred, q_halt, q_cont = model.segment(carry, x_emb)
            preds.append(pred); qh.append(q_halt); qc.append(q_cont)
        qh, qc = mx.stack(qh), mx.stack(qc)
        return mx.stack(preds), mx.sigmoid(qh), mx.sigmoid(qc), qh, qc

    return all_segments


PREDICT_BATCH = 128
COMPILE_ABOVE = 1024    # windows forecast by a model in this process; see the module notes
_SMALL_BATCHES = (8, 32)


def _bucket(m: int, batch_size: int) -> int:
    """The padded size of a chunk of ``m`` windows: the smallest of 8, 32 and ``batch_size``
    that holds it (see the module notes on why never fewer than 8)."""
    for size in _SMALL_BATCHES:
        if m <= size < batch_size:
            return size
    return batch_size


def _windows(model: HRM, x) -> np.ndarray:
    """``x`` as contiguous float32 windows of the model's shape; a one-line error otherwise."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    cfg = model.cfg
    if x.ndim != 3 or x.shape[1:] != (cfg.seq_len, cfg.n_features):
        raise UsageError(
            f"inputs have shape {x.shape}; this model takes windows of shape "
            f"(n, {cfg.seq_len}, {cfg.n_features})."
        )
    return x


def _chunks(x: np.ndarray, bs: int):
    """(start, rows, chunk padded with zero windows to its ``_bucket`` size) over ``x``."""
    for start in range(0, len(x), bs):
        chunk = x[start:start + bs]
        m = len(chunk)
        size = _bucket(m, bs)
        if size != m:
            chunk = np.concatenate([chunk, np.zeros((size - m,) + chunk.shape[1:], np.float32)])
        yield start, m, chunk


def _run_segments(model: HRM, x, batch_size: int):
    x, cfg = _windows(model, x), model.cfg
    n, M = len(x), cfg.halt_max_steps
    preds = np.zeros((M, n, 2), np.float32)
    qh, qc, zh, zc = (np.zeros((M, n), np.float32) for _ in range(4))
    if n == 0:
        return preds, qh, qc, zh, zc
    was_training = model.training
    model.eval()
    bs = max(1, int(batch_size))
    u = usage(model)
    u.seen += n
    compiled = _use_compiled(model, u)
    fn = _infer_fn(model, compiled=compiled)
    try:
        for start, m, chunk in _chunks(x, bs):
            outs = fn(mx.array(chunk))
            mx.eval(*outs)
            for dst, out in zip((preds, qh, qc, zh, zc), outs):
                dst[:, start:start + m] = np.array(out)[:, :m]
        if compiled:
            _built(model)
    finally:
        model.train(was_training)
    return preds, qh, qc, zh, zc


def _halt_steps(qh: np.ndarray, qc: np.ndarray) -> np.ndarray:
    """First segment (0-based) where sigmoid(q_halt) > sigmoid(q_continue); the last if never."""
    halts = qh > qc
    halts[-1] = True
    return np.argmax(halts, axis=0)


def segment_outputs(model: HRM, x, batch_size: int = PREDICT_BATCH) -> dict:
    """Per-segment outputs for ACT statistics: preds (M, n, 2) log ratios, q_halt and
    q_continue probabilities (M, n) (``q_cont`` is the same array), their logits
    ``q_halt_logit`` and ``q_continue_logit`` (M, n; for a calibration map,
    ``actstats.platt_apply``), halt_step (n,) 1-based."""
    preds, qh, qc, zh, zc = _run_segments(model, x, batch_size)
    return {"preds": preds, "q_halt": qh, "q_continue": qc, "q_cont": qc,
            "q_halt_logit": zh, "q_continue_logit": zc, "halt_step": _halt_steps(qh, qc) + 1}


def _segment_fn(model: HRM, compiled: bool = False):
    """One segment for a batch of windows from a carry: ``(x, zH, zL) -> (zH, zL, pred,
    q_halt_logit, q_continue_logit)``; ``compiled`` gives the ``mx.compile``-d version."""
    if compiled:
        u = usage(model)
        if u.compiled_segment is None:
            u.compiled_segment = partial(mx.compile, inputs=model.state)(_segment_fn(model))
        return u.compiled_segment

    def one_segment(x, zH, zL):
        (zH, zL), pred, q_halt, q_cont = model.segment((zH, zL), model.embed(x))
        return zH, zL, pred, q_halt, q_cont

    return one_segment


def predict_act(model: HRM, x, batch_size: int = PREDICT_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """ACT inference with an early exit: (n, 2) log ratios of each sample's first segment
    whose Q head says halt (the last otherwise) and that segment, 1-based (n,).  A chunk of
    windows stops at the segment where all of its windows have halted, so a model that
    halts at step 1 costs one segment.  The same forecasts as every segment followed by the
    choice (``segment_outputs``), to float32 rounding."""
    x, cfg = _windows(model, x), model.cfg
    n, M = len(x), cfg.halt_max_steps
    out, used = np.zeros((n, 2), np.float32), np.zeros(n, np.int64)
    if n == 0:
        return out, used
    was_training = model.training
    model.eval()
    bs = max(1, int(batch_size))
    u = usage(model)
    u.seen += n
    compiled = _use_compiled(model, u, "segment")
    fn = _segment_fn(model, compiled=compiled)
    try:
        for start, m, chunk in _chunks(x, bs):
            xc = mx.array(chunk)
            zH, zL = model.initial_carry(len(chunk))
            done = np.zeros(m, bool)
            for seg in range(M):
                zH, zL, pred, q_halt, q_cont = fn(xc, zH, zL)
                mx.eval(pred, q_halt, q_cont)
                halt = (np.array(q_halt)[:m] > np.array(q_cont)[:m]) | (seg == M - 1)
                new = halt & ~done
                out[start:start + m][new] = np.array(pred)[:m][new]
                used[start:start + m][new] = seg + 1
                done |= halt
                if done.all():
                    break
        if compiled:
            _built(model, "segment")
    finally:
        model.train(was_training)
    return out, used


def predict(model: HRM, x, *, act: bool = False, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """(n, 2) log ratios [high, low] to the close.  All segments by default; ``act=True``
    stops each sample at its first segment whose Q head says halt."""
    if act:
        return predict_act(model, x, batch_size)[0]
    return _run_segments(model, x, batch_size)[0][-1]
