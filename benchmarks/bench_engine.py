"""Engine training throughput against a bare PyTorch loop over the same model, tensors and batch size.

Target (issue 5): the engine's loop (task sampler, per-task loss weights, grad
clipping, warm-up/cosine schedule, finite-loss guard, progress) reaches at
least 0.9 of the images/s of the plainest loop one could write (index the
cached uint8 tensors, normalise, forward, backward, AdamW step). Both run in
this process, interleaved round by round after a warm-up, and the medians are
compared, so a busy machine slows both alike. Also reported: a whole tiny job
(data, model, training, selection, test evaluation) and a checkpoint save.

`python -m benchmarks engine`; BENCH_ENGINE_DEVICE=cuda to bench on a GPU.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

STUDY = """
name: bench-engine
paradigms: [TS]
data:
  synthetic: {{seed: 0, image_size: {size}, default_size: 64, val_size: 8, out: {root}/synth}}
  selection_fraction: 0
  cache_dir: {root}/cache
tasks:
  - {{id: thyroid_malignancy, type: classification, num_classes: 2, group: Thyroid}}
model: {{backbone: {backbone}, image_size: {size}}}
training: {{epochs: 1, steps_per_epoch: {steps}, batch_size: {batch}, grad_clip: 1.0, warmup_epochs: 0.5}}
"""


def _settings(device: str) -> dict:
    if device == "cuda":
        return {"backbone": "dinov3_small", "size": 224, "batch": 32, "steps": 20, "rounds": 5}
    return {"backbone": "dinov3_test", "size": 64, "batch": 16, "steps": 8, "rounds": 5}


def main() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from usagg.data.datasets import to_model_input
    from usagg.engine.batches import TensorSplit, place
    from usagg.engine.checkpoint import save_atomic
    from usagg.engine.device import resolve_compute, seed_everything
    from usagg.engine.job import run_job
    from usagg.engine.jobdata import load_job_data
    from usagg.engine.trainer import Trainer
    from usagg.model.m2dino import build_model
    from usagg.plan import plan
    from usagg.spec.load import load_study

    device = torch.device(os.environ.get("BENCH_ENGINE_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
    cfg = _settings(device.type)
    with tempfile.TemporaryDirectory(prefix="usagg-bench-engine-") as tmp:
        spec = Path(tmp) / "study.yaml"
        spec.write_text(STUDY.format(root=tmp, **cfg))
        job = plan(load_study(spec))[0]
        seed_everything(0, device)
        data = load_job_data(job)
        model = build_model(job.model, job.tasks, job.moe)
        train = place({t: TensorSplit.from_dataset(ds) for t, ds in data.train.items()}, device)
        compute = resolve_compute(job.training.precision, device)
        trainer = Trainer(model, train, {}, job.tasks, job.training, compute, 0, Path(tmp) / "ck", job.id)
        task = job.task_ids[0]
        split = train[task]

        # The bare loop: same model object, same tensors, same batch size, AdamW over the same parameters.
        params = [p for p in model.parameters() if p.requires_grad]
        bare_opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
        gen = torch.Generator().manual_seed(0)
        steps, batch = cfg["steps"], cfg["batch"]

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def bare_round() -> float:
            model.train()
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                idx = torch.randint(len(split), (batch,), generator=gen)
                x = to_model_input(split.images[idx.to(split.images.device)].to(device, non_blocking=True))
                y = split.targets[idx.to(split.targets.device)].to(device, non_blocking=True)
                with compute.autocast():
                    loss = model(x, task, y).loss
                bare_opt.zero_grad(set_to_none=True)
                loss.backward()
                bare_opt.step()
            sync()
            return steps * batch / (time.perf_counter() - t0)

        def engine_round(epoch: int) -> float:
            _, images, seconds = trainer.train_epoch(epoch)  # syncs on CUDA before timing ends
            return images / seconds

        engine_round(0)  # warm-up both (allocator, kernels, caches)
        bare_round()
        eng, bare = [], []
        for r in range(cfg["rounds"]):
            if r % 2:
                bare.append(bare_round())
                eng.append(engine_round(r + 1))
            else:
                eng.append(engine_round(r + 1))
                bare.append(bare_round())
        t0 = time.perf_counter()
        save_atomic(trainer.state_dict(), Path(tmp) / "ck" / "last.pt")
        ckpt_s = time.perf_counter() - t0

        # A whole tiny job end to end (the CPU demo's kind of job), for images/s of real training.
        small = job.model_copy(
            update={
                "model": job.model.model_copy(update={"image_size": 32}),
                "training": job.training.model_copy(update={"epochs": 2, "steps_per_epoch": 4, "batch_size": 8}),
            }
        )
        t0 = time.perf_counter()
        tiny = run_job(small, Path(tmp) / "tiny", str(device))
        tiny_wall = time.perf_counter() - t0

    e_med, b_med = statistics.median(eng), statistics.median(bare)
    result = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "settings": cfg,
        "engine_images_per_s": [round(v, 1) for v in eng],
        "bare_images_per_s": [round(v, 1) for v in bare],
        "engine_median": round(e_med, 1),
        "bare_median": round(b_med, 1),
        "ratio": round(e_med / b_med, 3),
        "target_ratio": 0.9,
        "checkpoint_save_s": round(ckpt_s, 3),
        "tiny_job_train_images_per_s": tiny["throughput"]["train_images_per_s"],
        "tiny_job_wall_s": round(tiny_wall, 2),
    }
    print(
        f"engine vs bare PyTorch loop on {device} ({cfg['backbone']}, {cfg['size']} px, batch {cfg['batch']}, "
        f"{cfg['steps']} steps x {cfg['rounds']} rounds, medians)"
    )
    print(f"{'loop':<10}{'images/s (median)':>20}{'rounds':>40}")
    print(f"{'engine':<10}{e_med:>20.1f}{result['engine_images_per_s']!s:>40}")
    print(f"{'bare':<10}{b_med:>20.1f}{result['bare_images_per_s']!s:>40}")
    verdict = "ok" if result["ratio"] >= 0.9 else "BELOW TARGET"
    print(f"ratio engine/bare: {result['ratio']:.3f} (target >= 0.9: {verdict})")
    print(f"checkpoint save (model + AdamW + RNG): {ckpt_s:.3f} s")
    print(
        f"tiny job end to end ({cfg['backbone']}, 32 px, 2 epochs x 4 steps x 8 images): {tiny_wall:.1f} s, "
        f"training {result['tiny_job_train_images_per_s']} images/s"
    )
    return result


if __name__ == "__main__":
    main()
