"""How stable AG's grouping is under the affinity's own measurement noise (usagg/grouping.py `grouping_stability`):
the per-measurement losses the engine keeps (usagg/engine/affinity.py), carried by the record (usagg/affinity.py)
through checkpoints, files and seed means, resampled in circular blocks of consecutive measurements (`block_indices`,
`block_length`), and the report's note on it (usagg/analysis/tables.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, rand_score

from usagg.affinity import Affinity, mean_affinity, read_affinity, write_affinity
from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.tables import ag_group_table, stability_line, stability_notes
from usagg.engine.affinity import LookaheadAffinity
from usagg.engine.device import Compute
from usagg.errors import UsaggError
from usagg.grouping import (
    STABILITY_DRAWS,
    adjusted_rand_index,
    block_indices,
    block_length,
    choose_groups,
    grouping_stability,
    rand_index,
    resampled_matrices,
)
from usagg.spec.models import AffinitySpec
from usagg.store import RunStore

TASKS = [f"t{i}" for i in range(9)]
#: Nine tasks planted in four groups, as AG's default k for the demo's clinical groups.
PLANTED = [0, 0, 0, 1, 1, 2, 2, 2, 3]
PLANTED_GROUPS = (("t0", "t1", "t2"), ("t3", "t4"), ("t5", "t6", "t7"), ("t8",))
UNSTABLE = "does not fix AG's whole grouping beyond its measurement noise"


def _record(z: np.ndarray, measurements: int, noise: float, seed: int, jobs: int = 1) -> Affinity:
    """A seed mean of `jobs` measuring jobs' records, each with `measurements` losses whose affinity is z plus
    measurement noise of sd `noise`; every matrix from the losses as the engine computes it (sums, then divide)."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(jobs):
        base = rng.uniform(0.5, 1.5, (measurements, len(z)))
        after = base[:, None, :] * (1.0 - z - rng.normal(0, noise, (measurements, len(z), len(z))))
        matrix = 1.0 - after.sum(axis=0) / base.sum(axis=0)
        tasks = [f"t{i}" for i in range(len(z))]
        records.append(Affinity(tasks, matrix.tolist(), base_losses=[base.tolist()], after_losses=[after.tolist()]))
    return mean_affinity(records)


def _blocks(within: float, between: float) -> np.ndarray:
    return np.where(np.equal.outer(PLANTED, PLANTED), within, between)


def test_a_strong_block_structure_is_chosen_again_in_every_resample() -> None:
    aff = _record(_blocks(0.02, -0.01), measurements=5, noise=0.002, seed=0)
    assert choose_groups(aff, 4).groups == PLANTED_GROUPS
    st = grouping_stability(aff, 4)
    assert st is not None and not st.not_computed
    assert (st.draws, st.measurements, st.same, st.mean_ari) == (STABILITY_DRAWS, (5,), 1.0, 1.0)
    assert st.blocks == (1,)  # 5 measurements (every: auto) are too few for blocks: drawn one at a time
    assert st.together == {(a, b): 1.0 for g in PLANTED_GROUPS for i, a in enumerate(g) for b in g[i + 1 :]}
    notes = stability_notes(aff, list(PLANTED_GROUPS))
    assert notes == [
        "Stability: over 200 resamples of the affinity's 5 measurements (drawn one at a time with replacement: fewer "
        "than 8 per job are too few for blocks; Z recomputed, groups searched again with the same k), AG's grouping "
        "was chosen again in 100 %, mean adjusted Rand index 1.00; pairs kept together in at least 80 % of "
        "resamples: t0 + t1 (100 %), t0 + t2 (100 %), t1 + t2 (100 %), t3 + t4 (100 %), t5 + t6 (100 %), "
        "t5 + t7 (100 %), t6 + t7 (100 %)."
    ]


def test_pure_noise_is_rarely_chosen_again_and_the_report_says_so() -> None:
    aff = _record(np.zeros((9, 9)), measurements=5, noise=1e-4, seed=1)  # |Z| ~ 1e-4, as the demo's
    chosen = choose_groups(aff, 4).groups
    st = grouping_stability(aff, 4)
    assert st is not None
    # bootstrap draws share the record's measurements, so they agree with its grouping more than chance (ARI 0)
    assert st.same == 0.12 and st.mean_ari == pytest.approx(0.4404, abs=1e-4)
    assert max(st.together.values()) == 0.77  # t0 + t5: no pair of AG's groups is kept in 80 % of draws
    notes = stability_notes(aff, list(chosen))
    assert "chosen again in 12 %, mean adjusted Rand index 0.44" in notes[0] and "resamples: none." in notes[0]
    assert UNSTABLE in notes[1] and "fewer than 50 % of the resamples" in notes[1]
    assert "(Resampling draws single measurements, as if those taken at different points of training were " in notes[1]
    assert "a job of 8 or more measurements, with a smaller analysis.affinity.every, is drawn in runs" in notes[1]


def test_the_same_record_gives_the_same_numbers_and_seeds_are_resampled_within_their_jobs() -> None:
    aff = _record(_blocks(0.0004, 0.0), measurements=4, noise=2e-4, seed=2, jobs=2)
    assert len(aff.base_losses) == 2 and len(aff.after_losses[1]) == 4
    first, again = grouping_stability(aff, 4), grouping_stability(aff, 4)
    assert first == again and first is not None and first.measurements == (4, 4)
    assert first.same == 0.965 and first.mean_ari == pytest.approx(0.9902, abs=1e-4)  # a weak block, still held
    assert np.array_equal(resampled_matrices(aff, 50, 0), resampled_matrices(aff, 50, 0))
    assert not np.array_equal(resampled_matrices(aff, 50, 0), resampled_matrices(aff, 50, 1))
    notes = stability_notes(aff, list(PLANTED_GROUPS))
    assert "8 measurements (drawn one at a time with replacement within each of its 2 jobs (4 + 4): " in notes[0]
    assert "chosen again in 96 %" in notes[0] and "t5 + t6 (96 %)" in notes[0] and len(notes) == 1


def test_a_resample_recomputes_z_from_the_sums_as_the_engine_and_the_seed_mean_do() -> None:
    """Every measurement of a job alike: each resample's sums are M times one measurement, so every draw is exactly
    the record's matrix (the mean over the jobs' matrices)."""
    rng = np.random.default_rng(3)
    jobs = []
    for _ in range(2):
        base, after = rng.uniform(0.5, 1.5, 4), rng.uniform(0.5, 1.5, (4, 4))
        matrix = 1.0 - (3 * after) / (3 * base)
        jobs.append(Affinity(TASKS[:4], matrix.tolist(), base_losses=[[base.tolist()] * 3],
                             after_losses=[[after.tolist()] * 3]))  # fmt: skip
    aff = mean_affinity(jobs)
    draws = resampled_matrices(aff, 20, 0)
    assert np.allclose(draws, np.asarray(aff.matrix)[None], rtol=0, atol=1e-15)


def test_too_few_measurements_no_losses_and_a_beam_search_are_said_not_computed() -> None:
    one = _record(_blocks(0.02, -0.01), measurements=1, noise=0.002, seed=0)
    assert grouping_stability(one, 4) is None
    assert "kept a single measurement" in stability_notes(one, list(PLANTED_GROUPS))[0]
    old = Affinity(TASKS, _blocks(0.02, -0.01).tolist())
    assert grouping_stability(old, 4) is None
    assert stability_notes(old, list(PLANTED_GROUPS)) == [
        "Stability of AG's groups under the affinity's measurement noise not computed: the affinity record keeps no "
        "per-measurement losses (written by an earlier usagg)."
    ]
    twelve = np.where(np.equal.outer(np.arange(12) % 4, np.arange(12) % 4), 0.02, -0.01)
    big = _record(twelve, 3, 0.002, 0)
    groups = [tuple(f"t{i}" for i in range(12) if i % 4 == g) for g in range(4)]
    st = grouping_stability(big, 4, groups)  # S(12, 4) = 611,501 partitions: AG searched with a beam
    assert (
        st is not None and np.isnan(st.same) and st.not_computed.startswith("AG's search was a beam search (6.12e+05")
    )
    # a study that set AG's search to beam: its 9 tasks were grouped by the beam, so the check does not claim more
    strong = _record(_blocks(0.02, -0.01), measurements=5, noise=0.002, seed=0)
    (beam,) = stability_notes(strong, list(PLANTED_GROUPS), "beam")
    assert "not computed: AG's search was a beam search (7.77e+03 partitions)" in beam
    with pytest.raises(ValueError, match="not a partition"):
        grouping_stability(big, 4, groups[:3])


@pytest.mark.parametrize("seed", range(5))
def test_the_rand_indices_are_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 3, 8), rng.integers(0, 4, 8)
    da, db = ({f"t{i}": f"g{v}" for i, v in enumerate(x)} for x in (a, b))
    assert adjusted_rand_index(da, db) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert rand_index(da, db) == pytest.approx(rand_score(a, b), abs=1e-12)
    assert adjusted_rand_index(da, da) == rand_index(da, da) == 1.0
    assert adjusted_rand_index({"a": "x", "b": "x"}, {"a": "y", "b": "y"}) == 1.0  # one group each: identical groupings


# ----- the resampling: circular blocks of consecutive measurements, in the order they were taken


def _series(m: int, seed: int, walk: bool, n: int = 3) -> tuple[Affinity, np.ndarray]:
    """One job of `m` measurements of n tasks, base losses 1 and after losses 1 - e, so Z is the mean of e over the
    measurements and the i.i.d. bootstrap's spread of an entry is known: sd(e) / sqrt(m). e is a random walk along
    training (each measurement's loss ratio one step from the last: strongly autocorrelated) or independent."""
    e = np.random.default_rng(seed).normal(0, 0.01, (m, n, n))
    if walk:
        e = np.cumsum(e, axis=0)
    base = np.ones((m, n))
    aff = Affinity(TASKS[:n], e.mean(axis=0).tolist(), base_losses=[base.tolist()], after_losses=[(1.0 - e).tolist()])
    return aff, e


def test_the_block_length_is_the_cube_root_of_the_measurements_with_at_least_four_blocks_a_draw() -> None:
    counts = [1, 2, 5, 7, 8, 11, 12, 26, 27, 28, 64, 65, 125, 126]
    assert [block_length(m) for m in counts] == [
        1,
        1,
        1,
        1,
        2,
        2,
        3,
        3,
        3,
        4,
        4,
        5,
        5,
        6,
    ]  # 27: 3, not ceil(3.0000000000000004)
    assert all(block_length(m) ** 3 >= m or block_length(m) == m // 4 for m in range(8, 500))


def test_block_length_1_is_the_iid_bootstrap() -> None:
    """Same numbers as the i.i.d. bootstrap from the same generator (the one grouping_stability drew before), and its
    distribution: draws centred on the record, an entry's variance the plug-in variance over m."""
    assert np.array_equal(
        block_indices(5, 1, 40, np.random.default_rng(3)), np.random.default_rng(3).integers(0, 5, (40, 5))
    )
    aff, e = _series(16, 0, walk=False)
    draws = resampled_matrices(aff, 20_000, 0, block=1)
    pick = np.random.default_rng(0).integers(0, 16, (20_000, 16))
    assert np.allclose(draws, 1.0 - (1.0 - e)[pick].sum(axis=1) / 16, rtol=0, atol=1e-14)
    assert np.allclose(draws.mean(axis=0), e.mean(axis=0), rtol=0, atol=4 * (e.std(axis=0) / 4).max() / np.sqrt(20_000))
    assert np.allclose(draws.var(axis=0) / (e.var(axis=0) / 16), 1.0, atol=0.05)
    # 5 measurements (every: auto) are drawn one at a time: the same matrices as block 1, the committed reports' numbers
    five = _record(_blocks(0.02, -0.01), measurements=5, noise=0.002, seed=0)
    assert np.array_equal(resampled_matrices(five, 50, 0), resampled_matrices(five, 50, 0, block=1))


@pytest.mark.parametrize("seed", range(3))
def test_blocks_widen_the_spread_of_autocorrelated_measurements_and_barely_change_independent_ones(seed: int) -> None:
    """64 measurements (blocks of 4): where the loss ratio is a random walk along training, the block bootstrap's
    spread of Z is about 1.8-1.9 times the i.i.d. one's (an i.i.d. draw of single measurements breaks the walk and
    understates it); independent measurements come out a little narrower (0.9-1.0), not wider."""
    walk, e = _series(64, seed, walk=True)
    iid_sd = e.std(axis=0) / 8  # the i.i.d. bootstrap's sd of each entry of Z, sd(e) / sqrt(64)
    ratio = resampled_matrices(walk, 4000, 0).std(axis=0) / iid_sd
    assert np.median(ratio) > 1.7 and ratio.min() > 1.5
    single = resampled_matrices(walk, 4000, 0, block=1).std(axis=0) / iid_sd
    assert np.allclose(single, 1.0, atol=0.06)
    independent, f = _series(64, seed, walk=False)
    ratio = resampled_matrices(independent, 4000, 0).std(axis=0) / (f.std(axis=0) / 8)
    assert 0.85 < np.median(ratio) < 1.05


def test_a_draw_is_contiguous_runs_of_the_recorded_order_each_measurement_drawn_once_on_average() -> None:
    m, b, draws = 10, 3, 20_000
    idx = block_indices(m, b, draws, np.random.default_rng(5))
    assert idx.shape == (draws, m)
    runs = [idx[:, s : s + b] for s in range(0, m, b)]  # ceil(10 / 3) = 4 blocks, the last cut to 1
    assert [r.shape[1] for r in runs] == [3, 3, 3, 1]
    assert all(((np.diff(r, axis=1) % m) == 1).all() for r in runs)  # consecutive, past the last to the first
    assert set(np.concatenate([r[:, 0] for r in runs]).tolist()) == set(range(m))  # a run starts anywhere
    assert set(map(tuple, runs[0].tolist())) >= {(8, 9, 0), (9, 0, 1)}  # and wraps
    counts = np.bincount(idx.ravel(), minlength=m) / draws
    assert np.allclose(counts, 1.0, atol=0.03)  # no end drawn less often (as a moving-block bootstrap draws them)
    with pytest.raises(ValueError, match="block length 6 for 5"):
        block_indices(5, 6, 1, np.random.default_rng(0))


def test_each_job_is_resampled_in_its_own_blocks_from_one_generator_and_the_stability_says_which() -> None:
    """resampled_matrices is block_indices per job, jobs in order from one seeded generator, Z from the sums."""
    aff = _record(_blocks(0.0004, 0.0), measurements=12, noise=2e-4, seed=2, jobs=2)
    rng = np.random.default_rng(7)
    expected = np.zeros((30, 9, 9))
    for base, after in zip(aff.base_losses, aff.after_losses, strict=True):
        pick = block_indices(12, 3, 30, rng)
        expected += 1.0 - np.asarray(after)[pick].sum(axis=1) / np.asarray(base)[pick].sum(axis=1)[:, None, :]
    assert np.allclose(resampled_matrices(aff, 30, 7), expected / 2, rtol=0, atol=1e-15)
    assert block_indices(8, 2, 3, np.random.default_rng(0)).tolist() == [
        [6, 7, 5, 6, 4, 5, 2, 3],
        [2, 3, 0, 1, 0, 1, 0, 1],
        [1, 2, 6, 7, 5, 6, 7, 0],
    ]  # seed 0's draws, the same on every machine
    first, again = grouping_stability(aff, 4), grouping_stability(aff, 4)
    assert first == again and first is not None and (first.measurements, first.blocks) == ((12, 12), (3, 3))
    (note,) = stability_notes(aff, list(PLANTED_GROUPS))
    assert (
        "24 measurements (in runs of 3 consecutive measurements along training, drawn with replacement within " in note
    )
    noisy = _record(np.zeros((9, 9)), measurements=12, noise=1e-4, seed=1)
    notes = stability_notes(noisy, list(choose_groups(noisy, 4).groups))
    assert UNSTABLE in notes[1] and "(Resampling keeps runs of 3 consecutive measurements together, " in notes[1]
    assert "is stationary, alike all along training, and a run may wrap from the last measurement" in notes[1]


# ----- the engine keeps each measurement's losses, through a resume and in the file


class _Net(torch.nn.Module):
    """A shared linear 'encoder' read by every task (a task's loss: squared error against its targets)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = torch.nn.Linear(3, 1)

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"encoder": list(self.enc.parameters())}

    def forward(self, x: torch.Tensor, task: str, y: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=((self.enc(x).squeeze(-1) - y) ** 2).mean(), aux_loss=torch.zeros(()))


class _Split:
    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(8, 3, generator=g), torch.randn(8, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]


def _measurer() -> LookaheadAffinity:
    return LookaheadAffinity(
        _Net(),  # type: ignore[arg-type]  # the measurer reads param_groups, named_parameters and forward only
        {t: _Split(i) for i, t in enumerate(("a", "b", "c"))},  # type: ignore[misc]
        AffinitySpec(every=1, probe_size=2),
        3,
        0,
        Compute(torch.device("cpu"), None),
    )


def _measure(m: LookaheadAffinity, steps: range) -> None:
    """Measure at each step, the shared weights moved between measurements as training would."""
    for step in steps:
        m.measure(step, 0.5)
        with torch.no_grad():
            m.model.enc.weight += 0.3  # type: ignore[operator, union-attr]


def test_a_resumed_measurer_keeps_the_same_losses_and_they_give_its_matrix() -> None:
    straight = _measurer()
    _measure(straight, range(1, 4))
    first = _measurer()
    _measure(first, range(1, 2))
    resumed = _measurer()
    resumed.model.load_state_dict(first.model.state_dict())
    resumed.load_state_dict(first.state_dict())
    _measure(resumed, range(2, 4))
    a, b = straight.record(1.0), resumed.record(1.0)
    assert (a.matrix, a.base_losses, a.after_losses) == (b.matrix, b.base_losses, b.after_losses)
    base, after = np.asarray(a.base_losses[0]), np.asarray(a.after_losses[0])
    assert base.shape == (3, 3) and after.shape == (3, 3, 3) and len(set(map(tuple, base.tolist()))) == 3
    assert np.allclose(1.0 - after.sum(axis=0) / base.sum(axis=0), a.matrix, rtol=0, atol=1e-15)


def test_a_checkpoint_from_before_the_kept_losses_loads_and_keeps_none() -> None:
    first = _measurer()
    _measure(first, range(1, 3))
    state = {k: v for k, v in first.state_dict().items() if k != "kept"}  # as written before losses were kept
    resumed = _measurer()
    resumed.load_state_dict(state)
    _measure(resumed, range(3, 4))
    rec = resumed.record(1.0)
    assert rec.steps == [1, 2, 3] and rec.base_losses == rec.after_losses == []
    assert grouping_stability(rec, 2) is None
    fresh = _measurer()
    fresh.load_state_dict({k: v for k, v in _measurer().state_dict().items() if k != "kept"})  # before any measure
    _measure(fresh, range(1, 3))
    assert len(fresh.record(1.0).base_losses[0]) == 2  # nothing missed: it keeps them


def test_the_losses_round_trip_through_affinity_json_and_an_older_file_reads(tmp_path: Path) -> None:
    aff = _record(_blocks(0.02, -0.01), measurements=3, noise=0.002, seed=0)
    path = tmp_path / "affinity.json"
    write_affinity(path, aff)
    back = read_affinity(path)
    assert back == aff and json.loads(path.read_text())["format"] == 1
    raw = json.loads(path.read_text())
    old = {k: v for k, v in raw.items() if k not in ("base_losses", "after_losses")}
    path.write_text(json.dumps(old))
    assert read_affinity(path).base_losses == [] and read_affinity(path).matrix == aff.matrix
    path.write_text(json.dumps({**raw, "base_losses": [raw["base_losses"][0][:2]]}))  # 2 base rows, 3 after
    with pytest.raises(UsaggError, match="not an affinity file"):
        read_affinity(path)
    assert mean_affinity([aff, back]).base_losses == [*aff.base_losses, *aff.base_losses]
    assert mean_affinity([aff, Affinity(aff.tasks, aff.matrix)]).base_losses == []  # a seed without: none


# ----- the report: the AG table of a run store carries the note, from the affinity AG grouped by


@pytest.mark.slow  # builds a simulated run store (about a second)
def test_the_ag_table_of_a_run_store_says_how_stable_its_groups_are(tmp_path: Path) -> None:
    from test_analysis_affinity import AG, IDS, MEASURING, _store

    run = _store(tmp_path)
    inp = load_input(run, None)
    table = ag_group_table(inp, compare(inp))
    assert table is not None and table.notes[-1].endswith(
        "keeps no per-measurement losses (written by an earlier usagg)."
    )
    # the affinity AG grouped by, now with its losses: noise around 0, so AG's groups (g1..g4) are not determined
    z = np.zeros((9, 9))
    noisy = dataclasses.replace(_record(z, 5, 1e-4, seed=4), tasks=IDS, job_id=MEASURING, job_hash="0123abcd")
    write_affinity(RunStore(run).paths(MEASURING).affinity, noisy)
    inp = load_input(run, None)
    assert inp.affinity is not None and inp.affinity.base_losses == noisy.base_losses
    notes = ag_group_table(inp, compare(inp)).notes  # type: ignore[union-attr]
    stability = next(n for n in notes if n.startswith("Stability:"))
    st = grouping_stability(noisy, 4, list(AG.values()))
    assert st is not None and f"chosen again in {100 * st.same:.0f} %" in stability
    assert any(UNSTABLE in n for n in notes)
    line = stability_line(inp)
    assert line is not None
    assert line.startswith(f"AG's groups came back exactly in {100 * st.same:.0f} % of 200 resamples")
    assert "of the affinity's measurements (drawn one at a time; mean adjusted Rand index" in line
    assert "does not fix the whole grouping" in line and "mean adjusted Rand index" in line


def _rounding(base_loss: float = 1.94, seed: int = 0) -> Affinity:
    """Five measurements whose lookahead moved no loss by more than 2 float32 steps: rounding, as a new user's
    2-epoch pilot at the real study's learning rate measured (50-70 % of its entries exactly 0)."""
    rng = np.random.default_rng(seed)
    base = np.full((5, 9), float(np.float32(base_loss)))
    ulp = float(np.spacing(np.float32(base_loss)))
    after = base[:, None, :] + rng.integers(-2, 3, (5, 9, 9)) * ulp
    matrix = 1.0 - after.sum(axis=0) / base.sum(axis=0)
    return Affinity(TASKS, matrix.tolist(), base_losses=[base.tolist()], after_losses=[after.tolist()])


def test_an_affinity_at_the_losses_float_resolution_is_said_to_be_rounding() -> None:
    """A step too small to move the losses in float32 measures nothing: the block bootstrap cannot tell (its ties
    repeat in every resample), so the report said AG's arbitrary groups were fixed beyond the measurement noise."""
    aff = _rounding()
    assert aff.unresolved == 1.0 and aff.at_resolution
    notes = stability_notes(aff, list(choose_groups(aff, 4).groups))
    assert notes == [
        "Stability of AG's groups under the affinity's measurement noise not computed: 100 % of the affinity's "
        "lookahead loss changes are within 4 float32 steps of none: the lookahead step is too small to move the "
        "losses, so the matrix is rounding and AG's groups chosen from it are arbitrary ties; raise "
        "analysis.affinity.lookahead_lr (or measure later in training, with more epochs), then run the study again "
        "under a new name."
    ]
    base = np.asarray(aff.base_losses[0])
    moved = base[:, None, :] * (1.0 - np.random.default_rng(1).uniform(1e-4, 1e-3, (5, 9, 9)))  # a real step
    real = dataclasses.replace(aff, after_losses=[moved.tolist()])
    assert real.unresolved == 0.0 and not real.at_resolution
    half = np.where(np.arange(9) < 5, np.asarray(aff.after_losses[0]), moved)  # 5 of 9 source rows rounding
    assert dataclasses.replace(aff, after_losses=[half.tolist()]).unresolved == pytest.approx(5 / 9)
    assert Affinity(TASKS, aff.matrix).unresolved is None  # no kept losses: nothing to say


@pytest.mark.slow  # builds a simulated run store (about a second)
def test_the_report_calls_ag_groups_from_a_rounding_affinity_arbitrary(tmp_path: Path) -> None:
    from test_analysis_affinity import IDS, MEASURING, _store

    run = _store(tmp_path)
    rounding = dataclasses.replace(_rounding(), tasks=IDS, job_id=MEASURING, job_hash="0123abcd")
    write_affinity(RunStore(run).paths(MEASURING).affinity, rounding)
    inp = load_input(run, None)
    line = stability_line(inp)
    assert line is not None and line.startswith("AG's groups are arbitrary: 100 % of the affinity's lookahead loss")
    notes = ag_group_table(inp, compare(inp)).notes  # type: ignore[union-attr]
    assert not any(n.startswith("Stability:") for n in notes)


@pytest.mark.parametrize(
    ("stored", "search"),
    [({}, "auto"), ({"paradigm_settings": {"AG": {"search": "beam"}}}, "beam"),
     ({"paradigm_settings": {"AG": {"search": "exhaustive", "groups": 3}}}, "exhaustive"),
     ({"paradigm_settings": {"AG": {"search": "nonsense"}}}, "auto"), ({"paradigm_settings": "x"}, "auto")],
)  # fmt: skip
def test_the_stored_study_says_how_ag_searched(stored: dict, search: str) -> None:
    from usagg.analysis.inputs import _ag_search

    assert _ag_search(stored) == search


@pytest.mark.slow  # trains a tiny AU and its AG
def test_usagg_run_warns_when_ag_is_planned_from_an_affinity_that_is_rounding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lookahead step too small to move any loss: `usagg run` says AG's groups are arbitrary as it plans them."""
    from cli_run import run_cli
    from tiny_study import write_tiny_study

    study = write_tiny_study(
        tmp_path / "study.yaml",
        "rounding",
        tmp_path / "data",
        paradigms=("AU", "AG"),
        epochs=1,
        steps=2,
        execution={"devices": "cpu", "cpu_jobs": 1},
        extra={"analysis": {"affinity": {"every": 1, "probe_size": 3, "lookahead_lr": 1e-12}}},
    )
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(study)], monkeypatch, capsys)
    assert code == 0, out
    said = " ".join(out.split())
    assert "AG was planned from an affinity at the losses' float resolution: 100 % of the affinity's lookahead" in said
    aff = read_affinity(next((tmp_path / "runs" / "rounding" / "jobs").glob("AU-*")) / "affinity.json")
    assert aff.at_resolution
