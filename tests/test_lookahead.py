"""The lookahead step of the affinity (issue 25.7): `sgd` is theta - lr·g, `adamw` one true AdamW step on a copy of
the optimiser; each against an independent computation, the real optimiser untouched, the training the same
whichever is chosen, and a bad value a spec error naming the field."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.tiny_study import FETAL_HEAD, MALIGNANCY, write_tiny_study
from usagg.affinity import read_affinity
from usagg.engine.affinity import adamw_step, sgd_step
from usagg.engine.trainer import Trainer
from usagg.errors import SpecError
from usagg.plan import Job
from usagg.spec.models import AffinitySpec


def _net_and_adamw(steps: int = 3) -> tuple[nn.Sequential, torch.optim.AdamW]:
    """A small net and the job's kind of AdamW (fused, a decayed and an undecayed group) after `steps` real steps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    decay = [p for p in net.parameters() if p.ndim > 1]
    plain = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "lr": 3e-3, "weight_decay": 0.05, "name": "encoder"},
            {"params": plain, "lr": 3e-3, "weight_decay": 0.0, "name": "encoder_no_decay"},
        ],
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=True,
    )
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(8, 5)).pow(2).mean().backward()
        opt.step()
    return net, opt


def _grads(net: nn.Module) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn_like(p) for p in net.parameters()]


def _state(opt: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    return {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}


def test_sgd_step_is_theta_minus_lr_g() -> None:
    net, _ = _net_and_adamw(0)
    params, grads = list(net.parameters()), _grads(net)
    grads[1] = None  # a parameter the loss does not reach stays put
    got = sgd_step(params, grads, 0.25)
    for p, g, q in zip(params, grads, got, strict=True):
        want = p.detach() if g is None else p.detach() - 0.25 * g
        assert torch.equal(q, want)
        assert q is not p


def test_adamw_step_equals_a_copied_adamw_stepped_by_hand() -> None:
    net, opt = _net_and_adamw()
    params, grads = list(net.parameters()), _grads(net)
    got = adamw_step(opt, params, grads)

    # the independent computation: the whole (model, optimiser) pair deep-copied, the copy's AdamW stepped on g
    net2, opt2 = copy.deepcopy((net, opt))
    for p, g in zip(net2.parameters(), grads, strict=True):
        p.grad = g.clone()
    opt2.step()
    for q, p2 in zip(got, net2.parameters(), strict=True):
        assert torch.equal(q, p2.detach())

    # and AdamW's formula written out in float64: momentum, both bias corrections, decoupled decay
    for p, g, q in zip(params, grads, got, strict=True):
        s = opt.state[p]
        group = next(gr for gr in opt.param_groups if any(x is p for x in gr["params"]))
        (b1, b2), eps, lr, wd = group["betas"], group["eps"], group["lr"], group["weight_decay"]
        t = float(s["step"]) + 1
        m = b1 * s["exp_avg"].double() + (1 - b1) * g.double()
        v = b2 * s["exp_avg_sq"].double() + (1 - b2) * g.double() ** 2
        want = p.detach().double() * (1 - lr * wd) - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        assert torch.allclose(q.double(), want, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(q, p.detach())


def test_adamw_step_leaves_the_real_optimiser_and_parameters_untouched() -> None:
    net, opt = _net_and_adamw()
    before, weights = _state(opt), [p.detach().clone() for p in net.parameters()]
    grads_before = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    adamw_step(opt, list(net.parameters()), _grads(net), lr=0.5)
    after = _state(opt)
    assert before.keys() == after.keys()
    for k in before:
        for name in before[k]:
            assert torch.equal(before[k][name], after[k][name]), name
    assert groups == [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    assert all(torch.equal(w, p) for w, p in zip(weights, net.parameters(), strict=True))
    grads_after = [p.grad for p in net.parameters() if p.grad is not None]
    assert len(grads_after) == len(grads_before) == 4  # the last training step's gradients, as they were
    assert all(torch.equal(a, b) for a, b in zip(grads_before, grads_after, strict=True))


def test_adamw_step_takes_the_first_step_without_state_skips_a_missing_gradient_and_honours_lr() -> None:
    net, _ = _net_and_adamw(0)
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)  # no state yet
    grads = _grads(net)
    grads[2] = None
    got = adamw_step(opt, params, grads, lr=0.01)
    for p, g, q in zip(params, grads, got, strict=True):
        if g is None:
            assert torch.equal(q, p.detach())
        else:  # AdamW's first step: m_hat = g, v_hat = g², so lr · g / (|g| + eps)
            assert torch.allclose(q, p.detach() - 0.01 * g / (g.abs() + 1e-8), atol=1e-7)
    assert not opt.state


@pytest.mark.parametrize(
    ("value", "expected"),
    [({"lookahead": "adam"}, "lookahead"), ({"lookahead": 1}, "lookahead"), ({"lookahead": None}, "lookahead")],
)
def test_a_bad_lookahead_is_a_spec_error_naming_the_field(tmp_path: Path, value: dict, expected: str) -> None:
    import yaml

    from usagg.spec.load import study_from_mapping

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "studies" / "demo.yaml").read_text())
    raw["analysis"]["affinity"] = value
    with pytest.raises(SpecError) as err:
        study_from_mapping(raw, tmp_path / "demo.yaml")
    text = str(err.value)
    assert "analysis.affinity.lookahead" in text and "sgd" in text and "adamw" in text, text


def test_the_lookahead_is_in_a_measuring_jobs_hash_and_defaults_to_sgd(tmp_path: Path) -> None:
    import yaml

    from usagg.plan import plan
    from usagg.spec.load import study_from_mapping

    assert AffinitySpec().lookahead == "sgd"  # the measured default (docs/benchmarks.md)
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "studies" / "demo.yaml").read_text())
    ids = {}
    for step in ("sgd", "adamw"):
        raw["analysis"]["affinity"] = {"lookahead": step}
        ids[step] = {j.id for j in plan(study_from_mapping(copy.deepcopy(raw), tmp_path / "demo.yaml"))}
    changed = ids["sgd"] ^ ids["adamw"]
    assert changed and all(i.startswith("AU-") for i in changed)  # only the job that measures reruns


def test_an_affinity_file_records_its_lookahead_and_an_older_one_reads(tmp_path: Path) -> None:
    path = tmp_path / "affinity.json"
    raw = {"tasks": ["a", "b"], "matrix": [[0.1, 0.0], [0.0, 0.2]], "format": 1}
    path.write_text(json.dumps(raw))
    assert read_affinity(path).lookahead == ""  # written before the field existed
    path.write_text(json.dumps({**raw, "lookahead": "sgd"}))
    assert read_affinity(path).lookahead == "sgd"


# ----- on a tiny real model (slow): the measurement's steps, and the training it watches


def _au(tmp: Path, lookahead: str) -> Job:
    from usagg.plan import plan
    from usagg.spec.load import load_study

    spec = write_tiny_study(
        tmp / f"study-{lookahead}.yaml",
        "lookahead-test",
        tmp,
        paradigms=("TS", "AU", "AG"),
        tasks=(MALIGNANCY, FETAL_HEAD),
        epochs=2,
        steps=2,
        model={"moe": {"experts": 4}, "heads": {"hidden": 32, "decoder_channels": 8}},
        training={"batch_size": 6, "warmup_epochs": 0.5},
        extra={"analysis": {"affinity": {"every": 2, "probe_size": 3, "lookahead": lookahead}}},
    )
    (job,) = [j for j in plan(load_study(spec)) if j.paradigm == "AU"]
    assert job.affinity is not None and job.affinity.lookahead == lookahead
    return job


def _trainer(job: Job, ckpt: Path) -> Trainer:
    from test_engine_trainer import _trainer as engine_trainer

    return engine_trainer(job, ckpt)


def _hand_lookahead(tr: Trainer, lookahead: str, lr: float) -> torch.Tensor:
    """Z by hand: for each source task, a deep copy of (model, optimiser); its encoder stepped on the source's step
    batch (sgd: p -= lr·g; adamw: the copied AdamW stepped with only the encoder's gradients), losses compared."""
    aff, tasks = tr.affinity, list(tr.train)
    assert aff is not None
    want = torch.zeros(len(tasks), len(tasks), dtype=torch.float64)
    for i, src in enumerate(tasks):
        model, opt = copy.deepcopy((tr.model, tr.optimizer))
        model.eval()
        ref = copy.deepcopy(tr.model).eval()
        encoder = {id(p) for p in model.param_groups()["encoder"]}
        x, y = aff.step_probes[src]
        out = model(x, src, y)
        (out.loss - out.aux_loss).backward()
        with torch.no_grad():
            for p in model.parameters():
                if id(p) not in encoder:
                    p.grad = None  # heads are not stepped
            if lookahead == "sgd":
                for p in model.parameters():
                    if p.grad is not None:
                        p -= lr * p.grad
            else:
                opt.step()
            for j, tgt in enumerate(tasks):
                xj, yj = aff.probes[tgt]
                before, after = ref(xj, tgt, yj), model(xj, tgt, yj)
                want[i, j] = 1 - float(after.loss - after.aux_loss) / float(before.loss - before.aux_loss)
    return want


@pytest.mark.slow
@pytest.mark.parametrize("lookahead", ["sgd", "adamw"])
def test_the_measured_lookahead_equals_a_hand_computed_one(tmp_path: Path, lookahead: str) -> None:
    tr = _trainer(_au(tmp_path, lookahead), tmp_path / "ck")
    tr.train_epoch(0)  # AdamW has moments and a step count now
    assert tr.affinity is not None
    state = _state(tr.optimizer)
    lr = 0.05 if lookahead == "sgd" else tr.optimizer.param_groups[0]["lr"]
    got = tr.affinity.measure(99, lr, tr.optimizer)
    want = _hand_lookahead(tr, lookahead, lr)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6), (got, want)
    assert got.abs().max() > 1e-4  # a real change of the losses, not float noise
    after = _state(tr.optimizer)
    assert all(torch.equal(state[k][n], after[k][n]) for k in state for n in state[k])  # the real optimiser untouched


@pytest.mark.slow
def test_the_trained_model_is_bit_identical_whichever_lookahead(tmp_path: Path) -> None:
    trainers = {k: _trainer(_au(tmp_path, k), tmp_path / k) for k in ("sgd", "adamw")}
    fits = {k: tr.fit() for k, tr in trainers.items()}
    assert fits["sgd"].history == fits["adamw"].history
    a, b = trainers["sgd"], trainers["adamw"]
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    for p, q in zip(a.optimizer.state.values(), b.optimizer.state.values(), strict=True):
        assert all(torch.equal(p[n], q[n]) for n in p)
    assert a.affinity is not None and b.affinity is not None and a.affinity.steps == b.affinity.steps == [2, 4]
    za, zb = a.affinity.record(1.0), b.affinity.record(1.0)
    assert (za.lookahead, zb.lookahead) == ("sgd", "adamw") and za.matrix != zb.matrix
    assert all(math.isfinite(v) for row in za.matrix + zb.matrix for v in row)
