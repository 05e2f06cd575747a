"""Data: reading the FMC_UIA layout, checking it, splitting it, and serving it to the engine.

Kept import-free on purpose: `usagg.data.datasets` pulls in torch, the rest do not,
and the CLI must stay light (`usagg --help` never imports torch).
"""
