"""The reference mixtures every optimised one is compared with, and drawing a sample from a mixture."""

from __future__ import annotations

import numpy as np

from .objective import DomainStats


def natural_mixture(stats: DomainStats) -> np.ndarray:
    """The corpus's own proportions when `stats` carries them (corpus.natural), else the pool's."""
    if stats.natural is not None:
        return stats.natural
    return stats.counts / stats.counts.sum()


def uniform_mixture(stats: DomainStats) -> np.ndarray:
    return np.full(len(stats.domains), 1.0 / len(stats.domains))


def sample_mixture(domains: np.ndarray, pi: np.ndarray, names: list[str], budget: int,
                   seed: int) -> np.ndarray:
    """Returns pool rows drawn per domain (largest-remainder rounding of π·B), seeded.

    A domain's n_d rows are drawn without replacement when n_d ≤ N_d (its pool examples), as
    the mixture objective assumes; a larger n_d (`max_repeats` > 1) takes ⌊n_d/N_d⌋ whole
    copies of the domain plus a without-replacement remainder, where the objective is no
    longer exact (`objective` module doc).
    """
    raw = pi * budget
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts))[: budget - counts.sum()]] += 1
    rng = np.random.default_rng(seed)
    parts = []
    for name, count in zip(names, counts):
        rows = np.flatnonzero(domains == name)
        if count > 0 and not len(rows):
            raise ValueError(f"mixture gives domain {name!r} weight {pi[names.index(name)]:.3g} but the pool has "
                             "no examples of it")
        copies, remainder = divmod(int(count), len(rows)) if count > len(rows) else (0, int(count))
        parts += [np.tile(rows, copies), rng.choice(rows, size=remainder, replace=False)]
    return np.concatenate(parts)
