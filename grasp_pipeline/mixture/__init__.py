"""Domain mixtures: the exact GRASP optimum over the simplex (`objective`) and the reference mixtures."""

from .objective import DomainStats, MixtureObjective, domain_stats, optimise_mixture
from .references import natural_mixture, sample_mixture, uniform_mixture

__all__ = ["DomainStats", "MixtureObjective", "domain_stats", "natural_mixture", "optimise_mixture",
           "sample_mixture", "uniform_mixture"]
