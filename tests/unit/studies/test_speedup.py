"""The speedup arithmetic of the optimizer benchmark against answers computed by hand on synthetic losses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sophia_train.studies.speedup import compute_per_token, data_speedup, fit_power_law, half_budget_verdict, seed_speedups

A, B, C = 30.0, 0.3, 2.0
BUDGETS = [1e6, 2e6, 4e6, 8e6]


def law(d: float) -> float:
    return A * d**-B + C


def test_the_fit_recovers_a_known_power_law_with_zero_residuals():
    fit = fit_power_law(BUDGETS, [law(d) for d in BUDGETS])
    assert fit.a == pytest.approx(A, rel=1e-5) and fit.b == pytest.approx(B, rel=1e-5) and fit.c == pytest.approx(C, abs=1e-6)
    assert max(abs(r) for r in fit.residuals) < 1e-9
    assert fit.inverse(law(3e6)) == pytest.approx(3e6, rel=1e-6)


def test_residuals_are_what_the_fit_misses():
    noise = [0.01, -0.02, 0.015, -0.005]
    losses = [law(d) + e for d, e in zip(BUDGETS, noise)]
    fit = fit_power_law(BUDGETS, losses)
    np.testing.assert_allclose(fit.residuals, [y - fit(d) for d, y in zip(BUDGETS, losses)], atol=1e-12)
    assert fit.c < min(losses) and fit.b > 0 and fit.rmse < 0.02


def test_speedups_in_data_compute_and_across_seeds_match_hand_computed_values():
    fit = fit_power_law(BUDGETS, [law(d) for d in BUDGETS])
    # X reaches at 1M tokens what AdamW reaches at 2M: a 2x data speedup
    assert data_speedup(fit, law(2e6), 1e6) == pytest.approx(2.0, rel=1e-5)
    # Sophia-G's GNB on 32 of 480 sequences every 10 steps costs one forward+backward: 1/150 more FLOPs
    f = 6 * 124e6
    sophia, adamw = compute_per_token(f, 1.0, 32 / 480, 10), compute_per_token(f)
    assert sophia == pytest.approx(f * (1 + 1 / 150))
    assert fit.inverse(law(2e6)) * adamw / (1e6 * sophia) == pytest.approx(2 / (1 + 1 / 150), rel=1e-5)
    # two seeds with 2x and 4x: mean 3, sd sqrt(2)
    s = seed_speedups(fit, [law(2e6), law(4e6)], 1e6)
    assert s.mean == pytest.approx(3.0, rel=1e-5) and s.sd == pytest.approx(math.sqrt(2), rel=1e-5)
    # a loss at or below AdamW's floor has no finite speedup
    assert math.isinf(data_speedup(fit, C - 0.1, 1e6)) and math.isinf(seed_speedups(fit, [C - 1e-3], 1e6).mean)


def test_half_budget_verdict_and_too_few_budgets():
    assert half_budget_verdict(law(2e6), law(2e6)) and not half_budget_verdict(law(1e6), law(2e6))
    with pytest.raises(ValueError, match="3 or more budgets"):
        fit_power_law([1e6, 2e6, 2e6], [3.0, 2.9, 2.9])


def test_losses_falling_faster_in_log_budget_get_a_zero_floor_not_a_negative_one():
    """Real small-model losses (the cpu profile's tiny3x96 AdamW means) fall faster and faster in log D;
    an unconstrained floor runs off to c ~ -139 with b ~ 0.001 (a log-linear curve with no meaning). The
    floor of a cross-entropy is not negative: the fit is the pure power law c = 0 instead."""
    budgets = [51_200, 102_400, 204_800, 409_600]
    losses = [2.4122, 2.3039, 2.1716, 2.0024]
    fit = fit_power_law(budgets, losses)
    assert fit.c == pytest.approx(0.0, abs=1e-9) and 0.05 < fit.b < 0.2
    logb, logl = np.log(budgets), np.log(losses)
    slope, intercept = np.polyfit(logb, logl, 1)  # with c = 0, log L = log a - b log D is an ordinary line
    assert fit.b == pytest.approx(-slope, rel=1e-6) and fit.a == pytest.approx(math.exp(intercept), rel=1e-6)
    assert fit.rmse < 0.03


def test_interpolated_speedup_reads_adamws_measured_losses_by_hand():
    """Between budgets: straight lines in (log D, L). AdamW at 100/200/400/800 with 3.0/2.6/2.4/2.0 and X
    at budget 200 with 2.5: halfway (in L) from 200 to 400, so D = 200 * 2**0.5 and the speedup sqrt(2).
    Outside the range only bounds; AdamW's own points give exactly 1; a rise in AdamW's curve is ignored."""
    from sophia_train.studies.speedup import interpolated_speedup

    budgets, losses = [100, 200, 400, 800], [3.0, 2.6, 2.4, 2.0]
    s = interpolated_speedup(budgets, losses, 2.5, 200)
    assert s.bound == "=" and s.value == pytest.approx(math.sqrt(2), rel=1e-12) and str(s) == "1.41"
    assert interpolated_speedup(budgets, losses, 2.8, 100).value == pytest.approx(2**0.5, rel=1e-12)
    for b, y in zip(budgets, losses):
        assert interpolated_speedup(budgets, losses, y, b).value == pytest.approx(1.0) and interpolated_speedup(budgets, losses, y, b).bound == "="
    best = interpolated_speedup(budgets, losses, 1.9, 400)
    assert (best.bound, best.value, str(best)) == (">", 2.0, "> 2.00")
    worst = interpolated_speedup(budgets, losses, 3.2, 400)
    assert (worst.bound, worst.value) == ("<", 0.25)
    bumpy = interpolated_speedup([100, 200, 400], [3.0, 3.1, 2.0], 2.5, 100)  # 200 no better than 100: 3.0 stands
    assert bumpy.value == pytest.approx(2 ** (1 + (3.0 - 2.5) / (3.0 - 2.0)), rel=1e-12)
