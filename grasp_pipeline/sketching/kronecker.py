"""The Kronecker (LoGra-style) projection: its layer layout, the projector and the per-layer sketch math.

For every `nn.Linear` (and GPT-2's `Conv1D`, the same map with its weight stored
transposed) the sketch of the layer's weight (and bias) gradient is
Σ_t (P_out δ_t)(P_in [a_t; 1])ᵀ over positions t, from the layer's input activations a_t and
output gradients δ_t (`layer_sketch`; the hooks that capture them on one batched forward are
`gradients.KroneckerGradients`), so the per-example full gradient is never materialised.
`nn.Embedding` is treated the same way with one-hot inputs (P_in a_t is a column of P_in);
an embedding whose weight a bias-free `nn.Linear` also uses (tied input/output embeddings)
gets the sum of both uses' blocks and the exact norm of the summed gradient
(`tied_embedding_sketch`). `nn.LayerNorm` weights/biases (tiny) enter exactly (Σ_t δ_t ⊙ x̂_t,
Σ_t δ_t). The concatenated per-layer blocks (Σ_l k_in·k_out + LayerNorm sizes values,
"stage 1") are then mapped to exactly k dimensions by a second, seeded SJLT, so any k works
and the pool and task sketches share one space. Any other module that owns parameters, and
other sharing of parameters between modules, are refused with an error that names them
(`kronecker_layout`; use `sjlt`). Only the modules owning the sketched parameters (a chosen
subset, or all) enter the layout.
P_in/P_out are N(0, 1/k_side); a side whose width is ≤ `factor_dim` is kept exact (identity),
so small layers are not compressed at all.

Expected error: for a rank-1 layer gradient δaᵀ the sketch's squared norm is
‖P_out δ‖²‖P_in a‖², relative sd ≈ √(2/k_out + 2/k_in) (0.35 at factor_dim 32) whatever k is;
sums over many positions and layers average some of it out. On the byte models it measured
3–6× the pair error of dense/SJLT at k = 1024 (bench/sketch.py), so it is an option for wide
layers (d ≫ factor_dim, where it also saves the most compute and memory), not the default.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .projectors import DEFAULT_FACTOR_DIM, DEFAULT_NONZEROS, LAYER_IO, Projector, SJLTProjector


@dataclass(frozen=True)
class LayerSpec:
    """One parameterised module of a model, as the Kronecker projection sees it.

    kind "linear": gradient [∂W | ∂b] is (d_out, d_in) with d_in = in_features (+1 for
    the bias); kind "conv1d" (GPT-2's `transformers.pytorch_utils.Conv1D`, y = x W + b with
    W stored (in, out)): the same [∂Wᵀ | ∂b]; kind "embedding": gradient ∂Wᵀ is (d_out =
    embedding_dim, d_in = num_embeddings); kind "exact": the parameters' gradients enter
    the second stage as they are (LayerNorm). k_in/k_out are the factor widths (equal to
    d_in/d_out when exact). `tied` names a bias-free nn.Linear that uses an embedding's
    weight as its own (GPT-2's lm_head): both uses add to the one gradient that is sketched.
    """

    module: str
    kind: str
    params: tuple[str, ...]
    d_in: int
    d_out: int
    k_in: int
    k_out: int
    tied: str = ""

    @property
    def width(self) -> int:
        """Number of stage-1 values this layer contributes."""
        return self.k_in * self.k_out


def kronecker_layout(model: nn.Module, factor_dim: int = DEFAULT_FACTOR_DIM,
                     param_names: Sequence[str] | None = None) -> list[LayerSpec]:
    """Returns the per-module layout of `model` for the Kronecker projection.

    `param_names` (canonical `named_parameters()` names; None = all) restricts it to the
    modules owning those parameters. Raises ValueError naming every chosen parameter that
    no supported module owns alone (a weight tied between one nn.Embedding and one
    bias-free nn.Linear is supported), and every module only part of whose parameters
    were chosen.
    """
    canonical = {id(p): name for name, p in model.named_parameters()}
    wanted = set(canonical.values()) if param_names is None else set(param_names)
    tied, absorbed, unsupported, refused = _tied_weights(model, canonical)
    specs = []
    for module_name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own or module_name in absorbed:
            continue
        names = tuple(canonical[id(t)] for _, t in own)
        picked = [name in wanted for name in names]
        if not any(picked) or any(id(t) in refused for _, t in own):
            continue
        if not all(picked):
            unsupported.append(f"{module_name} (only {[n for n, p in zip(names, picked) if p]} of its "
                               "parameters chosen)")
            continue
        spec = _module_spec(module_name, module, names, dict(own), factor_dim, tied.get(module_name, ""))
        if spec is None:
            unsupported.extend(f"{name} ({type(module).__name__})" for name in names)
        else:
            specs.append(spec)
    if unsupported:
        raise ValueError("the kronecker projection supports parameters of nn.Linear, GPT-2 Conv1D, nn.Embedding "
                         "(optionally tied to one bias-free nn.Linear) and nn.LayerNorm, each module's parameters "
                         "all chosen or none; not: " + ", ".join(unsupported) + " — use projection 'sjlt'")
    return specs


def _tied_weights(model: nn.Module, canonical: dict[int, str]) -> tuple[dict, set, list, set]:
    """({embedding module: tied Linear module}, the absorbed Linear modules, refusals, ids of
    refused shared tensors) of the parameters more than one module owns."""
    users: dict[int, list[tuple[str, nn.Module]]] = {}
    for module_name, module in model.named_modules():
        for _, tensor in module.named_parameters(recurse=False):
            users.setdefault(id(tensor), []).append((module_name, module))
    tied, absorbed, unsupported, refused = {}, set(), [], set()
    for tensor_id, mods in users.items():
        if len(mods) < 2:
            continue
        embeddings = [n for n, m in mods if _plain_embedding(m)]
        heads = [n for n, m in mods if isinstance(m, nn.Linear) and m.bias is None]
        if len(mods) == 2 and len(embeddings) == 1 and len(heads) == 1:
            tied[embeddings[0]] = heads[0]
            absorbed.add(heads[0])
        else:
            unsupported.append(f"{canonical[tensor_id]} (shared by {[n for n, _ in mods]})")
            refused.add(tensor_id)
    return tied, absorbed, unsupported, refused


def _plain_embedding(module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding) and module.max_norm is None and not module.sparse


def _is_conv1d(module: nn.Module) -> bool:
    # duck-typed so that the layout needs no transformers import: Conv1D is y = x W + b, W (in, nf)
    return type(module).__name__ == "Conv1D" and isinstance(getattr(module, "nf", None), int)


def _module_spec(module_name: str, module: nn.Module, names: tuple[str, ...], local: dict, factor_dim: int,
                 tied: str) -> LayerSpec | None:
    """The LayerSpec of one module, or None when its kind is not supported."""
    if not set(local) <= {"weight", "bias"} or "weight" not in local and not isinstance(module, nn.LayerNorm):
        return None
    if isinstance(module, nn.Linear) or _is_conv1d(module):
        d_in = local["weight"].shape[0 if _is_conv1d(module) else 1] + ("bias" in local)
        d_out = module.nf if _is_conv1d(module) else module.out_features
        return LayerSpec(module_name, "conv1d" if _is_conv1d(module) else "linear", names, d_in, d_out,
                         _side(d_in, factor_dim), _side(d_out, factor_dim))
    if _plain_embedding(module) and set(local) == {"weight"}:
        return LayerSpec(module_name, "embedding", names, module.num_embeddings, module.embedding_dim,
                         _side(module.num_embeddings, factor_dim), _side(module.embedding_dim, factor_dim), tied)
    if isinstance(module, nn.LayerNorm):
        width = sum(t.numel() for t in local.values())
        return LayerSpec(module_name, "exact", names, width, 1, width, 1)
    return None


def _side(width: int, factor_dim: int) -> int:
    return width if width <= factor_dim else factor_dim


class KroneckerProjector(Projector):
    """z = S · concat_l(P_out,l G_l P_in,lᵀ, exact parts); S a seeded SJLT to k dimensions.

    `project(flat)` applies the map to flat per-example gradients (parameter order
    `param_shapes`); in production it consumes `LAYER_IO`: `gradients.KroneckerGradients`
    computes the same stage-1 values from activations and output gradients without forming
    the flat gradients and hands them to `project_stage1`.
    """

    kind = "kronecker"
    consumes = LAYER_IO

    def __init__(self, layout: Sequence[LayerSpec], param_shapes: dict[str, tuple[int, ...]], k: int,
                 seed: int, factor_dim: int = DEFAULT_FACTOR_DIM, nonzeros: int = DEFAULT_NONZEROS):
        p = sum(math.prod(s) for s in param_shapes.values())
        super().__init__(p, k, seed)
        self.layout, self.factor_dim, self.nonzeros = list(layout), factor_dim, nonzeros
        covered = [n for spec in self.layout for n in spec.params]
        if sorted(covered) != sorted(param_shapes):
            raise ValueError(f"layout covers {sorted(covered)}, the gradients have {sorted(param_shapes)}")
        self.offsets, lo = {}, 0
        for name, shape in param_shapes.items():
            self.offsets[name] = (lo, tuple(shape))
            lo += math.prod(shape)
        self.p_in, self.p_out = [], []
        for spec in self.layout:  # factor matrices, seeded by (seed, module name, side)
            self.p_in.append(_factor(seed, spec.module, "in", spec.d_in, spec.k_in) if spec.kind != "exact" else None)
            self.p_out.append(_factor(seed, spec.module, "out", spec.d_out,
                                      spec.k_out) if spec.kind != "exact" else None)
        self.width = sum(spec.width for spec in self.layout)
        self.stage2 = SJLTProjector(self.width, k, seed * 7919 + 17, nonzeros)
        self._device_factors: dict[torch.device, tuple[list, list]] = {}

    def factors(self, device: torch.device) -> tuple[list, list]:
        """(P_in, P_out) per layer on `device` (None for identity sides and exact layers)."""
        device = torch.device(device)
        if device not in self._device_factors:
            self._device_factors[device] = tuple([None if t is None else t.to(device) for t in ts]
                                                 for ts in (self.p_in, self.p_out))
        return self._device_factors[device]

    def _grad(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        lo, shape = self.offsets[name]
        return flat[:, lo:lo + math.prod(shape)].reshape(flat.shape[0], *shape)

    def stage1_from_flat(self, flat: torch.Tensor) -> torch.Tensor:
        """(n, width) stage-1 values of (n, p) flat gradients (materialises each layer's G)."""
        n = flat.shape[0]
        p_in, p_out = self.factors(flat.device)
        parts = []
        for spec, pin, pout in zip(self.layout, p_in, p_out):
            grads = [self._grad(flat, name).float() for name in spec.params]
            if spec.kind == "exact":
                parts.append(torch.cat([g.reshape(n, -1) for g in grads], 1))
                continue
            if spec.kind in ("linear", "conv1d"):
                weight = grads[0] if spec.kind == "linear" else grads[0].transpose(1, 2)
                g = weight if len(grads) == 1 else torch.cat([weight, grads[1][:, :, None]], 2)
            else:  # embedding: (V, E) weight gradient, seen as (E, V)
                g = grads[0].transpose(1, 2)
            if pout is not None:
                g = pout @ g
            if pin is not None:
                g = g @ pin.t()
            parts.append(g.reshape(n, -1))
        return torch.cat(parts, 1)

    def project_stage1(self, stage1: torch.Tensor) -> torch.Tensor:
        """(n, k) sketches of (n, width) stage-1 values (the second, SJLT stage)."""
        return self.stage2.project(stage1)

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        return self.project_stage1(self.stage1_from_flat(flat))

    def config(self) -> dict:
        return {**super().config(), "factor_dim": self.factor_dim, "nonzeros": self.nonzeros,
                "stage1_width": self.width, "factor_distribution": "gaussian",
                "layers": [{"module": s.module, "kind": s.kind, "d_in": s.d_in, "d_out": s.d_out,
                            "k_in": s.k_in, "k_out": s.k_out, **({"tied": s.tied} if s.tied else {})}
                           for s in self.layout]}


def _factor(seed: int, module: str, side: str, width: int, k_side: int) -> torch.Tensor | None:
    """(k_side, width) N(0, 1/k_side) factor, or None (identity) when the side is kept exact."""
    if k_side == width:
        return None
    generator = torch.Generator().manual_seed(
        (seed * 1_000_003 + zlib.crc32(f"{module}/{side}".encode())) % (2 ** 63))
    return torch.randn(k_side, width, generator=generator) / math.sqrt(k_side)


def layer_sketch(spec: LayerSpec, module: nn.Module, x: torch.Tensor, delta: torch.Tensor,
                 p_in: torch.Tensor | None, p_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k_out·k_in) sketch block and (n,) squared gradient norm of one layer call."""
    if spec.kind == "exact":
        return _exact_sketch(module, x, delta)
    delta = delta.reshape(delta.shape[0], -1, spec.d_out).float()  # (n, T, d_out)
    if spec.kind in ("linear", "conv1d"):  # Conv1D's x W + b has Linear's gradient, transposed
        return _linear_sketch(spec, x, delta, p_in, p_out)
    return _embedding_sketch(spec, module, x, delta, p_in, p_out)


def _exact_sketch(module: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm: ∂w = Σ_t δ_t ⊙ x̂_t, ∂b = Σ_t δ_t, entered as they are."""
    n = delta.shape[0]
    shape = module.normalized_shape
    parts = []
    if module.weight is not None:
        x_hat = F.layer_norm(x, shape, None, None, module.eps)
        parts.append((delta * x_hat).reshape(n, -1, math.prod(shape)).sum(1))
    if module.bias is not None:
        parts.append(delta.reshape(n, -1, math.prod(shape)).sum(1))
    block = torch.cat(parts, 1)
    return block, (block ** 2).sum(1)


def _linear_sketch(spec: LayerSpec, x: torch.Tensor, delta: torch.Tensor, p_in: torch.Tensor | None,
                   p_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t (P_out δ_t)(P_in [a_t; 1])ᵀ and the exact ‖[∂W | ∂b]‖² of a Linear layer."""
    n, tokens = delta.shape[:2]
    d = delta if p_out is None else delta @ p_out.t()  # (n, T, k_out)
    a = x.reshape(n, -1, x.shape[-1]).float()  # (n, T, in_features)
    bias = spec.d_in > a.shape[-1]
    if p_in is None:
        a_proj = torch.cat([a, a.new_ones(n, tokens, 1)], 2) if bias else a
    else:
        a_proj = a @ p_in[:, :a.shape[-1]].t()
        if bias:
            a_proj = a_proj + p_in[:, -1]
    block = d.transpose(1, 2) @ a_proj  # (n, k_out, k_in)
    # the norm by the cheaper of materialising ∂W or the token Gram matrices
    if tokens * (spec.d_in + spec.d_out) < spec.d_in * spec.d_out:
        gram_a = a @ a.transpose(1, 2)
        if bias:
            gram_a = gram_a + 1
        sq = ((delta @ delta.transpose(1, 2)) * gram_a).sum((1, 2))
    else:
        g = delta.transpose(1, 2) @ a
        sq = (g ** 2).sum((1, 2)) + ((delta.sum(1) ** 2).sum(1) if bias else 0)
    return block.reshape(n, -1), sq


def _embedding_sketch(spec: LayerSpec, module: nn.Module, x: torch.Tensor, delta: torch.Tensor,
                      p_in: torch.Tensor | None, p_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """An Embedding's ∂Wᵀ sketch: a_t is the one-hot of id_t, so P_in a_t is column id_t of P_in."""
    n, tokens = delta.shape[:2]
    d = delta if p_out is None else delta @ p_out.t()
    ids = x.reshape(n, -1)
    if module.padding_idx is not None:  # the padding row gets no gradient
        delta = delta * (ids != module.padding_idx).unsqueeze(-1)
        d = delta if p_out is None else delta @ p_out.t()
    if p_in is None:
        a_proj = F.one_hot(ids, spec.d_in).float()
    else:
        a_proj = p_in.t()[ids]  # (n, T, k_in)
    block = d.transpose(1, 2) @ a_proj
    if tokens * tokens < spec.d_in:  # Gram over positions that share an id
        same = (ids[:, :, None] == ids[:, None, :]).float()
        sq = ((delta @ delta.transpose(1, 2)) * same).sum((1, 2))
    else:
        g = torch.zeros(n, spec.d_in, spec.d_out, device=delta.device)
        g.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, spec.d_out), delta)
        sq = (g ** 2).sum((1, 2))
    return block.reshape(n, -1), sq


def tied_embedding_sketch(spec: LayerSpec, module: nn.Module, ids: torch.Tensor, delta: torch.Tensor,
                          hidden: torch.Tensor, head_delta: torch.Tensor, p_in: torch.Tensor | None,
                          p_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k_out·k_in) sketch block and (n,) squared norm of a weight tied between an embedding
    (ids → output gradients `delta`) and a bias-free output layer (`hidden` → `head_delta`).

    The tied weight's gradient is the sum of both uses, ∂Wᵀ = Σ_t δ_t e(id_t)ᵀ + Σ_s a_s h_sᵀ;
    the projection is linear, so its sketch is the sum of the two blocks (the head's input
    side meets P_out, its output side P_in), and the squared norm adds the exact cross term
    2⟨G_emb, G_head⟩ = 2 Σ_{t,s} ⟨δ_t, a_s⟩ h_s[id_t].
    """
    n = head_delta.shape[0]
    delta = delta.reshape(n, -1, spec.d_out).float()
    block, emb_sq = _embedding_sketch(spec, module, ids, delta, p_in, p_out)
    a = hidden.reshape(n, -1, spec.d_out).float()  # (n, S, E)
    h = head_delta.reshape(n, -1, spec.d_in).float()  # (n, S, V)
    a_proj = a if p_out is None else a @ p_out.t()
    h_proj = h if p_in is None else h @ p_in.t()
    block = block + (a_proj.transpose(1, 2) @ h_proj).reshape(n, -1)
    head_sq = ((a @ a.transpose(1, 2)) * (h @ h.transpose(1, 2))).sum((1, 2))
    ids = ids.reshape(n, -1)
    if module.padding_idx is not None:  # the padding row gets no gradient from the embedding use
        delta = delta * (ids != module.padding_idx).unsqueeze(-1)
    at_ids = h.gather(2, ids[:, None, :].expand(-1, h.shape[1], -1))  # (n, S, T): h_s[id_t]
    cross = ((delta @ a.transpose(1, 2)) * at_ids.transpose(1, 2)).sum((1, 2))
    return block, emb_sq + head_sq + 2 * cross
