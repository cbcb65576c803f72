"""What every workload shares: the `Workload` protocol and the pieces its implementations reuse.

A workload is everything model-specific (how examples become tensors, which proxy model
trains on them, its loss); sketching, retraining and validation only talk to this
interface, so a new modality or architecture is a new module in this package plus one
line in `registry.py`, not new pipeline code. Every function here is device-agnostic:
tensors land on `workload.device`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..infra.fields import doc

Params = dict[str, torch.Tensor]  # a model's parameters by name (stacked: a leading model axis)

PAD = 256  # byte vocabulary is 0..255; 256 marks padding and the start-of-text context
IGNORE = -100  # cross-entropy ignore_index for padded target positions

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class ByteParams:
    """What every byte-level workload's settings start with: the example length, which cuts the corpus too."""

    example_bytes: int = doc("Bytes per text example (documents are cut into pieces of at most this; "
                             "byte models pad/truncate to it).", 128, minimum=4)


class Workload(Protocol):
    """What the pipeline needs from a proxy-model workload.

    Optional members shape the corpus stage (read with getattr, so a workload without them
    gets the text defaults): `whole_documents` (True: each corpus row is one example, e.g.
    an image, instead of being cut into `example_bytes` pieces), `default_corpus` (the
    corpus path used when none is configured; None: the embedded text corpus) and
    `example_labels(texts) -> list[str]` (class labels of a classification workload: the
    pool gets a `label` column and selections are balanced across labels). With
    `predicted_units(texts) -> list[int arrays]` and `unit_vocabulary` (the units the loss
    predicts: bytes, labels, tokens) the curation test scores a composition-only floor.
    `example_cuts(text) -> list[int]` (byte cut points) replaces the byte pieces with the
    workload's own examples (hf_causal_lm: token windows). `sketch_parameters(model) ->
    list[str] | None` names the parameters whose gradients are sketched (None = all; the
    rest are held fixed), and `sketch_settings() -> dict` the settings recorded with them.

    Models must be vmap-friendly (per-example gradients and batched retraining use
    torch.func): no in-place updates of parameters, no data-dependent Python control flow,
    no dropout or other randomness in the forward pass.
    """

    name: str
    device: torch.device

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Returns a (n, ...) tensor of model inputs on `self.device`."""

    def build_model(self, seed: int) -> nn.Module:
        """Returns a freshly initialised proxy model on `self.device` (deterministic in seed)."""

    def example_losses(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Returns the (n,) per-example mean loss (nats per predicted unit)."""

    def config(self) -> dict:
        """Returns the workload's hyper-parameters (recorded with sketches and outcomes)."""


def seeded_build(seed: int, build: Callable[[], M]) -> M:
    """Returns `build()` run under torch.manual_seed(seed), leaving the caller's RNG state as it was."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(generator_state)  # do not leak seeding into the caller


def masked_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Returns (n,) mean cross-entropy per example over targets that are not IGNORE (nats/token).

    logits: (n, L, V); targets: (n, L) with IGNORE at padded positions. An example with no
    real target scores 0 (its sum is divided by 1, not 0).
    """
    token_losses = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE,
                                   reduction="none").view(targets.shape)
    valid = (targets != IGNORE).sum(-1).clamp(min=1)
    return token_losses.sum(-1) / valid


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Returns a short content hash of a parameter dict: the model version."""
    digest = hashlib.sha1()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
