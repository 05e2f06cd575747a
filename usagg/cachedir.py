"""Where usagg keeps what it can rebuild: decoded images, synthetic data, memoised analysis outputs."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "USAGG_CACHE"


def cache_root(configured: Path | str | None = None) -> Path:
    """`configured` (a study's data.cache_dir), else $USAGG_CACHE, else ~/.cache/usagg."""
    if configured is not None:
        return Path(configured)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "usagg"
