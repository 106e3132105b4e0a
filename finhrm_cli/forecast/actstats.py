"""What ACT does on a run, in numbers (numpy only): calibration of P(halt) against the halting
reward (Brier score, AUC), per-step MAE with paired bootstrap intervals against step 1, the
compute ``--act`` saves, and a one-line verdict on whether later segments help.

Inputs are per segment and per row: ``err`` (M, n) the row's absolute error in price units
(mean of high and low), ``p_halt`` / ``p_cont`` (M, n) the Q head's probabilities and
``reward`` (M, n) the halting reward (``halt_reward``: 1 where the row's unit-scale error is
at or below the model's ``halt_ref``, as in training: ``finhrm_cli.train.halting``).

**Calibration of the Q head** (``platt_fit``, ``platt_apply``).  ``halt_ref`` is a running
median of the errors of the *raw* weights during training, but the saved model is their
moving average (``TrainConfig.ema``), whose errors are lower, so the head's P(halt) runs
below the reward rate it is scored against (docs/results.md).  ``Forecaster.finish``
therefore fits, on the training rows only, a logistic map ``logit' = a * logit + b`` (Platt
scaling) from the saved model's q_halt logits to its rewards there, and ``finhrm inspect``
reports probabilities through it (q_halt and q_continue alike).  With ``a > 0`` the map is
strictly increasing, so ``q_halt > q_continue`` holds after it exactly where it held before:
the halting decisions, and so ``--act``, do not change (they are taken on the raw outputs all
the same).
"""

from __future__ import annotations

import numpy as np


# A run's halt_calibration keeps a in HALT_CAL_A (a > 0 never moves a halting decision) and
# |b| within HALT_CAL_B; the default runs stay far inside (docs/results.md), so a value outside
# is damage, not a calibration.
HALT_CAL_A = (1e-3, 1000.0)
HALT_CAL_B = 1000.0
BOOT_SAMPLES = 2000
BOOT_LEVEL = 0.90
BOOT_SEED = 0

HELP = "later segments help on this run"
SAME = "later segments make no measurable difference on this run"
HURT = "later segments hurt on this run"


def brier(p, y) -> float | None:
    """Mean squared difference between probabilities ``p`` and 0/1 outcomes ``y``."""
    p, y = np.asarray(p, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    return float(np.mean((p - y) ** 2)) if len(p) else None


def _ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(a))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(score, label) -> float | None:
    """Area under the ROC curve via ranks (Mann-Whitney U / (n_pos * n_neg)); None without
    both classes.  Ties count one half."""
    score = np.asarray(score, np.float64).ravel()
    label = np.asarray(label).ravel().astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    r = _ranks(score)
    return float((r[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def paired_bootstrap(err: np.ndarray, n_boot: int = BOOT_SAMPLES, level: float = BOOT_LEVEL,
                     seed: int = BOOT_SEED) -> list[tuple[float, float]]:
    """Percentile interval of ``mean(err[k] - err[0])`` for every row of ``err`` (M, n),
    resampling rows with replacement (the same resamples for every k: paired)."""
    err = np.asarray(err, np.float64)
    M, n = err.shape
    diff = err - err[0]
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, M))
    for lo in range(0, n_boot, 256):  # bounded memory on long files
        idx = rng.integers(0, n, (min(256, n_boot - lo), n))
        means[lo:lo + len(idx)] = diff[:, idx].mean(axis=-1).T
    q = (1 - level) / 2
    lo_, hi_ = np.quantile(means, [q, 1 - q], axis=0)
    return [(float(a), float(b)) for a, b in zip(lo_, hi_)]


MIN_EFFECT = 0.001  # a step "helps" or "hurts" only by more than 0.1% of step 1's MAE


def verdict(intervals: list[tuple[float, float]], maes: list[float], min_effect: float = MIN_EFFECT) -> str | None:
    """Help: the interval of the best later step lies entirely below ``-min_effect`` × MAE(1);
    hurt: every later step's interval lies entirely above ``+min_effect`` × MAE(1); else no
    measurable difference.  The margin keeps a real but immaterial difference (measured:
    1e-5 on an MAE of 0.52, interval [-2e-5, -1e-7]) from being called help.  None for one step."""
    if len(maes) < 2:
        return None
    margin = min_effect * abs(maes[0])
    best = 1 + int(np.argmin(maes[1:]))
    if intervals[best][1] < -margin:
        return HELP
    if all(lo > margin for lo, _ in intervals[1:]):
        return HURT
    return SAME


def halt_reward(pred_unit, y_unit, head_scale: float, ref: float) -> np.ndarray:
    """The halting reward of every segment and row, as in training (``finhrm_cli.train.halting``):
    ``pred_unit`` (M, n, 2) and ``y_unit`` (n, 2) in unit target scale (the model's output
    before the price conversion), ``head_scale`` the model's ``buffers.scale`` and ``ref`` its
    ``halt_ref``.  -> (M, n) bool: the row's error at or below the reference."""
    err = np.abs(np.asarray(pred_unit, np.float64) - np.asarray(y_unit, np.float64)[None]).mean(axis=-1)
    return err / float(head_scale) <= float(ref)


# Platt scaling of the Q head.  Newton's method on the logistic loss with Platt's targets
# (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0, so separable data still has a
# finite optimum, and a ridge of PLATT_RIDGE per row towards the identity map (a=1, b=0), so
# logits that barely vary (an untrained head) give a well-posed problem; both are negligible
# on thousands of rows.  Backtracking keeps every step a descent step.
PLATT_RIDGE = 1e-6
PLATT_ITERS = 100


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # no overflow for any z


def _platt_loss(a: float, b: float, z: np.ndarray, t: np.ndarray, lam: float) -> float:
    f = a * z + b
    return float(np.sum(np.logaddexp(0.0, f) - t * f) + lam * ((a - 1.0) ** 2 + b ** 2))


def _fit_b(a: float, b: float, z: np.ndarray, t: np.ndarray, lam: float) -> float:
    """The best ``b`` for a fixed ``a`` (1-D Newton with backtracking)."""
    for _ in range(PLATT_ITERS):
        p = _sigmoid(a * z + b)
        g = float(np.sum(p - t) + 2 * lam * b)
        h = float(np.sum(p * (1 - p)) + 2 * lam)
        step, f0 = g / h, _platt_loss(a, b, z, t, lam)
        while _platt_loss(a, b - step, z, t, lam) > f0:
            step /= 2
            if abs(step) < 1e-12:
                step = 0.0
                break
        b -= step
        if abs(step) < 1e-10:
            break
    return b


def platt_fit(logits, labels) -> tuple[float, float] | None:
    """``(a, b)`` of the logistic map ``sigmoid(a * logit + b)`` that best predicts the 0/1
    ``labels`` from ``logits`` (both any shape, pooled), with ``a`` held in ``HALT_CAL_A`` and
    ``|b|`` in ``HALT_CAL_B`` (``b`` refit when ``a`` hits a bound).  None without rows or
    with a non-finite logit."""
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if len(z) == 0 or len(z) != len(y) or not np.all(np.isfinite(z)):
        return None
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    lam = PLATT_RIDGE * len(z)
    a, b = 1.0, 0.0
    for _ in range(PLATT_ITERS):
        p = _sigmoid(a * z + b)
        d = p - t
        w = p * (1 - p)
        g = np.array([np.dot(d, z) + 2 * lam * (a - 1.0), d.sum() + 2 * lam * b])
        H = np.array([[np.dot(w, z * z) + 2 * lam, np.dot(w, z)], [np.dot(w, z), w.sum() + 2 * lam]])
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        f0, s = _platt_loss(a, b, z, t, lam), 1.0
        while _platt_loss(a - s * step[0], b - s * step[1], z, t, lam) > f0:
            s /= 2
            if s < 1e-10:  # no descent left: at the optimum up to rounding
                s = 0.0
                break
        a, b = a - s * step[0], b - s * step[1]
        if np.max(np.abs(s * step)) < 1e-10:
            break
    if not (np.isfinite(a) and np.isfinite(b)):
        return None
    lo, hi = HALT_CAL_A
    if not lo <= a <= hi:  # the head ranks rows the wrong way round (or absurdly sharply)
        a = min(max(a, lo), hi)
        b = _fit_b(a, b, z, t, lam)
    b = min(max(b, -HALT_CAL_B), HALT_CAL_B)
    return float(a), float(b)


def platt_apply(logits, a: float, b: float) -> np.ndarray:
    """Probabilities ``sigmoid(a * logit + b)`` (float64), the map ``platt_fit`` fits."""
    return _sigmoid(float(a) * np.asarray(logits, np.float64) + float(b))


def halt_steps(p_halt: np.ndarray, p_cont: np.ndarray) -> np.ndarray:
    """First segment (0-based) where P(halt) > P(continue); the last if never."""
    halts = np.asarray(p_halt) > np.asarray(p_cont)
    halts[-1] = True
    return np.argmax(halts, axis=0)


def segments_used(halt_step_1based, M: int) -> dict:
    """Mean segments per row under ``--act``, the histogram, and the share of segments that
    could be skipped (every segment runs in a batch; this is the compute an early exit saves)."""
    h = np.asarray(halt_step_1based, np.int64).ravel()
    n = len(h)
    counts = np.bincount(h - 1, minlength=M)[:M] if n else np.zeros(M, np.int64)
    mean = float(h.mean()) if n else None
    return {"mean_segments": mean, "segments_histogram": [int(c) for c in counts], "max_segments": int(M),
            "skippable_share": (1.0 - mean / M) if n else None}


def report(err: np.ndarray, p_halt: np.ndarray, p_cont: np.ndarray, reward: np.ndarray,
           halt_step: np.ndarray | None = None) -> dict:
    """Everything ``finhrm inspect`` shows about ACT (see the module docstring for the inputs).
    ``halt_step`` (n,), 0-based, is where each row halts; by default ``halt_steps(p_halt,
    p_cont)``.  Pass the one of the raw outputs with calibrated probabilities: a strictly
    increasing map keeps every strict inequality, but float rounding can turn a tiny one into
    a tie."""
    err, p_halt, p_cont = (np.asarray(a, np.float64) for a in (err, p_halt, p_cont))
    reward = np.asarray(reward, bool)
    M, n = err.shape
    maes = [float(e.mean()) for e in err]
    iv = paired_bootstrap(err)
    hs = halt_steps(p_halt, p_cont) if halt_step is None else np.asarray(halt_step, np.int64)
    counts = np.bincount(hs, minlength=M)
    steps = []
    for k in range(M):
        steps.append({
            "step": k + 1, "mae": maes[k], "mae_vs_step1": maes[k] - maes[0],
            "mae_vs_step1_lo": iv[k][0], "mae_vs_step1_hi": iv[k][1],
            "q_halt": float(p_halt[k].mean()), "q_continue": float(p_cont[k].mean()),
            "reward_rate": float(reward[k].mean()), "brier": brier(p_halt[k], reward[k]),
            "auc": auc(p_halt[k], reward[k]),
            "halted": int(counts[k]), "halted_share": float(counts[k] / n) if n else 0.0,
        })
    used = segments_used(hs + 1, M)
    mae_act = float(err[hs, np.arange(n)].mean())
    return {
        "samples": int(n),
        "steps": steps,
        "calibration": {
            "brier": brier(p_halt, reward), "auc": auc(p_halt, reward),
            "mean_p_halt": float(p_halt.mean()), "reward_rate": float(reward.mean()),
            "step1_p_halt": float(p_halt[0].mean()),
        },
        "bootstrap": {"samples": BOOT_SAMPLES, "level": BOOT_LEVEL, "seed": BOOT_SEED},
        "halting_histogram": used["segments_histogram"],
        "mean_halting_step": used["mean_segments"],
        "compute_saved": used["skippable_share"],
        "mae_all_steps": maes[-1],
        "mae_act": mae_act,
        "mae_act_change": mae_act - maes[-1],
        "best_step": 1 + int(np.argmin(maes)),
        # the lowest MAE's step is worth naming only when the verdict says depth helps;
        # otherwise it is noise (issue 25)
        "best_step_measurable": verdict(iv, maes) == HELP,
        "verdict": verdict(iv, maes),
    }


# ---------------------------------------------------------------------------------------------
# a model's segments on windows (MLX through ``inference``)


def act_outputs(model, parts) -> dict:
    """Every segment's outputs on the windows of ``parts`` with a known next session: ``err``
    (M, n) absolute error in price units, ``reward`` (M, n) the halting reward as in training
    (``halt_reward``), the Q probabilities ``q_halt``/``q_continue`` and their logits
    (M, n), and ``halt_step`` (n,), 0-based, where the raw outputs halt."""
    from finhrm_cli import data
    from finhrm_cli.forecast import inference
    from finhrm_cli.forecast.parts import scale as part_scale
    from finhrm_cli.forecast.scoring import to_prices

    w = data.concat_windows([w for _, w in parts])
    seg = inference.segment_outputs(model, w.x)
    scale = np.concatenate([part_scale(ds, wp) for ds, wp in parts])
    raw = np.asarray(seg["preds"], np.float64)  # (M, n, 2) in the model's unit (targets / scale)
    known = np.isfinite(w.next_high) & np.isfinite(w.next_low)
    err = []
    for s in range(raw.shape[0]):
        ph, pl = to_prices(raw[s] * scale[:, None], w.close)
        err.append(((np.abs(ph - w.next_high) + np.abs(pl - w.next_low)) / 2)[known])
    y_unit = np.asarray(w.y, np.float64)[known] / scale[known, None]
    reward = halt_reward(raw[:, known], y_unit, float(model.buffers.scale[0]),
                                  float(model.buffers.halt_ref[0]))
    out = {"err": np.stack(err), "reward": reward, "halt_step": np.asarray(seg["halt_step"])[known] - 1}
    for k in ("q_halt", "q_continue", "q_halt_logit", "q_continue_logit"):
        out[k] = np.asarray(seg[k])[:, known]
    return out


# Windows the Q head's calibration map is fitted on, at most: evenly spaced over the training
# rows.  The map has two parameters (512 windows x 4 segments are 2,048 points); running every
# segment over every training window took longer than the rest of a carry-and-replace run's
# scoring (26 s of 118 s on 4,000 sessions), 1,024 windows still 3.5 s of a 48 s run.
CALIBRATION_ROWS = 512


def _spread(parts, limit: int):
    """``parts`` thinned to at most ``limit`` windows in all, evenly spaced in each part (the
    same share of every part), in time order."""
    total = sum(len(w) for _, w in parts)
    if total <= limit:
        return parts
    out = []
    for ds, w in parts:
        k = max(1, int(round(len(w) * limit / total)))
        out.append((ds, w.subset(np.unique(np.linspace(0, len(w) - 1, k).round().astype(int)))))
    return out


def fit_halt_calibration(model, parts, limit: int = CALIBRATION_ROWS) -> dict | None:
    """The Platt map of the model's Q head on the windows of ``parts`` (``platt_fit``,
    every segment of every row pooled), at most ``limit`` of them evenly spaced:
    ``{"a", "b", "rows"}``, or None without rows.  ``Forecaster.finish`` passes the
    training windows only."""
    parts = _spread([(ds, w) for ds, w in parts if len(w)], limit)
    if not parts:
        return None
    o = act_outputs(model, parts)
    if o["reward"].size == 0:
        return None
    ab = platt_fit(o["q_halt_logit"], o["reward"])
    return None if ab is None else {"a": ab[0], "b": ab[1], "rows": int(o["reward"].shape[1])}


def act_stats(model, parts, calibration: dict | None = None) -> dict:
    """Per ACT step: MAE in price units with a paired bootstrap interval against step 1, the
    Q head's probabilities against the halting reward (Brier, AUC), where it halts, the
    compute ``--act`` saves and a verdict (``finhrm_cli.forecast.actstats``).

    With ``calibration`` (a run's ``halt_calibration``: ``{"a", "b", ...}``) every reported
    probability is ``sigmoid(a * logit + b)``, q_halt and q_continue alike, and
    ``uncalibrated`` holds the Brier score, AUC and means of the raw head; where rows halt is
    always read from the raw outputs (the map, a > 0, does not move it)."""
    o = act_outputs(model, parts)
    ph, pc = o["q_halt"], o["q_continue"]
    if calibration:
        a, b = calibration["a"], calibration["b"]
        ph, pc = platt_apply(o["q_halt_logit"], a, b), platt_apply(o["q_continue_logit"], a, b)
    out = report(o["err"], ph, pc, o["reward"], halt_step=o["halt_step"])
    out["halt_ref"] = float(model.buffers.halt_ref[0])
    out["halt_calibration"] = dict(calibration) if calibration else None
    raw = np.asarray(o["q_halt"], np.float64)
    out["uncalibrated"] = {
        "brier": brier(raw, o["reward"]), "auc": auc(raw, o["reward"]),
        "mean_p_halt": float(raw.mean()), "step1_p_halt": float(raw[0].mean()),
    }
    return out
