"""The engine: trains and evaluates one Job, knowing nothing about paradigms.

Modules, one job each (LibMTL-like): `sampling` (which task and images feed a
batch), `schedule` (warm-up + cosine), `device` (device, precision,
determinism), `checkpoint` (atomic resumable state), `batches` (the fast
tensor path, with the shared frozen trunk), `augment` (training augmentation on
the device), `trainer` (the optimisation loop), `balance` (how each task's loss
enters the optimised sum: the registered `training.loss_balance` strategies),
`affinity` (lookahead inter-task affinity for AG), `selection` (which epoch's
weights are kept), `bestweights` (the selected weights in host memory),
`history` (history.csv, per epoch and task), `evaluate` (predictions, scoring,
submission files), `accel` (launch-overhead options on CUDA), `jobdata`
(datasets of a job), `job` (one Job end to end without the store), `runner`
(`run_one`, the store-facing entry point), `progress` (listener hook for the CLI).
Importing this package does not import torch; its modules do.
"""
