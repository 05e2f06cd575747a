"""The paradigm × data-scale interaction: a linear mixed model of seed-level Δ (statsmodels MixedLM).

Δ ~ paradigm × log10(n_train) + type + (1 | clinical group), fitted by REML on one value
per (task, paradigm, seed): Δ of that seed against the baseline's seed mean
(`Comparison.seed_deltas`, whose mean over seeds is the task's Δ). The random intercept per
clinical group is always fitted (`re_formula="1"`: statsmodels drops it when a `vc_formula`
is given without one, and the slopes then ignore the groups). With several seeds a
variance component per (task, paradigm) nested within its group is added, so seeds of one task
are not counted as independent tasks (without it the slope's CI shrinks with the number
of seeds: pseudo-replication). The method text gives the fitted standard deviations. The model is
parametrised with one intercept and one slope per paradigm, so each paradigm's slope
(percentage points of Δ per tenfold n_train) comes with its own Wald CI, read on Student's t
with clinical groups − 1 degrees of freedom (small-sample: the normal's covered 92-93 % at 95 %
with 9 groups on null data); the interaction
is the difference of two slopes (each other paradigm against the first). A paradigm whose
tasks have fewer than 3 distinct sizes has no slope: it is left out of the joint fit with a
note of its own, and the others are fitted. A model that cannot be fitted (too few tasks or
groups; a singular fit) gives a Stat with a note saying why, never an exception; a fit whose covariance of
the fixed effects is not positive definite (`INDEFINITE`: an ill-defined optimum, whose variances are none to
trust even where positive) keeps every estimate's value but gives none a CI or a p, so none is a test of the
Holm family. statsmodels and pandas are imported
inside.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from usagg.analysis.delta import Comparison
from usagg.analysis.mixed_design import mixed_model
from usagg.analysis.stats import Hypotheses, Stat, alternative, one_sided, sided
from usagg.wording import counted

MIN_GROUPS = 3  # a random intercept needs a few groups to estimate its variance
MIN_TASKS = 3  # distinct task sizes per paradigm: two points fix a line and leave no error to estimate
#: The slopes' unit: the demo's tasks span 19-77 images (0.6 of a decade), so "per tenfold" extrapolated far outside
#: the data (+190 pp per tenfold read as an effect no task could show).
UNIT = "per doubling of n_train"
SLOPE = "mixed model: slope of Δ per doubling of n_train"
FORMULA = "Δ ~ paradigm × log2(n_train) + type + (1 | group)"
#: Each paradigm's own deviation per clinical group: CG trains one model per group, AU one for all, so a group
#: that suits one paradigm's model need not suit another's (without it, the slopes' CIs cover 74-86 % at 95 %).
PARADIGM_TERM = " + (1 | group:paradigm)"
SEEDS_TERM = " + (1 | group:task:paradigm)"
#: The end of the note of a fit with a variance component at 0 (`_boundary_note`, which names the component and
#: its sd): the data show no such deviation (the fit is still valid).
BOUNDARY = "at the boundary of the parameter space"
#: The note of every estimate of a fit whose covariance of the fixed effects is not positive definite: the REML
#: optimum is ill-defined there (a saddle, or variance components the data cannot separate, as with the demo's 4
#: groups), so no variance read off that matrix is one to trust, even one that happens to be positive (the demo's
#: TSM slope had p 0.02 from a matrix with an eigenvalue of −2,231).
INDEFINITE = (
    "CI and p not estimable: the fit's covariance of the fixed effects is not positive definite (smallest "
    "eigenvalue {low:.4g}), so no estimate of this fit has a standard error to trust (too few clinical groups to "
    "separate its variance components, or an ill-defined optimum)"
)


def _rows(comp: Comparison, fraction: float) -> list[tuple[float, str, float, str, str, str]]:
    """(Δ, paradigm, log10 n_train, type, group, task) per task and seed, exclusions of each paradigm applied."""
    rows = []
    for p in comp.others:
        names, _ = comp.delta_values(fraction, p)
        for t in names:
            n = comp.n_train.get((fraction, t), math.nan)
            if not n > 0:
                continue
            info = comp.info(t)
            for _, d in sorted(comp.seed_deltas(fraction, t, p).items()):
                rows.append((d, p, math.log2(n), info.type, info.group, t))
    return rows


def _cannot(comp: Comparison, fraction: float, why: str, n: int, paradigms: list[str] | None = None) -> list[Stat]:
    """A "not fitted" row for each of `paradigms` (default: every paradigm compared), saying why."""
    names = comp.others if paradigms is None else paradigms
    return [Stat(SLOPE, p, fraction, None, n, FORMULA, note=f"not fitted: {why}") for p in names]


def interaction_model(comp: Comparison, fraction: float, hypotheses: Hypotheses | None = None) -> list[Stat]:
    """Per-paradigm slopes of Δ on log10 n_train with 95 % CIs and p, then each slope difference (interaction)."""
    rows = _rows(comp, fraction)
    n_obs = len(rows)
    paradigms = [p for p in comp.others if any(r[1] == p for r in rows)]
    groups = {r[4] for r in rows}
    if len(groups) < MIN_GROUPS:
        return _cannot(comp, fraction, f"{counted(len(groups), 'clinical group')}, need ≥{MIN_GROUPS}", n_obs)
    unfit: list[Stat] = []  # a paradigm whose tasks have too few sizes has no slope; the others still have theirs
    for p in list(paradigms):
        sizes = {r[2] for r in rows if r[1] == p}
        if len(sizes) < MIN_TASKS:
            why = f"{p} has {counted(len(sizes), 'distinct task size')}, need ≥{MIN_TASKS}"
            unfit += _cannot(comp, fraction, why, sum(r[1] == p for r in rows), [p])
            paradigms.remove(p)
    if not paradigms:
        return unfit
    return _fit([r for r in rows if r[1] in paradigms], paradigms, fraction, hypotheses, comp) + unfit


def _fit(
    rows: list[tuple[float, str, float, str, str, str]],
    paradigms: list[str],
    fraction: float,
    hypotheses: Hypotheses | None,
    comp: Comparison,
) -> list[Stat]:
    """The joint fit of `paradigms` (each with enough task sizes): their slopes, then each slope difference."""
    n_obs = len(rows)
    groups = {r[4] for r in rows}
    if len(groups) < MIN_GROUPS:  # the paradigms left out took a group with them
        return _cannot(
            comp, fraction, f"{counted(len(groups), 'clinical group')}, need ≥{MIN_GROUPS}", n_obs, paradigms
        )
    types = sorted({r[3] for r in rows})
    n_params = 2 * len(paradigms) + len(types) - 1
    if n_obs < n_params + 3:
        return _cannot(comp, fraction, f"{n_obs} seed-level values for {n_params} fixed effects", n_obs, paradigms)
    df = _frame(rows, paradigms)
    replicated = bool(df["unit"].duplicated().any())
    several = len(paradigms) > 1  # with one paradigm, group:paradigm is the group itself
    vc = ("paradigm",) * several + ("unit",) * replicated
    fit = _best_fit(df, vc)
    if isinstance(fit, str):
        return _cannot(comp, fraction, fit, n_obs, paradigms)
    res, messages, found = fit
    how = f"highest REML log-likelihood {float(res.llf):.3f} {found}"
    note = _joined(_boundary_note(res), _warning_note(messages))
    spread = _spread_note(df, res)  # about an interval being too narrow: said only beside one
    names = list(res.fe_params.index)
    method = (
        f"{FORMULA}{PARADIGM_TERM if several else ''}{SEEDS_TERM if replicated else ''}; statsmodels MixedLM "
        f"(REML), {n_obs} seed-level Δ of "
        f"{counted(len(paradigms), 'paradigm')}, "
        f"{counted(len(groups), 'group')}; n_train {_span(df)}; {how}; {_random_sds(res)}; Wald 95 % CI and "
        f"t-test on {group_df(res)} df (groups − 1)"
    )
    carried = _leverage(df, vc, res, paradigms)
    out = []
    slope_ix = {p: names.index(f"C(paradigm)[{p}]:logn") for p in paradigms}
    for p in paradigms:
        est, p2, ci, why = _contrast(res, {slope_ix[p]: 1.0})
        alt = alternative(hypotheses, "scale", p)
        out.append(
            Stat(SLOPE, p, fraction, est, sum(r[1] == p for r in rows),
                 f"{method}, {sided(alt, 'slope < 0' if alt == 'less' else 'slope > 0')}",
                 None if p2 is None else one_sided(p2, est, alt), ci,
                 _joined(why, note, "" if why else spread, carried.get(p, "")))
        )  # fmt: skip
    first = paradigms[0] if paradigms else ""
    for p in paradigms[1:]:
        est, p2, ci, why = _contrast(res, {slope_ix[p]: 1.0, slope_ix[first]: -1.0})
        out.append(
            Stat(f"mixed model: interaction, slope {p} − slope {first}", f"{p}-{first}", fraction, est, n_obs,
                 f"{method}, two-sided", p2, ci, _joined(why, note, "" if why else spread))
        )  # fmt: skip
    return out


def _frame(rows: list[tuple[float, str, float, str, str, str]], paradigms: list[str]):
    """The model's data frame: `rows` in the `_canonical` order, a unit per task × paradigm."""
    import pandas as pd

    df = pd.DataFrame(sorted(rows, key=_canonical), columns=["delta", "paradigm", "logn", "type", "group", "task"])
    df["paradigm"] = pd.Categorical(df["paradigm"], categories=paradigms)
    df["unit"] = df["task"] + "|" + df["paradigm"].astype(str)
    return df


def _canonical(row: tuple[float, str, float, str, str, str]) -> tuple[str, str, str, float]:
    """A row order that no input order changes (group, task, paradigm, Δ): statsmodels' optimisers start from and
    step through the rows as given, and the demo's fit converged in 5 of 10 shuffles of the same rows."""
    return row[4], row[5], row[1], row[0]


#: The optimisers tried (`_best_fit`): the REML surface of a few groups is flat, and one optimiser stopping short
#: (bfgs at a gradient of 0.9) is no verdict on the model.
METHODS = ("lbfgs", "bfgs", "powell", "nm", "cg")
#: A variance below this share of the residual variance is at the boundary (0): no optimiser reaches 0 exactly.
AT_ZERO = 1e-4
#: statsmodels' own boundary warning: a variance below this (pp², absolute) "may be on the boundary".
STATSMODELS_AT_ZERO = 0.01
#: Two fits this close in REML log-likelihood are at the same optimum.
SAME_LLF = 1e-3
#: lbfgs restarts where it stopped before `_best_fit` turns to the search over `METHODS`.
RESTARTS = 3


def _best_fit(df, vc: tuple[str, ...]):
    """(result, its warnings, how it was found) of the highest REML log-likelihood, or why none counts.

    The model is built once and every optimiser fits it. First lbfgs from statsmodels' start, restarted where it
    stopped (up to `RESTARTS` times): a restart is kept where it counts (converged or at the boundary), gained
    under `SAME_LLF` and no variance at 0 raises the REML when freed (`_at_maximum`). Else the search over
    `METHODS` (`_searched`), whose maximum the kept fit equals: on the demo to the last digit in a quarter of the
    time; lbfgs alone "converged" 0.044 below it on a simulated table, where a restart climbs on
    (tests/test_mixed_fit.py)."""
    try:
        model = _model(df, vc)
    except (np.linalg.LinAlgError, ValueError) as err:
        return f"the fit failed ({err})"
    _, res, _ = _one_fit(model, "lbfgs", None)
    for k in range(RESTARTS):
        if res is None:
            break
        before = float(res.llf)
        _, res, said = _one_fit(model, "lbfgs", res)
        if res is not None and _at_maximum(res, before):
            how = (
                f"by lbfgs, restarted where it stopped until it gained under {SAME_LLF:g} "
                f"({counted(k + 1, 'restart')}; no variance at 0 raises it when freed)"
            )
            return res, said, how
    return _searched(model)


def _searched(model: Any) -> tuple[Any, list[str], str] | str:
    """`_best_fit`'s answer from every optimiser: each of `METHODS` starts from statsmodels' own start, then each
    again from the highest point found (the REML surface of a few groups is flat near a variance of 0, where one
    optimiser stops short and another, started there, reaches the maximum: the demo's bfgs "converged" at
    −155.836, lbfgs reached −155.743 with a variance at 0). A fit counts where its optimiser converged or a
    variance is at the boundary, and where no attempt went higher than it."""
    fits: list[tuple[str, Any, list[str]]] = [_one_fit(model, m, None) for m in METHODS]
    ok = [f for f in fits if f[1] is not None]
    if not ok:
        return f"the fit failed ({'; '.join(sorted({f[2][0] for f in fits}))})"
    start = max(ok, key=lambda f: float(f[1].llf))
    ok += [f for m in METHODS if (f := _one_fit(model, m, start[1]))[1] is not None]
    top = max(float(r.llf) for _, r, _ in ok)
    counted_ = [f for f in ok if f[1].converged or _at_boundary(f[1])]
    if not counted_ or float((best := max(counted_, key=lambda f: float(f[1].llf)))[1].llf) < top - SAME_LLF:
        return f"no optimiser converged ({', '.join(METHODS)}; highest REML log-likelihood {top:.3f})"
    name, res, said = best
    how = f"over the optimisers {', '.join(METHODS)} ({name})"
    return res, said, how


def _model(df: Any, vc: tuple[str, ...]) -> Any:
    """The REML model of `df`: a random intercept per clinical group, `vc`'s variance components (built from arrays,
    as statsmodels' formula would build it: usagg/analysis/mixed_design.py)."""
    return mixed_model(df, vc)


def _one_fit(model: Any, method: str, start: Any) -> tuple[str, Any, list[str]]:
    """(how, result or None, its statsmodels warnings or the error) of one REML fit by `method`, from `start`'s
    parameters where given."""
    how = method if start is None else f"{method} from the highest point of the first round"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = model.fit(reml=True, method=method, start_params=None if start is None else start.params_object)
        except (np.linalg.LinAlgError, ValueError) as err:
            return how, None, [str(err)]
    if not (math.isfinite(float(res.llf)) and np.isfinite(res.fe_params.to_numpy()).all()):
        return how, None, ["a non-finite log-likelihood or estimate"]
    return how, res, [str(w.message) for w in caught if "statsmodels" in w.category.__module__]


#: A variance at 0 is freed to this share of the residual variance to see whether the REML rises (`_at_maximum`).
FREED = 1e-3


def _at_maximum(res: Any, before: float) -> bool:
    """Whether `res` is a maximum of the REML: it converged or sits at the boundary, it stands under `SAME_LLF`
    above `before`, where it was restarted (a restart that climbs on was no stop), and each variance at 0, freed
    to `FREED` of the residual variance, lowers the REML (at 0 the optimiser's square-root scale has a gradient of
    0 whether or not the REML rises off the boundary, so the gradient alone says nothing there)."""
    if not (res.converged or _at_boundary(res)) or float(res.llf) - before >= SAME_LLF:
        return False
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    model, point = res.model, res.params_object
    llf = float(model.loglike(point, profile_fe=True))
    freed = [(point.cov_re, v) for v in _freed(point.vcomp)]
    freed += [(np.array([[FREED]]), point.vcomp)] if point.cov_re[0, 0] <= AT_ZERO else []
    return all(
        float(model.loglike(MixedLMParams.from_components(point.fe_params, cov_re=c, vcomp=v))) <= llf for c, v in freed
    )


def _freed(vcomp: np.ndarray) -> list[np.ndarray]:
    """Each variance component at 0 (relative to the residual variance) freed to `FREED`, one at a time."""
    out = []
    for k in np.flatnonzero(vcomp <= AT_ZERO):
        v = vcomp.copy()
        v[k] = FREED
        out.append(v)
    return out


def _at_boundary(res) -> bool:
    """Whether a fitted variance (group intercept or a component) is at 0, relative to the residual variance."""
    return min(v for _, v in _variances(res)) <= AT_ZERO * float(res.scale)


#: Each random effect's words, in the method text's sds and in the boundary note.
_EFFECTS = {
    "group": "the group intercept",
    "paradigm": "paradigm within a group",
    "unit": "task × paradigm within a group",
}


def _variances(res) -> list[tuple[str, float]]:
    """(words, fitted variance in pp²) of the group intercept, then of each variance component."""
    names = ["group", *res.model.exog_vc.names]
    variances = [float(res.cov_re.iloc[0, 0]), *(float(v) for v in res.vcomp)]
    return [(_EFFECTS[n], v) for n, v in zip(names, variances, strict=True)]


def _boundary_note(res) -> str:
    """Which variance the fit puts at 0, with its sd against the residual's, or '' where none: at 0 by `_at_boundary`
    or by statsmodels' own warning, so that "a variance component is estimated at 0" never leaves the reader to
    find which one in the method text."""
    limit = max(AT_ZERO * float(res.scale), STATSMODELS_AT_ZERO)
    residual = math.sqrt(float(res.scale))
    return "; ".join(
        f"the variance of {words} is estimated at 0 (sd {math.sqrt(max(v, 0.0)):.2f} pp against a residual "
        f"sd of {residual:.2f} pp: {BOUNDARY})"
        for words, v in _variances(res)
        if v <= limit
    )


def _span(df) -> str:
    """The observed range of n_train, in images and doublings, so that a slope per doubling is read inside it."""
    low, high = float(df["logn"].min()), float(df["logn"].max())
    return f"{2**low:.0f}-{2**high:.0f} ({high - low:.1f} doublings)"


#: A slope that one task's removal changes by more than this share of its size (or flips) is carried by that task.
CARRIED = 0.5


def _leverage(df, vc: tuple[str, ...], res, paradigms: list[str]) -> dict[str, str]:
    """Per paradigm, a note where leaving one task out (every paradigm's rows of it) flips its slope or moves it by
    more than half: the demo's slopes rested on one collapsed control run (TSM breast_lesion, −92.5 %) at the
    smallest size. Each refit starts from the full fit's optimum (lbfgs, then powell where lbfgs fails)."""
    slopes = {p: float(res.fe_params[f"C(paradigm)[{p}]:logn"]) for p in paradigms}
    worst: dict[str, tuple[float, str]] = {}  # paradigm: (its slope without the task that moves it most, task)
    for task in sorted(set(df["task"])):
        rest = df[df["task"] != task].reset_index(drop=True)
        if any(rest.loc[rest["paradigm"] == p, "logn"].nunique() < MIN_TASKS for p in paradigms):
            continue
        try:
            model = _model(rest, vc)
        except (np.linalg.LinAlgError, ValueError):
            continue
        fit = _one_fit(model, "lbfgs", res)
        fit = fit if fit[1] is not None else _one_fit(model, "powell", res)
        if fit[1] is None:
            continue
        for p in paradigms:
            without = float(fit[1].fe_params[f"C(paradigm)[{p}]:logn"])
            if p not in worst or abs(without - slopes[p]) > abs(worst[p][0] - slopes[p]):
                worst[p] = (without, task)
    out = {}
    for p, (w, task) in worst.items():
        if abs(w - slopes[p]) > CARRIED * abs(slopes[p]) or w * slopes[p] < 0:
            out[p] = f"carried by one task: without {task} the slope is {w:+.1f} pp (with it {slopes[p]:+.1f})"
    return out


def _joined(*notes: str) -> str:
    """The non-empty notes of one statistic as one note."""
    return "; ".join(n.rstrip(".") for n in notes if n)


def shared_notes(stats: list[Stat]) -> tuple[str, list[tuple[Stat, str]]]:
    """Of one fit's estimates, the notes every one carries (the fit's, as a variance at 0: a report says them once;
    none for a single estimate) and each estimate with the rest of its own (as one task carrying a slope)."""
    parts = [s.note.split("; ") if s.note else [] for s in stats]
    common = [n for n in parts[0] if all(n in q for q in parts[1:])] if len(stats) > 1 else []
    return _joined(*common), [
        (s, _joined(*(n for n in q if n not in common))) for s, q in zip(stats, parts, strict=True)
    ]


def _random_sds(res) -> str:
    """The fitted random-effect standard deviations, in percentage points of Δ."""
    sds = ", of ".join(f"{words} {math.sqrt(max(v, 0.0)):.2f} pp" for words, v in _variances(res))
    return f"sd of {sds}, residual {math.sqrt(float(res.scale)):.2f} pp"


#: Spread of one paradigm's tasks over another's beyond which the model's shared variances are said not to fit.
SPREAD_RATIO = 2.0


def _spread_note(df, res) -> str:
    """What a reader must know when the paradigms' tasks scatter unequally around their fitted lines: each variance
    component is shared by every paradigm, so the wider paradigm's interval is too narrow (a task sd of 6 pp
    against 1 pp covered 69 % at 95 %). The spread: the sd over tasks of each task's mean Δ off the fixed part."""
    off = (df["delta"] - res.model.exog @ res.fe_params.to_numpy()).groupby([df["paradigm"], df["unit"]], observed=True)
    per_task = off.mean().groupby(level=0, observed=True)
    sd = {str(p): float(np.std(v, ddof=1)) for p, v in per_task if len(v) > 1}
    if len(sd) < 2 or min(sd.values()) <= 0 or max(sd.values()) / min(sd.values()) <= SPREAD_RATIO:
        return ""
    wide, narrow = max(sd, key=sd.__getitem__), min(sd, key=sd.__getitem__)
    return (
        f"the tasks' spread around the fitted lines differs by paradigm ({wide} {sd[wide]:.1f} pp, {narrow} "
        f"{sd[narrow]:.1f} pp) but the model's variances are shared: {wide}'s interval is too narrow"
    )


def _warning_note(messages: list[str]) -> str:
    """What a converged fit's warnings mean for the reader (retries that then converged are not news; statsmodels'
    boundary warning is said by `_boundary_note`, naming the variance)."""
    messages = [
        m for m in messages if not any(w in m for w in ("converge", "Gradient optimization failed", "boundary"))
    ]
    rest = sorted({m.split("\n")[0] for m in messages if "Retrying" not in m and "failed to converge" not in m})
    return f"fitted with a warning: {'; '.join(rest)}" if rest else ""


def _contrast(res, weights: dict[int, float]) -> tuple[float, float | None, tuple[float, float] | None, str]:
    """Estimate, two-sided p, 95 % CI and why they are missing ('' when not) of a linear combination of fixed
    effects: Wald, read on Student's t with `group_df` degrees of freedom (the clinical groups are the clusters;
    with 6-9 of them the normal's interval covered 92-93 % at 95 % on null data, t on G − 1 df 96-97 %:
    benchmarks/bench_null_stats.py). A fit whose covariance of the fixed effects is not positive definite (or not
    finite) gives no estimate a p or a CI (`INDEFINITE`; not p = 0 from a variance ≤ 0)."""
    from scipy.stats import t

    fe = len(res.fe_params)
    w = np.zeros(fe)
    for i, v in weights.items():
        w[i] = v
    est = float(w @ res.fe_params.to_numpy())
    cov = res.cov_params().to_numpy()[:fe, :fe]
    low = float(np.linalg.eigvalsh((cov + cov.T) / 2).min()) if np.isfinite(cov).all() else math.nan
    var = float(w @ cov @ w)
    if not (low > 0 and math.isfinite(var) and var > 0):
        return est, None, None, INDEFINITE.format(low=low)
    se = math.sqrt(var)
    dist = t(group_df(res))
    half = float(dist.ppf(0.975)) * se
    return est, float(2 * dist.sf(abs(est) / se)), (est - half, est + half), ""


def group_df(res) -> int:
    """Degrees of freedom of the fixed effects' t: clinical groups − 1 (the clusters, as a cluster-robust test
    counts them)."""
    return int(res.model.n_groups) - 1
