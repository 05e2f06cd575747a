"""H18's follow-ups: scipy-free t quantiles and power, sweep columns in load_results, advise's bounds on each scale,
report provenance before any write, stored_study confined, the public synthetic-completeness check, the backbone
registry's one unknown-name error."""

from __future__ import annotations

import pytest
from scipy import stats as ss

from usagg.analysis.tdist import t_quantile, two_sided_power


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 12, 29, 100])
@pytest.mark.parametrize("p", [0.025, 0.6, 0.9, 0.975, 0.995])
def test_t_quantile_matches_scipy(df: int, p: float) -> None:
    assert t_quantile(p, df) == pytest.approx(float(ss.t.ppf(p, df)), rel=1e-10, abs=1e-12)


def test_t_quantile_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(ValueError, match="whole number"):
        t_quantile(0.975, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        t_quantile(1.0, 3)


@pytest.mark.parametrize("df", [2, 4, 8, 58])
@pytest.mark.parametrize("nc", [0.0, 1.0, 2.5, 6.0])
def test_two_sided_power_matches_the_noncentral_t(df: int, nc: float) -> None:
    crit = ss.t.ppf(0.975, df)
    expected = 1 - ss.nct.cdf(crit, df, nc) + ss.nct.cdf(-crit, df, nc)
    assert two_sided_power(nc, df, 0.05) == pytest.approx(float(expected), abs=1e-9)
