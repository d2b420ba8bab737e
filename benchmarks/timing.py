"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time

import numpy as np


def best_time(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls of ``fn()``, in seconds."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
