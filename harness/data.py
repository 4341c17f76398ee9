"""Inputs drawn from the case's seeded generator, so every backend sees the same bytes."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def normal(rng: np.random.Generator, shape: Sequence[int], dtype: Any = np.float32,
           mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(tuple(shape)) * std + mean).astype(dtype)


def rope_cache(max_len: int, rotary_dim: int, dtype: Any = np.float32, theta: float = 10000.0):
    """cos/sin caches of shape (max_len, rotary_dim/2), as exporters build them."""
    inv_freq = theta ** (-np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)
    angles = np.arange(max_len, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def up(a: np.ndarray) -> np.ndarray:
    """float64 copy for oracles (exact for every float input dtype)."""
    return np.asarray(a).astype(np.float64)
