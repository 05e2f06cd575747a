"""The engine: trains and evaluates one Job, knowing nothing about paradigms.

Modules, one job each (LibMTL-like): `sampling` (which task and images feed a
batch), `schedule` (warm-up + cosine), `device` (device, precision,
determinism), `checkpoint` (atomic resumable state), `batches` (the fast
tensor path, with the shared frozen trunk), `augment` (training augmentation on
the device), `trainer` (the optimisation loop), `step` (one optimiser step, eager
or recorded per task as a CUDA graph), `callbacks` (the trainer's hook
points and the small watchers: progress, affinity), `checkpointing` (last.pt and
resume, as a callback), `selecting` (selection and the kept weights, as a
callback), `optim` (the AdamW optimiser over the parameter groups), `balance` (how each task's loss
enters the optimised sum: the registered `training.loss_balance` strategies),
`affinity` (lookahead inter-task affinity for AG), `selection` (which epoch's
weights are kept), `bestweights` (the selected weights in host memory),
`history` (history.csv, per epoch and task), `evaluate` (predictions, scoring,
submission files), `typechecks` (a type's predictions and metrics checked against
what it declares), `accel` (launch-overhead options on CUDA), `kept` (a
worker's compiled model kept for its next job of the same structure), `jobdata`
(datasets of a job), `job` (one Job end to end without the store), `runner`
(`run_one`, the store-facing entry point), `progress` (the trainer's progress
report and the sink type passed down to it; no process-wide listener).
Importing this package does not import torch; its modules do.
"""
