"""Pooling checked against statsmodels' combine_effects (DL, fixed effect, HK) and hand formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from protocols.errors import DataError
from protocols.tasks import Scale
from reports import POOLED, random_effects
from reports.analysis import analyse, per_center_table
from reports.pooling import expit, haldane, logit, se_from_ci
from reports.taskinfo import TaskInfo

TOL = 1e-8
Z = stats.norm.ppf(0.975)

# (effects, standard errors): heterogeneous cases, so the DL moment estimate of tau2 is positive.
CASES = [
    ([0.10, 0.30, 0.35, 0.65], [0.10, 0.08, 0.12, 0.09]),
    ([1.2, 2.1, 1.6], [0.20, 0.25, 0.15]),
    ([0.80, 0.70], [0.02, 0.03]),
    ([-0.5, 0.4, 1.3, 0.2, 0.9, -0.1], [0.3, 0.25, 0.4, 0.2, 0.35, 0.3]),
]


def sm(y: list[float], se: list[float]):  # type: ignore[no-untyped-def]
    return combine_effects(np.asarray(y), np.asarray(se) ** 2, method_re="dl")


@pytest.mark.parametrize(("y", "se"), CASES)
def test_dl_and_fixed_effect_match_statsmodels(y: list[float], se: list[float]) -> None:
    ours, ref = random_effects(y, se), sm(y, se)
    ci_fe, ci_re, _, _ = ref.conf_int(use_t=False)
    assert ref.tau2 > 0  # the case really is heterogeneous
    assert ours.estimate == pytest.approx(ref.mean_effect_re, abs=TOL)
    assert ours.se == pytest.approx(ref.sd_eff_w_re, abs=TOL)
    assert (ours.ci_low, ours.ci_high) == pytest.approx(tuple(ci_re), abs=TOL)
    assert ours.fe_estimate == pytest.approx(ref.mean_effect_fe, abs=TOL)
    assert ours.fe_se == pytest.approx(ref.sd_eff_w_fe, abs=TOL)
    assert (ours.fe_ci_low, ours.fe_ci_high) == pytest.approx(tuple(ci_fe), abs=TOL)
    assert ours.tau2 == pytest.approx(ref.tau2, abs=TOL)
    assert ours.i2 == pytest.approx(ref.i2, abs=TOL)
    assert ours.q == pytest.approx(ref.q, abs=TOL)
    assert sum(ours.weights) == pytest.approx(1.0, abs=TOL)
    assert list(ours.weights) == pytest.approx(list(ref.weights_rel_re), abs=TOL)


@pytest.mark.parametrize(("y", "se"), CASES)
def test_hartung_knapp_matches_statsmodels_use_t_and_hand(y: list[float], se: list[float]) -> None:
    ours, ref = random_effects(y, se, hartung_knapp=True), sm(y, se)
    assert ours.estimate == pytest.approx(ref.mean_effect_re, abs=TOL)
    # The Knapp-Hartung ad hoc safeguard: the HKSJ SE is never below the DL one (metafor knha, ad hoc).
    assert ours.se == pytest.approx(max(ref.sd_eff_w_re_hksj, ref.sd_eff_w_re), abs=TOL)
    if ref.sd_eff_w_re_hksj >= ref.sd_eff_w_re:  # the safeguard does not bite: statsmodels' HKSJ interval
        _, _, _, ci_hk = ref.conf_int(use_t=True)
        assert (ours.ci_low, ours.ci_high) == pytest.approx(tuple(ci_hk), abs=TOL)
    # Hand computation: q = sum w*(y - mu)^2 / (k - 1), SE = sqrt(max(1, q) / sum w), CI with t(k - 1).
    ya, va = np.asarray(y), np.asarray(se) ** 2
    w = 1 / (va + ours.tau2)
    mu = (w * ya).sum() / w.sum()
    hk_se = math.sqrt(max(1.0, (w * (ya - mu) ** 2).sum() / (len(y) - 1)) / w.sum())
    t = stats.t.ppf(0.975, len(y) - 1)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((mu - t * hk_se, mu + t * hk_se), abs=TOL)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # statsmodels takes sqrt of its negative tau2 here
def test_homogeneous_case_truncates_tau2_and_i2_at_zero() -> None:
    y, se = [0.50, 0.51, 0.49, 0.50], [0.10, 0.12, 0.09, 0.11]
    ours, ref = random_effects(y, se), sm(y, se)
    assert ref.tau2 < 0 and ref.i2 < 0  # statsmodels reports the untruncated moment estimates
    assert ours.tau2 == 0.0 and ours.i2 == 0.0
    assert ours.estimate == pytest.approx(ref.mean_effect_fe, abs=TOL)
    assert ours.se == pytest.approx(ref.sd_eff_w_fe, abs=TOL)


def test_prediction_interval_uses_t_with_k_minus_2_and_needs_3_centers() -> None:
    y, se = CASES[0]
    ours = random_effects(y, se)
    half = stats.t.ppf(0.975, len(y) - 2) * math.sqrt(ours.tau2 + ours.se**2)
    assert (ours.pi_low, ours.pi_high) == pytest.approx((ours.estimate - half, ours.estimate + half), abs=TOL)
    two = random_effects(*CASES[2])
    assert two.pi_low is None and two.pi_high is None


def test_pooling_rejects_bad_input_naming_it() -> None:
    with pytest.raises(DataError, match="at least 2 centers, got 1"):
        random_effects([0.5], [0.1])
    with pytest.raises(DataError, match="positive"):
        random_effects([0.5, 0.6], [0.1, 0.0])
    with pytest.raises(DataError, match="strictly inside"):
        logit(1.0)


def test_logit_helpers() -> None:
    assert expit(logit(0.8)) == pytest.approx(0.8, abs=1e-12)
    assert haldane(1.0, 400) == pytest.approx(400.5 / 401)
    assert haldane(0.0, 400) == pytest.approx(0.5 / 401)
    assert haldane(0.3, 400) == 0.3
    assert se_from_ci(0.0, 2 * Z) == pytest.approx(1.0)


def _expected_logit(est: float, lo: float, hi: float, n: int) -> tuple[float, float]:
    """The stated rule, written out independently: 0 or 1 -> (x + 0.5)/(n + 1), n = videos, but no further in
    than the most extreme of the values inside (0, 1); SE from the logit CI, or the binomial floor when it is 0."""
    inside = [p for p in (est, lo, hi) if 0 < p < 1]
    e = min([0.5 / (n + 1)] + [min(p, 1 - p) for p in inside])

    def fix(p: float) -> float:
        return min(max(p, e), 1 - e)

    lg = lambda p: math.log(fix(p) / (1 - fix(p)))  # noqa: E731
    se = (lg(hi) - lg(lo)) / (2 * Z)
    return lg(est), se if se > 0 else math.sqrt(1 / (est * n + 0.5) + 1 / (n - est * n + 0.5))


PHASE = TaskInfo(headline="accuracy", scales={"accuracy": Scale.PROPORTION, "f1": Scale.UNIT})


def _pooled(df: pd.DataFrame, metric: str, *, hk: bool = False) -> pd.Series:
    table = per_center_table(analyse(df, {"phase": PHASE}, hartung_knapp=hk), "phase-ext-2026", 1)
    return table[(table["center"] == POOLED) & (table["metric"] == metric)].iloc[0]


@pytest.mark.parametrize("hk", [False, True])
def test_results_table_with_center_at_1_and_suppressed_center_matches_statsmodels(
    results: pd.DataFrame, hk: bool
) -> None:
    # accuracy: 3 pooled centers on the logit scale, one at 1.0 (corrected), the suppressed one left out.
    y, se = zip(
        _expected_logit(0.81, 0.76, 0.86, 12),
        _expected_logit(0.90, 0.86, 0.93, 12),
        _expected_logit(1.0, 0.97, 1.0, 12),  # n = videos, not frames
        strict=False,
    )
    ref = sm(list(y), list(se))
    got = _pooled(results, "accuracy", hk=hk)
    assert got["k"] == 3
    assert logit(got["estimate"]) == pytest.approx(ref.mean_effect_re, abs=TOL)
    ci = ref.conf_int(use_t=hk)[3 if hk else 1]
    assert (logit(got["ci_low"]), logit(got["ci_high"])) == pytest.approx(tuple(ci), abs=TOL)
    assert logit(got["fe_estimate"]) == pytest.approx(ref.mean_effect_fe, abs=TOL)
    assert got["tau2"] == pytest.approx(ref.tau2, abs=TOL)
    assert got["i2"] == pytest.approx(ref.i2, abs=TOL)
    assert got["pooling_scale"] == "logit"


def test_unit_metric_is_pooled_on_its_own_scale(results: pd.DataFrame) -> None:
    y = [0.70, 0.78, 0.92]
    se = [(0.78 - 0.62) / (2 * Z), (0.82 - 0.74) / (2 * Z), (0.96 - 0.88) / (2 * Z)]
    ref = sm(y, se)
    got = _pooled(results, "f1")
    assert got["estimate"] == pytest.approx(ref.mean_effect_re, abs=TOL)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(ref.conf_int(use_t=False)[1]), abs=TOL)
    assert got["fe_estimate"] == pytest.approx(ref.mean_effect_fe, abs=TOL)
    assert got["tau2"] == pytest.approx(ref.tau2, abs=TOL)
    assert got["i2"] == pytest.approx(ref.i2, abs=TOL)
    assert got["pooling_scale"] == "identity"


def test_center_at_zero_with_degenerate_ci_uses_binomial_logit_se(sites: tuple[str, ...], make_row: Callable) -> None:
    row, SITES = make_row, sites
    df = pd.DataFrame(
        [
            row(SITES[0], "phase", "accuracy", 0.40, 0.30, 0.50),
            row(SITES[1], "phase", "accuracy", 0.0, 0.0, 0.0, n_frames=50),
            row(SITES[2], "phase", "accuracy", 0.55, 0.45, 0.65),
        ]
    )
    y0 = math.log(0.5 / 12.5)  # Haldane-Anscombe empirical logit of 0/12 (n = 12 videos, not the 50 frames)
    se0 = math.sqrt(1 / 0.5 + 1 / 12.5)  # a zero-width CI gets the binomial floor SE, never exclusion
    others = [_expected_logit(0.40, 0.30, 0.50, 12), _expected_logit(0.55, 0.45, 0.65, 12)]
    ref = sm([others[0][0], y0, others[1][0]], [others[0][1], se0, others[1][1]])
    got = _pooled(df, "accuracy")
    assert ref.tau2 > 0
    assert logit(got["estimate"]) == pytest.approx(ref.mean_effect_re, abs=TOL)
    assert got["tau2"] == pytest.approx(ref.tau2, abs=TOL)
    assert got["i2"] == pytest.approx(ref.i2, abs=TOL)


def test_fewer_than_two_centers_gives_no_pooled_estimate_and_says_so(
    sites: tuple[str, ...], make_row: Callable
) -> None:
    row, SITES = make_row, sites
    df = pd.DataFrame(
        [
            row(SITES[0], "phase", "accuracy", 0.8, 0.7, 0.9),
            row(SITES[1], "phase", "accuracy", None, None, None, suppressed=True),
        ]
    )
    got = _pooled(df, "accuracy")
    assert math.isnan(got["estimate"]) and got["k"] == 1
    assert "fewer than 2 centers" in got["note"]


def test_invalid_proportions_and_missing_counts_are_named(sites: tuple[str, ...], make_row: Callable) -> None:
    row, SITES = make_row, sites
    bad = pd.DataFrame(
        [row(SITES[0], "phase", "accuracy", 1.2, 0.9, 1.3), row(SITES[1], "phase", "accuracy", 0.5, 0.4, 0.6)]
    )
    with pytest.raises(DataError, match=r"Strasbourg.*estimate 1\.2"):
        analyse(bad, {"phase": PHASE})
    edge = pd.DataFrame(
        [
            row(SITES[0], "phase", "accuracy", 1.0, 0.9, 1.0, n_frames=None, n_videos=None),
            row(SITES[1], "phase", "accuracy", 0.5, 0.4, 0.6),
        ]
    )
    with pytest.raises(DataError, match="needs n_videos"):
        analyse(edge, {"phase": PHASE})


def test_builtin_tasks_pool_every_bounded_metric_on_the_logit_scale() -> None:
    from protocols.tasks import available_tasks
    from reports import task_info

    info = task_info("phase")
    assert info.headline == "accuracy"
    # Every metric the site computes is bounded in [0, 1] (F1, Jaccard, AP, mIoU, balanced accuracy, ...).
    for task in available_tasks():
        scales = task_info(task).scales
        assert all(s is Scale.PROPORTION for s in scales.values()), (task, scales)


def test_097_090_100_se_does_not_grow_with_frames(sites: tuple[str, ...], make_row: Callable) -> None:
    """The finding: 0.97 (0.90-1.00) got logit SE 0.79 at 100 frames and 1.97 at 10,000 (n = frames)."""
    row, SITES = make_row, sites
    got = []
    for frames in (100, 10_000):
        rows = [row(SITES[0], "phase", "accuracy", 0.97, 0.90, 1.00, n_videos=20, n_frames=frames)]
        rows.append(row(SITES[1], "phase", "accuracy", 0.80, 0.70, 0.88, n_videos=20, n_frames=frames))
        got.append(analyse(pd.DataFrame(rows), {"phase": PHASE})[0].contributions[0])
    # By hand, n = 20 videos: 1.00 moves to 1 - 0.5/21 (0.90 and 0.97 stay), SE from the logit CI.
    top = 1 - 0.5 / 21
    expected = (math.log(top / (1 - top)) - math.log(0.9 / 0.1)) / (2 * Z)
    for c in got:
        assert c.se == pytest.approx(expected, abs=1e-12)
        assert c.y == pytest.approx(math.log(0.97 / 0.03), abs=1e-12)
    assert got[0].se == got[1].se  # more frames never means less weight


@pytest.mark.parametrize("frames", [100, 10_000])
def test_released_se_pooling_is_used_as_is(sites: tuple[str, ...], make_row: Callable, frames: int) -> None:
    row, SITES = make_row, sites
    a = row(SITES[0], "phase", "accuracy", 0.97, 0.90, 1.00, n_videos=20, n_frames=frames)
    b = row(SITES[1], "phase", "accuracy", 0.80, 0.70, 0.88, n_videos=20, n_frames=frames)
    a.update(se_pooling=0.61, pooling_scale="logit")
    b.update(se_pooling=0.33, pooling_scale="logit")
    pm = analyse(pd.DataFrame([a, b]), {"phase": PHASE})[0]
    assert [c.se for c in pm.contributions] == [0.61, 0.33]
    assert all(c.from_site for c in pm.contributions)
    ref = sm([math.log(0.97 / 0.03), math.log(0.8 / 0.2)], [0.61, 0.33])
    assert pm.result is not None and pm.result.estimate == pytest.approx(ref.mean_effect_re, abs=TOL)


def test_se_released_on_another_scale_is_not_pooled(sites: tuple[str, ...], make_row: Callable) -> None:
    row, SITES = make_row, sites
    a = row(SITES[0], "phase", "accuracy", 0.9, 0.8, 0.95)
    a.update(se_pooling=0.05, pooling_scale="identity")
    b = row(SITES[1], "phase", "accuracy", 0.8, 0.7, 0.88)
    pm = analyse(pd.DataFrame([a, b]), {"phase": PHASE})[0]
    assert pm.contributions[0].reason == "SE released on the identity scale, not logit"


def test_best_site_with_zero_width_ci_is_pooled_with_floor_se(sites: tuple[str, ...], make_row: Callable) -> None:
    row, SITES = make_row, sites
    df = pd.DataFrame(
        [
            row(SITES[0], "phase", "f1", 1.0, 1.0, 1.0, n_videos=5),
            row(SITES[1], "phase", "f1", 0.8, 0.7, 0.88, n_videos=5),
            row(SITES[2], "phase", "f1", 0.7, 0.6, 0.8, n_videos=5),
        ]
    )
    info = TaskInfo(headline="f1", scales={"f1": Scale.PROPORTION})
    pm = analyse(df, {"phase": info})[0]
    best = pm.contributions[0]
    assert best.reason is None and best.floored
    assert best.se == pytest.approx(math.sqrt(1 / 5.5 + 1 / 0.5), abs=1e-12)  # x = 5 of n = 5 videos
    assert best.y == pytest.approx(math.log(5.5 / 0.5), abs=1e-12)
    table = per_center_table([pm], "phase-ext-2026", 1)
    assert "floor SE" in table.loc[0, "note"]


def test_hksj_safeguard_never_narrower_than_dl() -> None:
    # Homogeneous effects (tau2 = 0): the unadjusted HKSJ q is far below 1, its interval narrower than DL's.
    y, se = [0.50, 0.51, 0.49, 0.50], [0.10, 0.12, 0.09, 0.11]
    dl, hk = random_effects(y, se), random_effects(y, se, hartung_knapp=True)
    w = 1 / np.asarray(se) ** 2
    mu = (w * np.asarray(y)).sum() / w.sum()
    q = (w * (np.asarray(y) - mu) ** 2).sum() / (len(y) - 1)
    assert q < 1 and math.sqrt(q / w.sum()) < dl.se  # by hand: what the unadjusted HKSJ would use
    assert hk.se == pytest.approx(math.sqrt(1 / w.sum()), abs=TOL)  # max(1, q) = 1: the DL SE, with t(k - 1)
    assert hk.ci_high - hk.ci_low > dl.ci_high - dl.ci_low


def test_two_centers_pooled_with_a_warning(sites: tuple[str, ...], make_row: Callable) -> None:
    row, SITES = make_row, sites
    df = pd.DataFrame(
        [row(SITES[0], "phase", "accuracy", 0.8, 0.7, 0.9), row(SITES[1], "phase", "accuracy", 0.6, 0.5, 0.7)]
    )
    got = _pooled(df, "accuracy")
    assert got["k"] == 2 and not math.isnan(got["estimate"])
    assert "only 2 centers" in got["note"] and math.isnan(got["pi_low"])


def test_pooled_parse_fail_rate_is_frame_weighted(sites: tuple[str, ...], make_row: Callable) -> None:
    row, SITES = make_row, sites
    a, b = (
        row(SITES[0], "phase", "accuracy", 0.8, 0.7, 0.9, n_frames=100),
        row(SITES[1], "phase", "accuracy", 0.6, 0.5, 0.7, n_frames=300),
    )
    a["parse_fail_rate"], b["parse_fail_rate"] = 0.10, 0.02
    got = _pooled(pd.DataFrame([a, b]), "accuracy")
    assert got["parse_fail_rate"] == pytest.approx((0.10 * 100 + 0.02 * 300) / 400)
