"""Wild cluster p-values are exact up to 6 clusters and state their Monte Carlo error beyond (audit finding 7)."""

from __future__ import annotations

import numpy as np
import pytest

from usagg.analysis.cluster_inference import EXACT_DRAWS, draws_text, monte_carlo, wild_cluster_mean

Y = np.random.default_rng(0).normal(1.0, 1.0, 16)


def test_six_clusters_enumerate_every_draw_whatever_the_resamples() -> None:
    """6^6 = 46,656 draws: the p is a count over all of them, the same for every seed and resample count."""
    labels = list("aabbccddeeff")
    runs = [wild_cluster_mean(Y[:12], labels, b, s) for b, s in ((2000, 0), (2000, 7), (199, 3))]
    assert runs[0].p == runs[1].p == runs[2].p and runs[0].ci == runs[1].ci
    assert runs[0].p * EXACT_DRAWS == pytest.approx(round(runs[0].p * EXACT_DRAWS), abs=1e-6)
    assert runs[0].mc == "" and "Monte Carlo" not in runs[0].note
    assert draws_text(6, 2000, 0).startswith("every one of the 46,656 Webb draws (exact)")


def test_random_draws_state_their_monte_carlo_error() -> None:
    """7 clusters: 2,000 random draws, and the p's 95 % Monte Carlo half-width in the method text (not the note,
    which the report prints beside Δm's interval)."""
    r = wild_cluster_mean(Y[:14], list("aabbccddeeffgg"), 2000, 0)
    assert r.p is not None and 0 < r.p < 1
    half = 1.96 * np.sqrt(r.p * (1 - r.p) / 2000)
    assert r.mc == f"p ± {half:.2g} (Monte Carlo 95 %, 2,000 random draws)" and r.note == ""
    assert draws_text(7, 2000, 0) == "2000 draws, seed 0"
    assert monte_carlo(r) == f", {r.mc}"  # what each method text adds after its draws
