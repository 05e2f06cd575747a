"""Every figure at print size: no two texts overlap, no text leaves the figure or sits on another panel, no legend
covers data, no axes (a colour bar) covers another. Checked on the simulated 27-task study and on a small input shaped
like the demo study (nine synthetic tasks with their designed groups, one seed, a +226 % Δ, sixteen epochs of history,
an affinity with one large cell), and for the affinity figures on that input with affinities near 1e-6 (what a
short measurement gives), which matplotlib writes with an offset text.

Texts are the ones matplotlib actually drew (Text.draw is recorded), measured with Text.get_window_extent; a rotated
text is compared as its rotated rectangle, not its axis-aligned box, so slanted tick labels do not collide falsely."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text

from tests.store_reads import all_metrics
from usagg.affinity import Affinity, write_affinity
from usagg.analysis.figure_absolute import BOUND_MARGIN, fig_absolute
from usagg.analysis.figure_affinity import fig_affinity, fig_affinity_delta
from usagg.analysis.figure_delta import fig_delta, symlog_threshold
from usagg.analysis.figures import FIGURES
from usagg.analysis.inputs import load_input
from usagg.analysis.results import read_results, write_results
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.style import paper_style
from usagg.analysis.summary import Analysis, analyse
from usagg.atomic import read_json
from usagg.data.synth.tasks import TASKS as SYNTH
from usagg.data.synth.tasks import designed_groups
from usagg.store import RunStore

FMC = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
SLACK = 0.5  # px: glyph boxes carry a little padding; touching is not overlapping
GAP_EM = 0.3  # texts side by side need this share of the font size between them, or they read as one ("10121416")
MEASURING = "AU-all-f1-s0"
TINY = 5e-5  # scales the demo's affinities (about 0.01) to about 1e-6


def _demo_shaped(root: Path, name: str = "demo", affinity_scale: float = 1.0) -> Path:
    """Nine synthetic tasks, six paradigms, one seed with per-image scores, AU's breast_lesion Δ ≈ +226 %, sixteen
    epochs of history per job and an affinity whose largest off-diagonal cell is twenty times the rest (0.2, times
    `affinity_scale`)."""
    tasks = [{"id": t.id, "type": t.type, "num_classes": t.num_classes, "group": t.group} for t in SYNTH.values()]
    run = simulate_run_store(
        root / name, tasks, paradigms=("TS", "CG", "AU", "AG", "TSM", "AUD"), seeds=(0,), item_scores=True
    )
    store = RunStore(run)
    table = read_results(store.results_csv)
    rows = []
    for r in table.rows:
        if r.task == "breast_lesion" and r.metric == "DSC":
            r = dataclasses.replace(r, value={"TS": 0.19, "AU": 0.62}.get(r.paradigm, 0.2))
        rows.append(r)
    write_results(rows, store.results_csv)
    for jid, m in all_metrics(store).items():
        m["history"] = [
            {"epoch": e, "step": 10 * e, "task_loss": {t: 2.0 * 0.85**e for t in m["tasks"]}, "select_score": e / 16}
            for e in range(1, 17)
        ]
        store.write_metrics(jid, m)
    ids = list(SYNTH)
    z = np.random.default_rng(0).normal(0, 0.01, (len(ids), len(ids)))
    z[0, 1] = 0.2  # one cell that would set a linear colour scale on its own
    np.fill_diagonal(z, 0.4)
    aff = Affinity(tasks=ids, matrix=(z * affinity_scale).tolist(), job_id=MEASURING, job_hash="0123abcd", every=10,
                   steps=[10, 20], seconds=2.0, train_seconds=40.0)  # fmt: skip
    write_affinity(store.paths(MEASURING).affinity, aff)
    plan = [r for r in read_json(store.plan_json) if r["id"] != MEASURING]  # the AU job, now measuring
    plan.append({"id": MEASURING, "hash": "0123abcd", "fraction": 1.0, "affinity": True,
                 "tasks": [{"id": t} for t in ids]})  # fmt: skip
    store.write_plan(plan)
    store.mark_results_fresh()
    return run


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Analysis]:
    root = tmp_path_factory.mktemp("layout")
    fmc = simulate_run_store(root / "fmc", load_tasks(FMC), paradigms=("TS", "CG", "AU", "TSM", "AUD"),
                             fractions=(0.5, 1.0))  # fmt: skip
    demo = load_input(_demo_shaped(root), None)
    demo = dataclasses.replace(demo, designed_groups=designed_groups(list(SYNTH)))  # as the synthetic benchmark has
    tiny = load_input(_demo_shaped(root, "tiny", TINY), None)
    return {"fmc27": analyse(load_input(fmc, None)), "demo": analyse(demo), "tiny": analyse(tiny)}


def _drawn(fig, monkeypatch: pytest.MonkeyPatch) -> list[Text]:  # type: ignore[no-untyped-def]
    """The non-empty texts a full draw of `fig` renders, in drawing order."""
    drawn: list[Text] = []
    original = Text.draw

    def record(self: Text, renderer) -> None:  # type: ignore[no-untyped-def]
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        original(self, renderer)

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # a Figure made without pyplot has no renderer of its own
    with monkeypatch.context() as m:
        m.setattr(Text, "draw", record)
        fig.canvas.draw()
    return list(dict.fromkeys(drawn))


def _corners(t: Text, renderer) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The text's rotated rectangle (4 x 2 display px) recovered from its axis-aligned extent, GAP_EM / 2 wider at
    each end and SLACK lower at each side."""
    bb = t.get_window_extent(renderer)
    r = math.radians(t.get_rotation())
    c, s = abs(math.cos(r)), abs(math.sin(r))
    big, small = (bb.width, bb.height) if c >= s else (bb.height, bb.width)
    if abs(c - s) < 1e-3:  # 45°: the extent does not say which side is long; take the box
        w, h = bb.width, bb.height
        r = 0.0
    else:
        k = max(c, s) ** 2 - min(c, s) ** 2
        w = (big * max(c, s) - small * min(c, s)) / k
        h = (small * max(c, s) - big * min(c, s)) / k
    pad = GAP_EM * t.get_fontsize() * t.figure.dpi / 72  # along the text: neighbours need a space between them
    w, h = w + pad, max(h - 2 * SLACK, 0.1)
    rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    half = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    return half @ rot.T + np.array([(bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2])


def _overlap(p: np.ndarray, q: np.ndarray) -> bool:
    """Separating-axis test of two convex polygons."""
    for poly in (p, q):
        for i in range(len(poly)):
            edge = poly[(i + 1) % len(poly)] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            a, b = p @ axis, q @ axis
            if a.max() <= b.min() or b.max() <= a.min():
                return False
    return True


def _box(bb) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([[bb.x0, bb.y0], [bb.x1, bb.y0], [bb.x1, bb.y1], [bb.x0, bb.y1]])


def _owner(fig) -> dict[int, object]:  # type: ignore[no-untyped-def]
    """id(text) -> the top-level axes that holds it (secondary axes count as their parent's); figure texts absent."""
    out: dict[int, object] = {}
    for ax in fig.axes:
        for t in ax.findobj(Text):
            out.setdefault(id(t), ax)
    return out


def _same_place(a, b, renderer) -> bool:  # type: ignore[no-untyped-def]
    """Twin axes (twinx) share their box with their host."""
    pa, pb = a.get_window_extent(renderer), b.get_window_extent(renderer)
    return np.allclose(pa.get_points(), pb.get_points(), atol=1)


def layout_problems(fig, monkeypatch: pytest.MonkeyPatch) -> list[str]:  # type: ignore[no-untyped-def]
    """What a reader of the printed figure would see collide, [] when nothing does."""
    texts = _drawn(fig, monkeypatch)
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    problems = []
    rects = {id(t): _corners(t, renderer) for t in texts}
    for t in texts:
        bb = t.get_window_extent(renderer)
        if bb.x0 < page.x0 - 1 or bb.y0 < page.y0 - 1 or bb.x1 > page.x1 + 1 or bb.y1 > page.y1 + 1:
            problems.append(f"text {t.get_text()!r} leaves the figure")
    for a, b in itertools.combinations(texts, 2):
        if _overlap(rects[id(a)], rects[id(b)]):
            problems.append(f"texts {a.get_text()!r} and {b.get_text()!r} overlap")
    owner = _owner(fig)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    areas = {id(ax): _box(ax.get_window_extent(renderer).padded(-SLACK)) for ax in axes}
    for t in texts:
        home = owner.get(id(t))
        for ax in axes:
            if ax is home or (home is not None and _same_place(ax, home, renderer)):
                continue
            if _overlap(rects[id(t)], areas[id(ax)]):
                problems.append(f"text {t.get_text()!r} lies on another panel ({ax.get_title() or ax.get_label()})")
    for a, b in itertools.combinations(axes, 2):
        if not _same_place(a, b, renderer) and _overlap(areas[id(a)], areas[id(b)]):
            problems.append(f"panels {a.get_title() or a.get_label()!r} and {b.get_title() or b.get_label()!r} overlap")
    legends = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in axes)] if lg is not None]
    for lg in legends:
        box = lg.get_window_extent(renderer)
        for ax in axes:
            pts = _data_points(ax)
            if len(pts) and box.count_contains(pts):
                problems.append(f"a legend covers {box.count_contains(pts)} data points of {ax.get_title()!r}")
    return problems


def _data_points(ax) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Display coordinates of the plotted points (line vertices, scatter and bar centres) inside the axes."""
    pts = [line.get_transform().transform(line.get_xydata()) for line in ax.get_lines() if len(line.get_xydata())]
    for c in ax.collections:
        off = c.get_offsets()
        if len(off):
            pts.append(c.get_offset_transform().transform(off))
    for p in ax.patches:
        bb = p.get_window_extent()
        pts.append(np.array([[(bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2]]))
    if not pts:
        return np.zeros((0, 2))
    allp = np.concatenate(pts)
    allp = allp[np.isfinite(allp).all(axis=1)]
    inside = ax.get_window_extent().padded(-SLACK)
    return allp[[inside.contains(x, y) for x, y in allp]]


CASES = [(s, name) for s in ("fmc27", "demo") for name, _ in FIGURES]
CASES += [("tiny", name) for name in ("fig_affinity", "fig_affinity_delta")]


@pytest.mark.slow  # two simulated studies analysed, every figure drawn
@pytest.mark.parametrize(("study", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_figure_reads_at_print_size(studies: dict[str, Analysis], study: str, name: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with paper_style():
        made = dict(FIGURES)[name](studies[study])
        if made is None:
            pytest.skip(f"{name} is not drawn for {study}")
        problems = layout_problems(made[0], monkeypatch)
    assert problems == []


def test_symlog_rule_only_where_one_bar_dwarfs_the_rest() -> None:
    assert symlog_threshold([1.0, -3.0, 4.0, 2.0, 5.0, -2.0, 3.0, 1.0, 2.0, 4.0]) is None
    # 90th percentile of |Δ| 5.0 -> a linear part of ±5; 226 > 4 x 5; 6.5 would round up to 10
    assert symlog_threshold([1.0, -3.0, 4.0, 2.0, 5.0, -2.0, 3.0, 1.0, 2.0, 4.0, 5.0, 226.0]) == 5.0
    assert symlog_threshold([1.0, 6.0, 6.5, 6.5, 2.0, 3.0, 1.0, 2.0, 4.0, 5.0, 226.0]) == 10.0


@pytest.mark.slow
def test_delta_figure_of_the_demo_study_goes_symlog(studies: dict[str, Analysis]) -> None:
    with paper_style():
        fig, cap = fig_delta(studies["demo"])
        fmc_fig, fmc_cap = fig_delta(studies["fmc27"])
    ax = fig.axes[1]
    assert ax.get_xscale() == "symlog" and "logarithmic beyond" in cap
    assert fmc_fig.axes[1].get_xscale() == "linear" and "symlog" not in fmc_cap
    _, hi = ax.get_xlim()
    assert hi > 200  # the +226 % bar is still drawn whole


@pytest.mark.slow
def test_absolute_figure_has_an_interval_per_bar_with_one_seed(studies: dict[str, Analysis]) -> None:
    from matplotlib.collections import LineCollection

    with paper_style():
        fig, cap = fig_absolute(studies["demo"])
    n_bars = sum(len(ax.patches) for ax in fig.axes)
    segs = [s for ax in fig.axes for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()]
    assert len(segs) == n_bars == 4 * 6  # four representative tasks, six paradigms
    assert all(s[0][1] < s[1][1] for s in segs)
    assert "percentile bootstrap over the test images" in cap


@pytest.mark.slow
def test_affinity_colours_centre_on_zero_and_clip_the_large_cell(studies: dict[str, Analysis]) -> None:
    with paper_style():
        fig, cap = fig_affinity(studies["demo"])
    (im,) = fig.axes[0].get_images()
    lo, hi = im.get_clim()
    assert lo == -hi and 0 < hi < 0.05  # the 0.2 cell does not set the scale
    dots = fig.axes[0].collections[-1].get_offsets()
    assert [1.0, 0.0] in np.asarray(dots).tolist()  # (column, row): fetal_head onto fetal_head_biometry, 0.2
    assert "95th percentile" in cap and "dotted" in cap


def test_absolute_figure_cuts_a_seed_interval_at_the_metric_bound(tmp_path: Path) -> None:
    """A t interval of the seed mean knows no bound: AUCs of 1.0, 1.0 and 0.6 give one reaching past 1.4, which the
    figure cuts at 1 (an AUC cannot pass it), the axis ending just above 1 and the caption saying so."""
    from matplotlib.collections import LineCollection

    tasks = [{"id": t.id, "type": t.type, "num_classes": t.num_classes, "group": t.group} for t in SYNTH.values()]
    run = simulate_run_store(tmp_path / "s", tasks, paradigms=("TS", "AU"), seeds=(0, 1, 2),
                             representative=["breast_lesion_cls"])  # fmt: skip
    store = RunStore(run)
    rows = [
        dataclasses.replace(r, value=(1.0, 1.0, 0.6)[r.seed])
        if (r.task, r.paradigm, r.metric) == ("breast_lesion_cls", "AU", "AUC")
        else r
        for r in read_results(store.results_csv).rows
    ]
    write_results(rows, store.results_csv)
    store.mark_results_fresh()
    with paper_style():
        fig, cap = fig_absolute(analyse(load_input(run, None)))
    (ax,) = fig.axes
    segs = [s for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()]
    assert max(s[1][1] for s in segs) == 1.0  # the AU interval, cut at AUC's bound
    assert ax.get_ylim() == (0.0, 1.0 + BOUND_MARGIN)  # the axis does not run on to the uncut 1.4
    assert "cut at the range their metric can take (1 interval cut: AUC)" in cap
    # each seed's value drawn (a reviewer could not see that a mean hid a bimodal spread), and AUC's chance level
    from matplotlib.collections import PathCollection

    dots = [tuple(xy) for c in ax.collections if isinstance(c, PathCollection) for xy in c.get_offsets()]
    au = sorted(y for _, y in dots if y in (1.0, 0.6))
    assert len(dots) == 2 * 3 and au == [0.6, 1.0, 1.0]  # TS and AU, three seeds each
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.5 for line in ax.get_lines())
    assert "Circles: each seed's value." in cap and "Dashed line: chance (AUC 0.5)." in cap


@pytest.mark.slow
def test_affinity_delta_writes_tiny_affinities_in_readable_units(studies: dict[str, Analysis]) -> None:
    """Affinities near 1e-6 are drawn in units of 10⁻⁶ named in the x label, so matplotlib writes no offset text
    '1e-6' at the label's end (where it ran into the label's last word)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with paper_style():
        fig, cap = fig_affinity_delta(studies["tiny"])
        plain, _ = fig_affinity_delta(studies["demo"])
        FigureCanvasAgg(fig).draw()  # the offset text is set when the ticks are
    ax = fig.axes[0]
    assert ax.get_xlabel().endswith("(×10⁻⁶)") and "in units of 10⁻⁶" in cap
    assert ax.xaxis.get_offset_text().get_text() == ""
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
    assert 1 <= np.abs(xs).max() < 1000  # the values drawn are in those units
    assert plain.axes[0].get_xlabel() == "mean affinity onto the task from its model mates"  # 0.01: plain ticks
