"""Tests for grasp_pipeline.sketch: projectors and vmapped per-example gradient sketches.

Per-example gradients are checked against a Python loop with torch.autograd.grad on the
tiny byte MLP; projections against the explicit matrix P recovered by projecting the
identity, and against the Johnson–Lindenstrauss guarantee on random vectors. The Kronecker
projection is checked against its explicit formula Σ_t (P_out δ_t)(P_in [a_t; 1])ᵀ, against
the same linear map applied to loop gradients (byte MLP and a tiny transformer), and
against its own expected error on rank-1 gradients.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from grasp_pipeline.sketching import (
    CheckpointSketcher,
    DenseProjector,
    GradientSketcher,
    KroneckerProjector,
    SJLTProjector,
    kronecker_layout,
    make_projector,
)
from grasp_pipeline.workloads import PAD, make_workload

KINDS = ["gaussian", "rademacher", "sjlt", "kronecker"]


def layered_model(p_target: int) -> nn.Module:
    """A Linear/LayerNorm/Embedding stack with about p_target parameters (for flat-vector tests)."""
    width = max(4, int(math.sqrt(p_target / 3)))
    return nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, width), nn.LayerNorm(width), nn.Linear(width, width),
                         nn.Linear(width, 2 * width, bias=False))


def projector(kind: str, p_target: int, k: int, seed: int, factor_dim: int = 32):
    """make_projector for flat vectors; kronecker gets a layered model's layout (p follows it)."""
    if kind != "kronecker":
        return make_projector(kind, p_target, k, seed)
    model = layered_model(p_target)
    shapes = {n: tuple(t.shape) for n, t in model.named_parameters()}
    p = sum(math.prod(s) for s in shapes.values())
    return make_projector(kind, p, k, seed, layout=kronecker_layout(model, factor_dim), param_shapes=shapes,
                          factor_dim=factor_dim)


def random_matrix(seed: int, n: int, p: int) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, p)), dtype=torch.float32)


def explicit_matrix(projector) -> torch.Tensor:
    """P as a (p, k) matrix, recovered column by column by projecting the identity."""
    return projector.project(torch.eye(projector.p))


# -----------------------------------------------------------------------------
# projectors


@pytest.mark.parametrize("kind", KINDS)
def test_projection_is_deterministic_in_seed(kind):
    first = projector(kind, 700, 16, seed=5)
    x = random_matrix(0, 3, first.p)
    a = first.project(x)
    b = projector(kind, 700, 16, seed=5).project(x)
    assert a.shape == (3, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_differs_across_seeds(kind):
    first = projector(kind, 700, 16, seed=5)
    x = random_matrix(1, 3, first.p)
    assert not torch.allclose(first.project(x), projector(kind, 700, 16, seed=6).project(x))


@pytest.mark.parametrize("kind", KINDS)
def test_projection_is_linear(kind):
    proj = projector(kind, 900, 24, seed=2)
    x, y = random_matrix(2, 4, proj.p), random_matrix(3, 4, proj.p)
    combined = proj.project(2.5 * x - 0.75 * y)
    torch.testing.assert_close(combined, 2.5 * proj.project(x) - 0.75 * proj.project(y),
                               atol=1e-4, rtol=1e-5)
    # and it is multiplication by one fixed matrix
    torch.testing.assert_close(proj.project(x), x @ explicit_matrix(proj), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_preserves_norms_and_inner_products_within_jl_error(kind):
    """k = 1024, p ≈ 5000: ‖Px‖²/‖x‖² has sd √(2/k) ≈ 0.044, so 0.25 is over 5 sd per vector.

    For kronecker (factor widths 32 or exact) the per-layer sketch of a random, full-rank
    gradient matrix concentrates like a JL map of dimension k_in·k_out ≥ 1024, so the same
    bounds hold on such vectors; its larger error on low-rank gradients is tested below.
    """
    k = 1024
    proj = projector(kind, 5000, k, seed=9)
    p = proj.p
    x = random_matrix(4, 20, p).double()
    y = random_matrix(5, 20, p).double()
    # correlated pairs, so inner products are not all near zero
    y = 0.6 * x + 0.8 * y
    px, py = proj.project(x.float()).double(), proj.project(y.float()).double()
    ratio = (px ** 2).sum(1) / (x ** 2).sum(1)
    assert (ratio - 1).abs().max() < 0.25
    assert (ratio - 1).abs().mean() < 0.08
    assert abs(float(ratio.mean()) - 1) < 0.05  # unbiased: the mean of 20 has sd ≈ 0.01
    scale = x.norm(dim=1) * y.norm(dim=1)
    inner_error = ((px * py).sum(1) - (x * y).sum(1)) / scale
    assert inner_error.abs().max() < 0.25


@pytest.mark.parametrize("p,block_rows", [(1000, 128), (257, 64), (300, 300)])
@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_dense_blocks_give_the_same_projection_cached_or_not(kind, p, block_rows):
    x = random_matrix(6, 5, p)
    cached = DenseProjector(p, 32, seed=4, kind=kind, block_rows=block_rows)
    uncached = DenseProjector(p, 32, seed=4, kind=kind, block_rows=block_rows, cache_bytes=0)
    first = cached.project(x)
    assert torch.equal(first, cached.project(x))  # second call served from the cache
    assert torch.equal(first, uncached.project(x))
    assert torch.equal(uncached.project(x), uncached.project(x))  # regenerated identically


def test_rademacher_entries_are_plus_or_minus_one_over_root_k():
    matrix = explicit_matrix(DenseProjector(300, 16, seed=1, kind="rademacher", block_rows=64))
    torch.testing.assert_close(matrix.abs(), torch.full((300, 16), 1 / math.sqrt(16)))
    assert 0.4 < float((matrix > 0).float().mean()) < 0.6


def test_gaussian_entries_have_variance_one_over_k():
    matrix = explicit_matrix(DenseProjector(2000, 50, seed=1, kind="gaussian", block_rows=512)).double()
    assert abs(float(matrix.mean())) < 0.01 / math.sqrt(50) * 10
    assert float(matrix.var()) * 50 == pytest.approx(1.0, abs=0.03)  # 100k entries


def test_sjlt_maps_each_coordinate_to_at_most_c_signed_outputs():
    projector = SJLTProjector(400, 32, seed=3, nonzeros=4)
    matrix = explicit_matrix(projector)
    nonzero_per_column = (matrix != 0).sum(1)
    assert int(nonzero_per_column.max()) <= 4
    # entries are sums of ±1/√c over colliding hashes: multiples of 1/2 for c = 4
    units = matrix * math.sqrt(4)
    torch.testing.assert_close(units, units.round())
    assert float((matrix ** 2).sum(1).mean()) == pytest.approx(1.0, abs=0.15)  # ‖P e_j‖² ≈ 1 on average


def test_an_unknown_projection_is_refused():
    with pytest.raises(ValueError, match="unknown projection 'fourier'"):
        make_projector("fourier", 10, 4, 0)


# -----------------------------------------------------------------------------
# per-example gradient sketches


@pytest.fixture(scope="module")
def workload():
    return make_workload("byte_mlp", context=2, embed_dim=4, hidden=8, example_bytes=16)


@pytest.fixture(scope="module")
def reference(workload):
    """θ₀ that is not the sketcher's own build_model(0) initialisation, and 11 examples."""
    params = {n: p.detach().clone() for n, p in workload.build_model(7).named_parameters()}
    texts = ["hello world", "def f(x): return x", "a", "ßßß", "aaaaaaaaaaaaaaaaaaaa", "Der Hund", "{}[]()",
             "12345", "the cat sat", "x", "zzz zzz"]
    return params, workload.encode(texts)


def loop_gradients(workload, params, inputs):
    """Per-example flat gradients and losses, one autograd.grad call per example."""
    model = workload.build_model(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    names = [n for n, _ in model.named_parameters()]
    assert names == list(params)
    flats, losses = [], []
    for i in range(inputs.shape[0]):
        loss = workload.example_losses(model, inputs[i:i + 1])[0]
        grads = torch.autograd.grad(loss, list(model.parameters()))
        flats.append(torch.cat([g.reshape(-1) for g in grads]))
        losses.append(float(loss.detach()))
    return torch.stack(flats), np.array(losses)


@pytest.mark.parametrize("kind", KINDS)
def test_vmapped_sketches_equal_projected_loop_gradients(workload, reference, kind):
    params, inputs = reference
    sketcher = GradientSketcher(workload, params, kind, k=32, seed=1, chunk_size=4)  # 11 = 4 + 4 + 3
    sketches = sketcher.sketch_examples(inputs)
    flat, losses = loop_gradients(workload, params, inputs)
    assert sketches.sketch.shape == (11, 32) and sketches.sketch.dtype == np.float32
    np.testing.assert_allclose(sketches.sketch, sketcher.projector.project(flat).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(sketches.grad_norm, flat.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(sketches.loss, losses, rtol=1e-6)


def test_an_all_padding_example_has_zero_loss_gradient_and_sketch(workload, reference):
    params, inputs = reference
    batch = torch.cat([inputs[:2], torch.full((1, 16), PAD, dtype=torch.long)])
    sketches = GradientSketcher(workload, params, "gaussian", k=8, seed=0).sketch_examples(batch)
    assert sketches.loss[2] == 0.0 and sketches.grad_norm[2] == 0.0 and not sketches.sketch[2].any()
    assert (sketches.grad_norm[:2] > 0).all()


def test_sketch_of_the_mean_gradient_is_the_mean_of_per_example_sketches(workload, reference):
    params, inputs = reference
    sketcher = GradientSketcher(workload, params, "sjlt", k=32, seed=2, chunk_size=3)
    per_example = sketcher.sketch_examples(inputs)
    q, loss = sketcher.sketch_mean_gradient(inputs)
    np.testing.assert_allclose(q, per_example.sketch.mean(0), atol=1e-5, rtol=0)
    assert loss == pytest.approx(float(per_example.loss.mean()), rel=1e-6)
    flat, _ = loop_gradients(workload, params, inputs)
    np.testing.assert_allclose(q, sketcher.projector.project(flat.mean(0, keepdim=True))[0].numpy(), atol=1e-5)


def test_sketch_config_records_projection_seed_workload_and_model_version(workload, reference):
    params, _ = reference
    sketcher = GradientSketcher(workload, params, "rademacher", k=16, seed=42)
    config = json.loads(sketcher.config("abc123"))
    assert config["projection"] == "rademacher" and config["k"] == 16 and config["seed"] == 42
    assert config["model_version"] == "abc123" and config["workload"] == "byte_mlp"
    assert config["p"] == sum(p.numel() for p in params.values())


def test_checkpoint_sketches_concatenate_one_block_per_checkpoint(workload, reference):
    """Each k-block is that checkpoint's own sketch (same projection); task sketches likewise;
    the gradient norm is the norm of the concatenated gradients, the loss the last checkpoint's."""
    params, inputs = reference
    other = {n: p.detach().clone() for n, p in workload.build_model(3).named_parameters()}
    checkpoints = [(5, other), (9, params)]
    sketcher = CheckpointSketcher.build(workload, checkpoints, "sjlt", k=16, seed=4, chunk_size=4)
    both = sketcher.sketch_examples(inputs)
    q, loss = sketcher.sketch_mean_gradient(inputs)
    assert both.sketch.shape == (len(inputs), 32) and sketcher.dim == 32
    alone = [GradientSketcher(workload, theta, "sjlt", k=16, seed=4, chunk_size=4) for _, theta in checkpoints]
    blocks = [s.sketch_examples(inputs) for s in alone]
    np.testing.assert_array_equal(both.sketch, np.concatenate([b.sketch for b in blocks], axis=1))
    np.testing.assert_allclose(both.grad_norm, np.hypot(blocks[0].grad_norm, blocks[1].grad_norm), rtol=1e-6)
    np.testing.assert_array_equal(both.loss, blocks[1].loss)
    np.testing.assert_allclose(q, np.concatenate([s.sketch_mean_gradient(inputs)[0] for s in alone]), atol=1e-6)
    assert loss == pytest.approx(alone[1].sketch_mean_gradient(inputs)[1])
    assert not np.allclose(blocks[0].sketch, blocks[1].sketch)


def test_checkpoint_sketcher_config_round_trips_and_refuses_other_steps(workload, reference):
    params, inputs = reference
    sketcher = CheckpointSketcher.build(workload, [(0, params), (4, params)], "gaussian", k=8, seed=1)
    config = json.loads(sketcher.config("v1"))
    assert config["checkpoint_steps"] == [0, 4] and config["dim"] == 16 and config["k"] == 8
    rebuilt = CheckpointSketcher.from_config(workload, [(0, params), (4, params)], config)
    np.testing.assert_array_equal(rebuilt.sketch_examples(inputs[:3]).sketch,
                                  sketcher.sketch_examples(inputs[:3]).sketch)
    with pytest.raises(ValueError, match=r"checkpoint steps \[0, 4\].*now has \[4\]; rematerialise gradient_sketches"):
        CheckpointSketcher.from_config(workload, [(4, params)], config)


# -----------------------------------------------------------------------------
# kronecker (LoGra-style) projection


def layer_inputs_and_output_grads(workload, params, example: torch.Tensor, module_name: str):
    """(a, δ): a Linear layer's inputs and the gradient of the example's loss w.r.t. its outputs."""
    model = workload.build_model(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    seen = {}
    module = dict(model.named_modules())[module_name]
    handle = module.register_forward_hook(lambda m, args, out: seen.update(a=args[0], out=out))
    loss = workload.example_losses(model, example[None])[0]
    handle.remove()
    (delta,) = torch.autograd.grad(loss, [seen["out"]])
    return seen["a"].reshape(-1, seen["a"].shape[-1]).detach(), delta.reshape(-1, delta.shape[-1])


def test_kronecker_equals_the_explicit_formula_on_a_tiny_linear_model(workload, reference):
    """Stage 1 of each Linear layer is Σ_t (P_out δ_t)(P_in [a_t; 1])ᵀ; the sketch is S·stage 1."""
    params, inputs = reference
    sketcher = GradientSketcher(workload, params, "kronecker", k=16, seed=3, chunk_size=4, factor_dim=4)
    proj = sketcher.projector
    stage1, norm_sq, _ = sketcher.gradients.stage1(inputs[:5])
    offsets = np.cumsum([0] + [spec.width for spec in proj.layout])
    for index, spec in enumerate(proj.layout):
        if spec.kind != "linear":
            continue
        p_in, p_out = proj.p_in[index], proj.p_out[index]
        assert p_in is not None and p_out is not None  # hidden: 9 -> 4, 8 -> 4; out: 9 -> 4, 256 -> 4
        for i in range(5):
            a, delta = layer_inputs_and_output_grads(workload, params, inputs[i], spec.module)
            a1 = torch.cat([a, torch.ones(a.shape[0], 1)], 1)
            explicit = sum(torch.outer(p_out @ delta[t], p_in @ a1[t]) for t in range(a.shape[0]))
            torch.testing.assert_close(stage1[i, offsets[index]:offsets[index + 1]], explicit.reshape(-1),
                                       atol=1e-6, rtol=1e-4)
    sketches = sketcher.sketch_examples(inputs[:5])
    torch.testing.assert_close(torch.as_tensor(sketches.sketch), proj.stage2.project(stage1), atol=1e-6, rtol=1e-5)
    flat, _ = loop_gradients(workload, params, inputs[:5])
    np.testing.assert_allclose(norm_sq.sqrt().numpy(), flat.norm(dim=1).numpy(), rtol=1e-5)


def test_kronecker_matches_its_linear_map_on_a_tiny_transformer():
    """Shared position embeddings (arange(L), no batch dim) and LayerNorms are handled."""
    workload = make_workload("byte_transformer", example_bytes=16, d_model=16, n_layers=1, n_heads=2)
    params = {n: p.detach().clone() for n, p in workload.build_model(5).named_parameters()}
    inputs = workload.encode(["hello transformer", "ab", "", "x = 1 + 2"])
    sketcher = GradientSketcher(workload, params, "kronecker", k=32, seed=0, chunk_size=3, factor_dim=8)
    assert {s.kind for s in sketcher.projector.layout} == {"linear", "embedding", "exact"}
    sketches = sketcher.sketch_examples(inputs)
    flat, losses = loop_gradients(workload, params, inputs)
    np.testing.assert_allclose(sketches.sketch, sketcher.projector.project(flat).numpy(), atol=2e-6)
    np.testing.assert_allclose(sketches.grad_norm, flat.norm(dim=1).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sketches.loss, losses, rtol=1e-6)
    assert sketches.grad_norm[2] == 0 and not sketches.sketch[2].any()  # empty text: no loss, no gradient


def test_kronecker_error_on_rank_one_gradients_is_as_expected():
    """For G = δ aᵀ, ‖P_out G P_inᵀ‖²/‖G‖² = ‖P_out δ‖²/‖δ‖² · ‖P_in a‖²/‖a‖²: relative sd
    ≈ √(2/k_out + 2/k_in), larger than a dense JL map of the same total k; unbiased."""
    model = nn.Sequential(nn.Linear(200, 300, bias=False))
    shapes = {n: tuple(t.shape) for n, t in model.named_parameters()}
    k_side = 16
    proj = KroneckerProjector(kronecker_layout(model, k_side), shapes, k=1024, seed=1, factor_dim=k_side)
    rng = np.random.default_rng(0)
    delta, a = rng.normal(size=(400, 300)), rng.normal(size=(400, 200))
    flat = torch.as_tensor(np.einsum("no,ni->noi", delta, a).reshape(400, -1), dtype=torch.float32)
    stage1 = proj.stage1_from_flat(flat).double()
    ratio = (stage1 ** 2).sum(1) / (flat.double() ** 2).sum(1)
    expected_sd = math.sqrt((1 + 2 / k_side) ** 2 - 1)  # product of two independent χ²_k/k
    assert abs(float(ratio.mean()) - 1) < 4 * expected_sd / math.sqrt(400)
    assert 0.75 * expected_sd < float(ratio.std()) < 1.25 * expected_sd


def test_kronecker_refuses_modules_it_cannot_factor():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 3)
            self.linear = nn.Linear(4, 4)
            self.scale = nn.Parameter(torch.ones(4))

    with pytest.raises(ValueError, match="use projection 'sjlt'") as refused:
        kronecker_layout(Scaled())
    message = str(refused.value)
    assert "conv.weight (Conv1d)" in message and "scale (Scaled)" in message and "linear" not in message
    shared = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    shared[1].weight = shared[0].weight  # two Linears, one weight: no factorisation of the summed gradient
    with pytest.raises(ValueError, match=r"0\.weight \(shared by \['0', '1'\]\)"):
        kronecker_layout(shared)
    with pytest.raises(ValueError, match="needs the model's layer layout"):
        make_projector("kronecker", 10, 4, 0)


def test_kronecker_accepts_an_embedding_tied_to_a_bias_free_output_layer():
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert [(s.module, s.kind, s.params, s.tied) for s in kronecker_layout(tied)] == [("0", "embedding", ("0.weight",),
                                                                                      "1")]


def test_kronecker_keeps_small_sides_exact_and_records_its_layout(workload, reference):
    params, _ = reference
    sketcher = GradientSketcher(workload, params, "kronecker", k=16, seed=1, factor_dim=16)
    config = json.loads(sketcher.config("v1"))
    layers = {layer["module"]: layer for layer in config["layers"]}
    assert layers["hidden"] == {"module": "hidden", "kind": "linear", "d_in": 9, "d_out": 8, "k_in": 9, "k_out": 8}
    assert layers["out"]["k_out"] == 16 and layers["embed"]["k_in"] == 16 and layers["embed"]["k_out"] == 4
    assert config["projection"] == "kronecker" and config["factor_dim"] == 16 and config["nonzeros"] == 4
    assert config["stage1_width"] == sum(layer["k_in"] * layer["k_out"] for layer in config["layers"])
    assert sketcher.projector.p_in[1] is None and sketcher.projector.p_out[1] is None  # hidden kept exact


# -----------------------------------------------------------------------------
# determinism, rebuilding from the config, storage precision, dense buffering


@pytest.mark.parametrize("kind", KINDS)
def test_sketches_are_deterministic_and_rebuild_from_their_config(workload, reference, kind):
    params, inputs = reference
    options = {"factor_dim": 4, "nonzeros": 2} if kind == "kronecker" else {}
    first = GradientSketcher(workload, params, kind, k=24, seed=7, chunk_size=4, **options)
    again = GradientSketcher.from_config(workload, params, first.config("v"), chunk_size=5)
    a, b = first.sketch_examples(inputs), again.sketch_examples(inputs)
    np.testing.assert_array_equal(a.sketch, first.sketch_examples(inputs).sketch)  # same object, same bits
    np.testing.assert_allclose(a.sketch, b.sketch, atol=1e-5)  # other chunking, same projection
    assert json.loads(again.config("v")) == json.loads(first.config("v"))


@pytest.mark.parametrize("storage_dtype", ["float16", "bfloat16"])
def test_storage_dtype_rounds_sketches_and_is_recorded(workload, reference, storage_dtype):
    params, inputs = reference
    full = GradientSketcher(workload, params, "sjlt", k=32, seed=1).sketch_examples(inputs).sketch
    sketcher = GradientSketcher(workload, params, "sjlt", k=32, seed=1, storage_dtype=storage_dtype)
    low = sketcher.sketch_examples(inputs).sketch
    torch_dtype = getattr(torch, storage_dtype)
    assert low.dtype == np.float32
    np.testing.assert_array_equal(low, torch.as_tensor(full).to(torch_dtype).float().numpy())
    np.testing.assert_allclose(low, full, rtol=2 ** -7, atol=1e-6)
    assert not np.array_equal(low, full)
    assert json.loads(sketcher.config("v"))["storage_dtype"] == storage_dtype
    np.testing.assert_array_equal(sketcher.sketch_examples(inputs, storage_dtype="float32").sketch, full)
    with pytest.raises(ValueError, match="unknown storage_dtype 'int8'"):
        GradientSketcher(workload, params, "sjlt", k=32, seed=1, storage_dtype="int8")


def test_uncached_dense_projection_buffers_chunks_and_matches(workload, reference):
    """Blocks outer, buffered chunks inner: same sketches as projecting loop gradients."""
    params, inputs = reference
    sketcher = GradientSketcher(workload, params, "gaussian", k=16, seed=2, chunk_size=2,
                                dense_buffer_bytes=1)  # buffer rounds up to one chunk
    p = sketcher.projector.p
    sketcher.projector = DenseProjector(p, 16, seed=2, block_rows=97, cache_bytes=0, workers=3)
    assert sketcher.gradients.rows == 2
    sketcher.dense_buffer_bytes = 4 * 4 * p  # four examples' flat gradients: two chunks per buffer
    assert sketcher.gradients.rows == 4
    flat, _ = loop_gradients(workload, params, inputs)
    sketches = sketcher.sketch_examples(inputs)  # 11 = 4 + 4 + 3
    np.testing.assert_allclose(sketches.sketch, sketcher.projector.project(flat).numpy(), atol=1e-5)
    np.testing.assert_allclose(sketches.grad_norm, flat.norm(dim=1).numpy(), rtol=1e-5)
    cached = DenseProjector(p, 16, seed=2, block_rows=97)
    assert torch.equal(cached.project(flat), DenseProjector(p, 16, seed=2, block_rows=97, cache_bytes=0,
                                                            workers=1).project(flat))
