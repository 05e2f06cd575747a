"""The mixed model's design built from arrays: the MixedLM that `MixedLM.from_formula` builds from

    delta ~ 0 + C(paradigm) + C(paradigm):logn [+ C(type)], groups=group, re_formula="1",
    vc_formula={"paradigm": "0 + C(paradigm)", "unit": "0 + C(unit)"} (those asked for)

the same matrices, column names and order (tests/test_mixed_design.py holds them equal, and the fits to the last
digit), without statsmodels' formula machinery: importing it (patsy and formulaic) took 0.5 s of a 1.9 s
`usagg compare` of the demo, and parsing the formula 30 ms a model, once per task again in the leverage check
(usagg/analysis/mixed.py `_leverage`). statsmodels and pandas are imported inside.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The variance components this builder knows, by name: what each adds within a clinical group.
VC_TERMS = ("paradigm", "unit")


def mixed_model(df: Any, vc: tuple[str, ...]) -> Any:
    """The REML model of `df` (usagg/analysis/mixed.py `_frame`: delta, a categorical paradigm, logn, type, group,
    unit): a fixed intercept and slope per paradigm (the categories, in their order), a type effect where there
    are several types (treatment coding, the first in sorted order the reference), a random intercept per group,
    and the variance components `vc` (of `VC_TERMS`) within each group."""
    import pandas as pd
    from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec

    unknown = set(vc) - set(VC_TERMS)
    if unknown:
        raise ValueError(f"unknown variance components {sorted(unknown)}")
    paradigms = [str(p) for p in df["paradigm"].cat.categories]
    paradigm = df["paradigm"].astype(str).to_numpy()
    logn = df["logn"].to_numpy(dtype=np.float64)
    types = sorted(set(df["type"]))
    columns: dict[str, np.ndarray] = {f"C(paradigm)[{p}]": (paradigm == p).astype(np.float64) for p in paradigms}
    kind = df["type"].to_numpy()
    if len(types) > 1:
        columns |= {f"C(type)[T.{t}]": (kind == t).astype(np.float64) for t in types[1:]}
    columns |= {f"C(paradigm)[{p}]:logn": (paradigm == p) * logn for p in paradigms}
    exog = pd.DataFrame(columns, index=df.index)
    groups = np.asarray(df["group"])
    rows = df.groupby(groups).groups
    names, colnames, mats = [], [], []
    for name in sorted(vc):
        levels = paradigms if name == "paradigm" else None
        cols, group_mats = [], []
        for g in sorted(rows):
            values = df.loc[rows[g], name].astype(str).to_numpy()
            own = levels if levels is not None else sorted(set(values))
            cols.append([f"C({name})[{v}]" for v in own])
            # Fortran order as patsy gives it: the fit's sums run in the same order, so to the last digit
            group_mats.append(np.asfortranarray(values[:, None] == np.array(own)[None, :], dtype=np.float64))
        names.append(name)
        colnames.append(cols)
        mats.append(group_mats)
    model = MixedLM(df["delta"], exog, groups, exog_re=np.ones((len(df), 1)), exog_vc=VCSpec(names, colnames, mats))
    param_names, re_names, re_names_full = model._make_param_names(["Group"])
    model.data.param_names = param_names
    model.data.exog_re_names = re_names
    model.data.exog_re_names_full = re_names_full
    if vc:
        model.data.vcomp_names = model.exog_vc.names
    return model
