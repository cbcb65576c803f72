"""The reference mixtures every optimised one is compared with, and drawing a sample from a mixture."""

from __future__ import annotations

import numpy as np

from .objective import DomainStats


def natural_mixture(stats: DomainStats) -> np.ndarray:
    return stats.counts / stats.counts.sum()


def uniform_mixture(stats: DomainStats) -> np.ndarray:
    return np.full(len(stats.domains), 1.0 / len(stats.domains))


def sample_mixture(domains: np.ndarray, pi: np.ndarray, names: list[str], budget: int,
                   seed: int) -> np.ndarray:
    """Returns pool rows drawn per domain (largest-remainder rounding of π·B), seeded."""
    raw = pi * budget
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts))[: budget - counts.sum()]] += 1
    rng = np.random.default_rng(seed)
    parts = []
    for name, count in zip(names, counts):
        rows = np.flatnonzero(domains == name)
        parts.append(rng.choice(rows, size=count, replace=count > len(rows)))
    return np.concatenate(parts)
