"""Tests for grasp_pipeline.sketch: projectors and vmapped per-example gradient sketches.

Per-example gradients are checked against a Python loop with torch.autograd.grad on the
tiny byte MLP; projections against the explicit matrix P recovered by projecting the
identity, and against the Johnson–Lindenstrauss guarantee on random vectors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from grasp_pipeline.sketch import DenseProjector, GradientSketcher, SJLTProjector, make_projector
from grasp_pipeline.workload import PAD, make_workload

KINDS = ["gaussian", "rademacher", "sjlt"]


def random_matrix(seed: int, n: int, p: int) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, p)), dtype=torch.float32)


def explicit_matrix(projector) -> torch.Tensor:
    """P as a (p, k) matrix, recovered column by column by projecting the identity."""
    return projector.project(torch.eye(projector.p))


# -----------------------------------------------------------------------------
# projectors


@pytest.mark.parametrize("kind", KINDS)
def test_projection_is_deterministic_in_seed(kind):
    x = random_matrix(0, 3, 700)
    a = make_projector(kind, 700, 16, seed=5).project(x)
    b = make_projector(kind, 700, 16, seed=5).project(x)
    assert a.shape == (3, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_differs_across_seeds(kind):
    x = random_matrix(1, 3, 700)
    assert not torch.allclose(make_projector(kind, 700, 16, seed=5).project(x),
                              make_projector(kind, 700, 16, seed=6).project(x))


@pytest.mark.parametrize("kind", KINDS)
def test_projection_is_linear(kind):
    projector = make_projector(kind, 900, 24, seed=2)
    x, y = random_matrix(2, 4, 900), random_matrix(3, 4, 900)
    combined = projector.project(2.5 * x - 0.75 * y)
    torch.testing.assert_close(combined, 2.5 * projector.project(x) - 0.75 * projector.project(y),
                               atol=1e-4, rtol=1e-5)
    # and it is multiplication by one fixed matrix
    torch.testing.assert_close(projector.project(x), x @ explicit_matrix(projector), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_preserves_norms_and_inner_products_within_jl_error(kind):
    """k = 1024, p = 5000: ‖Px‖²/‖x‖² has sd √(2/k) ≈ 0.044, so 0.25 is over 5 sd per vector."""
    p, k = 5000, 1024
    projector = make_projector(kind, p, k, seed=9)
    x = random_matrix(4, 20, p).double()
    y = random_matrix(5, 20, p).double()
    # correlated pairs, so inner products are not all near zero
    y = 0.6 * x + 0.8 * y
    px, py = projector.project(x.float()).double(), projector.project(y.float()).double()
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
