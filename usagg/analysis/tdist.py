"""Student's t without scipy: quantiles (any df ≥ 1) and the power of the t test (whole df).

`compare` flags chance-level baselines with a t interval over the seeds, the advice decides a
task from its Welch seed intervals, and the report's power table solves the t test's power
equation, on every analysis: `usagg report` included, which otherwise reuses memoised
statistics and must not pay for importing scipy.

- Quantiles: the two-sided probability P(|T| < t) is, in θ = atan(t/√df), increasing in θ,
  so the quantile is found by bisection on θ in (0, π/2). With integer df it has a closed form
  (Abramowitz & Stegun 26.7.3-4; agreeing with scipy to 1e-12 beyond the centre); with a
  fractional df (Welch-Satterthwaite) it is 2·Γ((df+1)/2)/(√π·Γ(df/2))·∫₀^θ cos^(df−1)φ dφ
  (t = √df·tan φ in the density), by Simpson's rule (agreeing with scipy to 1e-9).
- Power: the noncentral t T' = (Z + δ)/S with S = √(χ²_df/df), so P(T' > c) = E[Φ(δ − c·S)];
  the expectation is Simpson's rule over S's density (agreeing with scipy's nct to 1e-9 for df ≥ 2).
"""

from __future__ import annotations

import math

import numpy as np

_STEPS = 64  # halvings of (0, π/2): below a double's resolution of θ
_QUAD = 4096  # Simpson intervals over (0, θ) for a fractional df


def _central(theta: float, df: int) -> float:
    """P(|T| < √df·tan θ) for df ≥ 1 degrees of freedom."""
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 0:  # sin θ (1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + ... up to cos^(df−2)θ)
        term, total = 1.0, 1.0
        for k in range(2, df, 2):
            term *= (k - 1) / k * c2
            total += term
        return s * total
    term, total = math.cos(theta), 0.0  # (2/π)(θ + sin θ (cos θ + (2/3)cos³θ + ... up to cos^(df−2)θ))
    for k in range(3, df + 1, 2):
        total += term
        term *= (k - 1) / k * c2
    return 2.0 / math.pi * (theta + s * total)


def _central_real(theta: float, df: float) -> float:
    """P(|T| < √df·tan θ) for any df ≥ 1: Simpson's rule over cos^(df−1) on (0, θ), bounded and smooth there."""
    phi = np.linspace(0.0, theta, _QUAD + 1)
    w = np.ones(_QUAD + 1)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    scale = 2.0 * math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(math.pi)
    return scale * float(w @ np.cos(phi) ** (df - 1.0)) * theta / (3.0 * _QUAD)


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t with `df` ≥ 1 degrees of freedom (fractional for Welch), as scipy's t.ppf."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile's probability is in (0, 1), got {p}")
    if not df >= 1 or not math.isfinite(df):
        raise ValueError(f"degrees of freedom must be a finite number >= 1, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 2.0 * p - 1.0  # the two-sided probability inside ±t
    central = (lambda th: _central(th, int(df))) if int(df) == df else (lambda th: _central_real(th, df))
    lo, hi = 0.0, math.pi / 2
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if central(mid) < target else (lo, mid)
    return math.sqrt(df) * math.tan((lo + hi) / 2)


_NODES = 2001  # Simpson nodes over S's density: smooth, one mode near 1


def _chi_density(df: int) -> tuple[np.ndarray, np.ndarray]:
    """Simpson nodes over S = √(χ²_df/df) and their weights times S's density (integrating to 1)."""
    top = math.sqrt((df + 40.0 * math.sqrt(2.0 * df) + 40.0) / df)  # χ² beyond this: far below 1e-15
    s = np.linspace(0.0, top, _NODES)
    inner = s[1:]
    log_f = (
        math.log(2.0)
        + (df / 2.0) * math.log(df / 2.0)
        - math.lgamma(df / 2.0)
        + (df - 1.0) * np.log(inner)
        - df * inner**2 / 2.0
    )
    f = np.concatenate(([0.0 if df > 1 else math.sqrt(2.0 / math.pi)], np.exp(log_f)))
    w = np.ones(_NODES)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return s, w * f * (s[1] - s[0]) / 3.0


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return np.asarray([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x])


def two_sided_power(nc: float, df: int, alpha: float) -> float:
    """Power of the two-sided t test at level `alpha` with `df` degrees of freedom and noncentrality `nc`:
    P(T' > c) + P(T' < −c), c the 1 − alpha/2 quantile of t."""
    c = t_quantile(1.0 - alpha / 2.0, df)
    s, w = _chi_density(df)
    return float(np.dot(w, _normal_cdf(nc - c * s) + _normal_cdf(-nc - c * s)))
