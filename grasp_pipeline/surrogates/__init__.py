"""Subset-level surrogates Û_t(S), fitted on `fit` subsets, chosen by a lower confidence bound.

GRASP (DESIGN §2):  Û_t(S) = a_t + s_t·φ(|S|) + b_t·⟨q_t, Z_S⟩ − ‖Z_S‖²_{C_t},
Z_S = N(|S|)·Σ_{i∈S} z_i, where C_t = c_t·H is the penalty geometry (c_t·I, or a learned
non-negative diagonal with ridge). b_t ≥ 0 and C_t ≥ 0 are the smoothness bound's signs,
enforced by non-negative least squares (scipy `nnls`, free terms projected out).

Baselines on the same subsets: `size` (a + s|S|), `grad_dot` (a + b Σ⟨q_t, z_i⟩, TracIn-like),
`trak` (a + b Σ q_tᵀ(ZᵀZ + λI)⁻¹z_i) and `datamodel` (ridge on 0/1 membership masks).

Sketches may hold one k-block per reference checkpoint (`SubsetData.sketch_blocks`); which
block a sketch method reads (`sketch_block`) is part of its candidate set, so each method
takes the checkpoint that predicts best on the fit subsets.

Configuration choice (LCB protocol): every method's candidates form a finite set declared
up front; K-fold CV over the `fit` subsets (folds stratified by sampler) gives per-fold
scores = mean over (sampler, task) of Spearman ρ on the held-out fold; the candidate with
the highest mean − z_{1−δ/|C|}·sd/√K wins. `holdout` subsets are never passed to any fit
or choice: every function receives the fit rows explicitly.

Modules: `data` (SubsetData, size terms), `least_squares` (the sign-constrained solver),
`base` (the interface), `grasp`, `baselines`, `lcb` (candidate sets and the choice).
"""

from .base import OnSketchBlock, Surrogate
from .baselines import Datamodel, GradDot, LinearOnScore, SizeOnly, Trak
from .data import NORMALISATIONS, SIZE_TERMS, SubsetData, sketch_range
from .grasp import Grasp, grasp_subset_utility
from .lcb import (
                  CandidateScore,
                  FittedMethod,
                  candidate_sets,
                  choose_by_lcb,
                  fit_all_tasks,
                  fit_surrogates,
                  fold_score,
                  lcb,
                  stratified_folds,
)

__all__ = ["CandidateScore", "Datamodel", "FittedMethod", "GradDot", "Grasp", "LinearOnScore", "NORMALISATIONS",
           "OnSketchBlock", "SIZE_TERMS", "SizeOnly", "SubsetData", "Surrogate", "Trak", "candidate_sets",
           "choose_by_lcb", "fit_all_tasks", "fit_surrogates", "fold_score", "grasp_subset_utility", "lcb",
           "sketch_range", "stratified_folds"]
