"""The numbers an experiment reports: mean ± std over seeds, a difference's 95 % interval, a
threshold crossing read off a training history, and whether a measurement agrees with a claim.

Seeds are few (3 by default), so intervals use Student's t, not the normal approximation: with 3
seeds the 97.5 % quantile is 4.30, not 1.96.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Student's t, 97.5 % quantile, by degrees of freedom 1..30 (two-sided 95 % intervals).
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: float) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (fractional df rounds down,
    which widens the interval: the conservative side)."""
    if df < 1:
        raise ValueError(f"need at least 1 degree of freedom, got {df}")
    whole = math.floor(df)
    return _T975[whole - 1] if whole <= len(_T975) else 1.96 + 2.4 / whole  # ≤ 0.2 % off above 30


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def difference_interval(
    values: Sequence[float], baseline: Sequence[float], *, paired: bool = False
) -> tuple[float, float, float] | None:
    """mean(values) − mean(baseline) and its 95 % interval (Welch's, or paired on per-seed
    differences when both come from the same runs); None when there are too few seeds for one."""
    if paired:
        if len(values) != len(baseline):
            raise ValueError("paired differences need as many values as baseline values")
        diffs = [a - b for a, b in zip(values, baseline, strict=True)]
        if len(diffs) < 2:
            return None
        mean, std = mean_std(diffs)
        half = t975(len(diffs) - 1) * std / math.sqrt(len(diffs))
        return mean, mean - half, mean + half
    if len(values) < 2 or len(baseline) < 2:
        return None
    (ma, sa), (mb, sb) = mean_std(values), mean_std(baseline)
    va, vb = sa**2 / len(values), sb**2 / len(baseline)
    diff = ma - mb
    if va + vb == 0:
        return diff, diff, diff
    # Welch–Satterthwaite degrees of freedom
    df = (va + vb) ** 2 / (va**2 / (len(values) - 1) + vb**2 / (len(baseline) - 1))
    half = t975(df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def ratio_interval(values: Sequence[float], baseline: Sequence[float]) -> tuple[float, float, float] | None:
    """mean(values) / mean(baseline) as a geometric-mean ratio with a 95 % interval, from Welch's
    interval of the difference of logs (ratios of positive times are skewed; logs are not)."""
    if min(*values, *baseline) <= 0:
        raise ValueError("ratios need positive values")
    logs = difference_interval([math.log(v) for v in values], [math.log(v) for v in baseline])
    geo = math.exp(sum(map(math.log, values)) / len(values) - sum(map(math.log, baseline)) / len(baseline))
    if logs is None:
        return None if len(values) < 2 or len(baseline) < 2 else (geo, geo, geo)
    return geo, math.exp(logs[1]), math.exp(logs[2])


def crossing(history: Sequence[dict], key: str, target: float) -> float | None:
    """The epoch at which ``history[key]`` first falls to ``target`` or below, interpolated linearly
    between epoch ends (epoch 1.0 if the first epoch already gets there); None if it never does.

    ``history`` rows are metrics.jsonl rows: 1-based ``epoch`` and the epoch's value of ``key``.
    """
    previous = None
    for row in history:
        value, epoch = row[key], row["epoch"]
        if value <= target:
            if previous is None or previous[1] == value:
                return float(epoch)
            before_epoch, before = previous
            return before_epoch + (before - target) / (before - value) * (epoch - before_epoch)
        previous = (epoch, value)
    return None


def verdict(
    interval: tuple[float, float, float] | None,
    claimed: float | None,
    *,
    at_least: bool = False,
    sign_only: bool = False,
) -> str:
    """Whether a measured difference (mean, low, high) agrees with the paper's ``claimed`` one in sign
    and size; ``at_least`` for claims like "> 1 %", ``sign_only`` for claims without a number."""
    if claimed is None:
        return "—"
    if interval is None:
        return "needs ≥ 2 seeds to tell"
    mean, low, high = interval
    if low <= 0 <= high:
        return "no difference resolved at this scale (the interval holds 0)"
    if (mean > 0) != (claimed > 0):
        return "opposite sign to the paper"
    if sign_only:
        return "agrees in sign (the paper gives no size)"
    if at_least:
        return (
            "agrees: same sign, at least as large"
            if abs(high if mean > 0 else low) >= abs(claimed)
            else ("same sign, smaller than the paper's")
        )
    if low <= claimed <= high:
        return "agrees in sign and size"
    return "same sign, " + ("smaller" if abs(mean) < abs(claimed) else "larger") + " than the paper's"


def permutation_p(scores: Sequence[float], permutations: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The gap |mean(first half) − mean(second half)| and how often a random split into halves
    gives a gap at least as large: (gap, p), p = (count + 1) / (permutations + 1)."""
    import torch

    values = torch.as_tensor(list(scores), dtype=torch.float64)
    half = values.numel() // 2
    gap = float((values[:half].mean() - values[half:].mean()).abs())
    generator = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(values.numel(), generator=generator) for _ in range(permutations)])
    shuffled = values[order]
    gaps = (shuffled[:, :half].mean(1) - shuffled[:, half:].mean(1)).abs()
    count = int((gaps >= gap - 1e-12).sum())
    return gap, (count + 1) / (permutations + 1)
