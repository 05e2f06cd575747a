"""The engine: trains and evaluates one Job, knowing nothing about paradigms.

Modules, one job each (LibMTL-like): `sampling` (which task and images feed a
batch), `schedule` (warm-up + cosine), `device` (device, precision,
determinism), `checkpoint` (atomic resumable state), `batches` (the fast
tensor path), `trainer` (the optimisation loop), `evaluate` (predictions,
scoring, submission files), `jobdata` (datasets of a job), `runner`
(`run_one`, the store-facing entry point), `progress` (listener hook for the CLI).
Importing this package does not import torch; its modules do.
"""
