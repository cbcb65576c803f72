"""A larger measurement workload: a small byte-level causal transformer (~0.9M parameters).

The model follows karpathy/nanoGPT's `model.py`: learned token and position embeddings,
pre-LayerNorm blocks (causal self-attention, then a GELU MLP with residual connections), a
final LayerNorm and a bias-free linear head; weights N(0, 0.02), biases zero, and the two
residual output projections per block (`c_proj`) scaled by 1/√(2·n_layers). Differences:
the input vocabulary has 257 ids (256 = PAD, also the start-of-text token) while the head
predicts 256 bytes, so the embedding and head are not tied; there is no dropout (training
must be deterministic).

Attention is computed explicitly with a causal mask rather than with
`F.scaled_dot_product_attention(is_causal=True)`: in torch 2.13 on CPU the fused kernel
(`_scaled_dot_product_flash_attention_for_cpu` and its backward) has no functorch batching
rule, so under `vmap(grad(...))` it runs through the per-sample fallback loop (with a
"performance drop" warning) and was about 3x slower for per-example gradients.

The workload reuses `ByteLMWorkload`'s byte encoding, per-example loss and config; only
the model differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..infra.fields import doc
from .base import PAD, ByteParams
from .byte_mlp import ByteLMWorkload


@dataclass(frozen=True)
class ByteTransformerParams(ByteParams):
    """Hyper-parameters (`example_bytes` is also the number of learned positions); the defaults give
    875,392 parameters."""

    d_model: int = doc("Width of the byte transformer.", 128, minimum=1)
    n_layers: int = doc("Blocks of the byte transformer.", 4, minimum=1)
    n_heads: int = doc("Attention heads of the byte transformer.", 4, minimum=1)
    mlp_ratio: int = doc("Byte transformer: hidden width of each block's MLP, in multiples of d_model.", 4, minimum=1)


class CausalSelfAttention(nn.Module):
    def __init__(self, params: ByteTransformerParams):
        super().__init__()
        if params.d_model % params.n_heads:
            raise ValueError(f"d_model={params.d_model} is not divisible by n_heads={params.n_heads}")
        self.n_heads = params.n_heads
        self.c_attn = nn.Linear(params.d_model, 3 * params.d_model)
        self.c_proj = nn.Linear(params.d_model, params.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        head = width // self.n_heads
        q, k, v = self.c_attn(x).split(width, dim=-1)
        # (B, H, L, head); reshape (not view) so the code is layout-agnostic under vmap
        q, k, v = (t.reshape(batch, length, self.n_heads, head).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(head))
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(batch, length, width)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, params: ByteTransformerParams):
        super().__init__()
        hidden = params.mlp_ratio * params.d_model
        self.c_fc = nn.Linear(params.d_model, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, params.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, params: ByteTransformerParams):
        super().__init__()
        self.ln_1 = nn.LayerNorm(params.d_model)
        self.attn = CausalSelfAttention(params)
        self.ln_2 = nn.LayerNorm(params.d_model)
        self.mlp = MLP(params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ByteTransformer(nn.Module):
    """nanoGPT-style decoder over bytes: (B, L) PAD-padded ids -> (B, L, 256) logits.

    The output at position t predicts byte t from bytes 0..t-1: the input is shifted right
    by one, with PAD as the start token, so position t attends to [PAD, x_0, .., x_{t-1}].
    """

    def __init__(self, params: ByteTransformerParams):
        super().__init__()
        self.params = params
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(PAD + 1, params.d_model),
            wpe=nn.Embedding(params.example_bytes, params.d_model),
            h=nn.ModuleList([Block(params) for _ in range(params.n_layers)]),
            ln_f=nn.LayerNorm(params.d_model),
        ))
        self.lm_head = nn.Linear(params.d_model, 256, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * params.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        if length > self.params.example_bytes:
            raise ValueError(f"sequence length {length} exceeds example_bytes={self.params.example_bytes}")
        start = torch.full_like(x[..., :1], PAD)
        inputs = torch.cat([start, x[..., :-1]], dim=-1)  # position t sees only x[:t]
        positions = torch.arange(length, device=x.device)
        h = self.transformer.wte(inputs) + self.transformer.wpe(positions)
        for block in self.transformer.h:
            h = block(h)
        return self.lm_head(self.transformer.ln_f(h))


class ByteTransformerWorkload(ByteLMWorkload):
    """Fixed-length byte examples and a small causal transformer LM.

    Encoding, per-example loss (mean cross-entropy over non-PAD target bytes) and config()
    are ByteLMWorkload's; only the model differs.
    """

    name = "byte_transformer"

    def __init__(self, params: ByteTransformerParams = ByteTransformerParams(), device: str = "cpu"):
        super().__init__(params, device)  # type: ignore[arg-type]  # sets .params and .device

    def _make_model(self) -> nn.Module:
        return ByteTransformer(self.params)
