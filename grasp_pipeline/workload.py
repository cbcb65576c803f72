"""Workloads: how examples become tensors, which proxy model trains on them, and its loss.

A workload is everything model-specific; sketching, retraining and validation only talk to
this interface, so a new modality or architecture is a new `Workload`, not new pipeline code.
Every function here is device-agnostic: tensors land on `workload.device`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

PAD = 256  # byte vocabulary is 0..255; 256 marks padding and the start-of-text context
IGNORE = -100  # cross-entropy ignore_index for padded target positions


class Workload(Protocol):
    """What the pipeline needs from a proxy-model workload.

    Optional members shape the corpus stage (read with getattr, so a workload without them
    gets the text defaults): `whole_documents` (True: each corpus row is one example, e.g.
    an image, instead of being cut into `example_bytes` pieces), `default_corpus` (the
    corpus path used when none is configured; None: the embedded text corpus) and
    `example_labels(texts) -> list[str]` (class labels of a classification workload: the
    pool gets a `label` column and selections are balanced across labels).

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


@dataclass(frozen=True)
class ByteMLPParams:
    """A byte-level language model: predict each byte from the `context` bytes before it."""

    example_bytes: int = 128
    context: int = 8
    embed_dim: int = 16
    hidden: int = 64


class ByteMLP(nn.Module):
    """Embeds the previous `context` bytes, one tanh hidden layer, logits over 256 bytes."""

    def __init__(self, params: ByteMLPParams):
        super().__init__()
        self.context = params.context
        self.embed = nn.Embedding(PAD + 1, params.embed_dim)
        self.hidden = nn.Linear(params.context * params.embed_dim, params.hidden)
        self.out = nn.Linear(params.hidden, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L) byte ids (PAD-padded). Returns (B, L, 256) next-byte logits."""
        length = x.shape[-1]
        padded = F.pad(x, (self.context, 0), value=PAD)
        # window t covers bytes t-context .. t-1 and predicts byte t; indexing (not unfold)
        # keeps the model vmap-friendly for per-example gradients.
        window_index = torch.arange(length, device=x.device)[:, None] + torch.arange(
            self.context, device=x.device
        )
        windows = padded[:, window_index]  # (B, L, context)
        h = torch.tanh(self.hidden(self.embed(windows).flatten(-2)))
        return self.out(h)


class ByteLMWorkload:
    """The default workload: fixed-length byte examples and a small byte-level MLP LM."""

    name = "byte_mlp"
    whole_documents = False
    default_corpus = None  # the embedded text corpus

    def __init__(self, params: ByteMLPParams = ByteMLPParams(), device: str = "cpu"):
        self.params = params
        self.device = torch.device(device)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Returns (n, example_bytes) int64 byte ids, right-padded with PAD, truncated."""
        length = self.params.example_bytes
        out = torch.full((len(texts), length), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            data = text.encode("utf-8")[:length]
            if data:  # torch.frombuffer refuses an empty buffer
                out[row, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        return out.to(self.device)

    def build_model(self, seed: int) -> nn.Module:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model = ByteMLP(self.params)
        torch.random.set_rng_state(generator_state)  # do not leak seeding into the caller
        return model.to(self.device)

    def example_losses(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        logits = model(batch)
        targets = batch.masked_fill(batch == PAD, IGNORE)
        token_losses = F.cross_entropy(
            logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE, reduction="none"
        ).view(targets.shape)
        valid = (targets != IGNORE).sum(-1).clamp(min=1)
        return token_losses.sum(-1) / valid

    def config(self) -> dict:
        return {"workload": self.name, **asdict(self.params)}


def _registry() -> dict:
    # these modules import this one; `transformers` is imported only when an hf_causal_lm is made
    from .hf_workload import HFCausalLMParams, HFCausalLMWorkload
    from .transformer import ByteTransformerParams, ByteTransformerWorkload
    from .vision import VisionParams, VisionWorkload

    return {"byte_mlp": (ByteLMWorkload, ByteMLPParams),
            "byte_transformer": (ByteTransformerWorkload, ByteTransformerParams),
            "vision": (VisionWorkload, VisionParams),
            "hf_causal_lm": (HFCausalLMWorkload, HFCausalLMParams)}


def workload_parameter_names(name: str) -> set[str]:
    """Returns the hyper-parameter names the named workload takes."""
    if name not in _registry():
        raise ValueError(f"unknown workload {name!r}; choose one of {sorted(_registry())}")
    return {f.name for f in fields(_registry()[name][1])}


def make_workload(name: str = "byte_mlp", device: str = "cpu", **params) -> Workload:
    """Returns the named workload; `params` are its hyper-parameters (unknown ones are an error)."""
    known = workload_parameter_names(name)
    cls, params_cls = _registry()[name]
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"workload {name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(known)}")
    return cls(params_cls(**params), device=device)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Returns a short content hash of a parameter dict: the model version."""
    digest = hashlib.sha1()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
