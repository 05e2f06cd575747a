"""Student's t without scipy: quantiles (any df ≥ 1) and the power of the t test (whole df).

`compare` flags chance-level baselines with a t interval over the seeds, the advice decides a
task from its Welch seed intervals, and the report's power table solves the t test's power
equation, on every analysis: `usagg report` included, which otherwise reuses memoised
statistics and must not pay for importing scipy.

- Quantiles: the two-sided probability P(|T| < t) is, in θ = atan(t/√df), increasing in θ,
  so the quantile is found by bisection on θ in (0, π/2). That probability is I_{sin²θ}(1/2, df/2)
  (A&S 26.5.27: the regularised incomplete beta function, by its continued fraction, A&S 26.5.8,
  evaluated by Lentz's method), for whole and fractional (Welch-Satterthwaite) df alike: agreeing
  with scipy to 1e-9 (relative) for df from 1 to 1e5 and p up to 1 − 1e-6 (beyond, where the fraction's
  500 terms stop short, 1e-8 at df 1e7: the df here are seeds − 1 or Welch's, far below).
- Power: the noncentral t T' = (Z + δ)/S with S = √(χ²_df/df), so P(T' > c) = E[Φ(δ − c·S)];
  the expectation is Simpson's rule over S's density (agreeing with scipy's nct to 1e-9 for df ≥ 2).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

_STEPS = 64  # halvings of (0, π/2): below a double's resolution of θ
_CF_TERMS = 500  # continued-fraction terms at most (it converges in tens where x < (a + 1)/(a + b + 2))
_CF_TINY = 1e-300


def _central(theta: float, df: float) -> float:
    """P(|T| < √df·tan θ) for any df ≥ 1: I_x(1/2, df/2) at x = sin²θ = t²/(df + t²), direct near the centre (no
    1 − (1 − small) there)."""
    return _incomplete_beta(math.sin(theta) ** 2, math.cos(theta) ** 2, 0.5, df / 2.0)


def _incomplete_beta(x: float, y: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), y = 1 − x given as computed (cos²θ beside sin²θ: 1 − x
    would lose y's digits near x = 1): its continued fraction where it converges fast, else by the symmetry
    I_x(a, b) = 1 − I_y(b, a)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(x, a, b) / a
    return 1.0 - front * _beta_fraction(y, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b) (A&S 26.5.8) by the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, _CF_TERMS + 1):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t with `df` ≥ 1 degrees of freedom (fractional for Welch; infinite: the normal),
    as scipy's t.ppf."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile's probability is in (0, 1), got {p}")
    if not df >= 1:  # nan included
        raise ValueError(f"degrees of freedom must be a number >= 1, got {df}")
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 2.0 * p - 1.0  # the two-sided probability inside ±t
    lo, hi = 0.0, math.pi / 2
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _central(mid, df) < target else (lo, mid)
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
