"""Reads of a run store that only tests need: production reads the jobs a plan lists, never every folder."""

from __future__ import annotations

from typing import Any

from usagg.store import RunStore


def all_metrics(store: RunStore) -> dict[str, dict[str, Any]]:
    """Job folder id -> metrics.json, for every job folder that has one (planned or not), sorted by id."""
    return {jid: m for jid in store.job_folders() if (m := store.metrics(jid)) is not None}
