"""A byte-level workload: fixed-length byte examples and a small byte-level MLP language model
(byte_ngram and byte_transformer reuse its examples and loss)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..infra.fields import doc
from .base import IGNORE, PAD, ByteParams, masked_token_cross_entropy, seeded_build


@dataclass(frozen=True)
class ByteMLPParams(ByteParams):
    """A byte-level language model: predict each byte from the `context` bytes before it."""

    context: int = doc("Bytes of context the byte MLP sees per prediction.", 8, minimum=1)
    embed_dim: int = doc("Byte embedding width.", 16, minimum=1)
    hidden: int = doc("Hidden units of the byte MLP and of the vision MLP.", 64, minimum=1)


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
    """Byte examples right-padded with PAD, a byte MLP, and the mean next-byte cross-entropy.

    Subclasses (the byte transformer) change only the model: `_make_model`.
    """

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

    unit_vocabulary = 256

    def predicted_units(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The bytes the loss predicts in each example (every byte, up to example_bytes)."""
        return [np.frombuffer(t.encode("utf-8")[:self.params.example_bytes], np.uint8) for t in texts]

    def _make_model(self) -> nn.Module:
        return ByteMLP(self.params)

    def build_model(self, seed: int) -> nn.Module:
        return seeded_build(seed, self._make_model).to(self.device)

    def example_losses(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return masked_token_cross_entropy(model(batch), batch.masked_fill(batch == PAD, IGNORE))

    def config(self) -> dict:
        return {"workload": self.name, **asdict(self.params)}
