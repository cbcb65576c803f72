"""An additive n-gram byte model: the cheapest proxy that learns more than byte frequencies.

The logits of byte t are b + Σ_{j=1..order} W_j[x_{t−j}]: one 257 × 256 table per context
offset (257 input ids: the 256 byte values and PAD, which also stands for the start of
text), summed. It is multinomial logistic regression on one-hot context bytes, so training
is a convex problem: a few dozen Adam steps at a high learning rate fit bigram-level
statistics (order 2 on the embedded corpus: ~0.5 nats per byte below the per-domain byte
unigram of the training subset, where the 29k-parameter byte MLP at the same cost is above
it), and retrainings of one subset from other data orders agree closely, so which
examples a subset holds — not only its domain composition — shows in the outcome.

Per-example gradients only touch the table rows of the bytes an example contains; the
sketches (SJLT by default) see p = order·257·256 + 256 parameters. The tables start at
N(0, init_std²) from the seed (not zeros) so that initialisation seeds mean something.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..infra.fields import doc
from .base import PAD, ByteParams
from .byte_mlp import ByteLMWorkload


@dataclass(frozen=True)
class ByteNGramParams(ByteParams):
    order: int = doc("byte_ngram: context bytes, each with its own 257 × 256 logit table (2 = the two "
                     "previous bytes).", 2)
    init_std: float = doc("byte_ngram: standard deviation of the seeded initial table entries.", 0.01)


class ByteNGram(nn.Module):
    """(B, L) PAD-padded byte ids -> (B, L, 256) logits: b + Σ_j W_j[x_{t−j}]."""

    def __init__(self, params: ByteNGramParams):
        super().__init__()
        if params.order < 1:
            raise ValueError(f"workload.order must be >= 1, got {params.order}")
        self.order = params.order
        self.tables = nn.Parameter(torch.randn(params.order, PAD + 1, 256) * params.init_std)
        self.bias = nn.Parameter(torch.zeros(256))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        padded = F.pad(x, (self.order, 0), value=PAD)
        logits = self.bias
        for j in range(1, self.order + 1):  # the byte j positions back, PAD before the start
            # F.embedding, not tables[j][ids]: indexing's backward (index_put with accumulate) sums
            # in a thread-dependent order on CPU, so retrainings would differ from run to run
            logits = logits + F.embedding(padded[:, self.order - j:self.order - j + length], self.tables[j - 1])
        return logits


class ByteNGramWorkload(ByteLMWorkload):
    """Byte examples, the additive n-gram model, and the mean next-byte cross-entropy."""

    name = "byte_ngram"

    def __init__(self, params: ByteNGramParams = ByteNGramParams(), device: str = "cpu"):
        super().__init__(params, device)  # type: ignore[arg-type]  # encode/losses read example_bytes only

    def _make_model(self) -> nn.Module:
        return ByteNGram(self.params)
