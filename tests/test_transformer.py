"""Tests for grasp_pipeline.transformer: the byte-level causal transformer workload (CPU).

A tiny configuration (d_model=16, one layer, two heads, 16 bytes) keeps these fast; only
the parameter-count test builds the default (~0.9M parameter) model. Vmapped training and
per-example sketches are compared with one-at-a-time training and a per-example
torch.autograd loop, within atol 1e-5 (float32; vmapped matmuls may reassociate sums).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grasp_pipeline.config import RetrainParams
from grasp_pipeline.sketching import GradientSketcher
from grasp_pipeline.training.retrain import Recipe, StackedTrainer, unstack
from grasp_pipeline.workloads import PAD
from grasp_pipeline.workloads.byte_transformer import ByteTransformer, ByteTransformerParams, ByteTransformerWorkload

ATOL = 1e-5
TINY = ByteTransformerParams(example_bytes=16, d_model=16, n_layers=1, n_heads=2, mlp_ratio=4)


@pytest.fixture(scope="module")
def workload():
    return ByteTransformerWorkload(TINY)


@pytest.fixture(scope="module")
def pool(workload):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "def f(x):", "return", "der", "und", "ß", "{}"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(24)]
    return workload.encode(texts)


def random_bytes(seed: int, n: int, length: int) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 256, size=(n, length)), dtype=torch.long)


# -----------------------------------------------------------------------------
# the model


def test_logits_at_a_position_depend_only_on_earlier_bytes(workload):
    """Output t predicts byte t: changing bytes t, t+1, .. leaves logits at positions ≤ t unchanged."""
    model = workload.build_model(1)
    x = random_bytes(0, 3, 16)
    with torch.no_grad():
        base = model(x)
        assert base.shape == (3, 16, 256)
        for t in range(16):
            changed = x.clone()
            changed[:, t:] = random_bytes(t + 1, 3, 16 - t)
            changed[:, t:] = torch.where(changed[:, t:] == x[:, t:], (changed[:, t:] + 1) % 256, changed[:, t:])
            out = model(changed)
            torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], atol=1e-6, rtol=0, msg=f"t={t}")
            if t + 1 < 16:  # and byte t does reach position t + 1
                assert (out[:, t + 1] - base[:, t + 1]).abs().max() > 1e-6


def test_padding_targets_are_ignored_and_the_first_byte_is_predicted(workload):
    model = workload.build_model(0)
    batch = torch.cat([workload.encode(["ab", "abc"]), torch.full((1, 16), PAD, dtype=torch.long)])
    losses = workload.example_losses(model, batch)
    with torch.no_grad():
        logp = model(batch).log_softmax(-1)
    expected = -(logp[0, 0, ord("a")] + logp[0, 1, ord("b")]) / 2  # position 0 predicts byte 0
    torch.testing.assert_close(losses[0], expected, atol=1e-6, rtol=0)
    assert losses[2] == 0.0  # no non-PAD target


def test_default_configuration_has_about_a_million_parameters():
    params = ByteTransformerParams()
    count = sum(p.numel() for p in ByteTransformer(params).parameters())
    assert 800_000 <= count <= 1_200_000, count
    d, hidden = params.d_model, params.mlp_ratio * params.d_model
    per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    assert count == (PAD + 1) * d + params.example_bytes * d + params.n_layers * per_block + 2 * d + d * 256


def test_build_model_is_deterministic_in_seed_and_leaves_the_global_rng_alone(workload):
    before = torch.random.get_rng_state()
    a, b, c = workload.build_model(3), workload.build_model(3), workload.build_model(4)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert not torch.equal(sa["transformer.wte.weight"], sc["transformer.wte.weight"])


def test_config_and_name(workload):
    assert workload.name == "byte_transformer"
    assert workload.config() == {"workload": "byte_transformer", "example_bytes": 16, "d_model": 16,
                                 "n_layers": 1, "n_heads": 2, "mlp_ratio": 4}
    assert workload.encode(["x" * 40]).shape == (1, 16)


# -----------------------------------------------------------------------------
# it works with the vmapped trainer and sketcher


def test_training_two_models_together_equals_training_each_alone(workload, pool):
    recipe = Recipe.from_params(RetrainParams(), steps=4, batch_size=4, lr=3e-3, optimizer="adam")
    trainer = StackedTrainer(workload, recipe)
    members = [np.array([0, 3, 5, 7, 9]), np.arange(10, 24)]
    seeds = [(0, 0), (0, 1)]
    together = trainer.train(pool, members, seeds)
    assert not torch.equal(unstack(together, 0)["lm_head.weight"], unstack(together, 1)["lm_head.weight"])
    for j, (rows, seed) in enumerate(zip(members, seeds)):
        alone = unstack(trainer.train(pool, [rows], [seed]), 0)
        for name, value in unstack(together, j).items():
            torch.testing.assert_close(value, alone[name], atol=ATOL, rtol=0, msg=name)
    losses = trainer.example_losses(together, pool)
    assert losses.shape == (2, pool.shape[0]) and torch.isfinite(losses).all()


def loop_gradients(workload, params, inputs):
    """Per-example flat gradients and losses, one autograd.grad call per example."""
    model = workload.build_model(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    flats, losses = [], []
    for i in range(inputs.shape[0]):
        loss = workload.example_losses(model, inputs[i:i + 1])[0]
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        flats.append(torch.cat([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1)
                                for g, p in zip(grads, model.parameters())]))
        losses.append(float(loss.detach()))
    return torch.stack(flats), np.array(losses)


def test_vmapped_sketches_equal_projected_loop_gradients(workload, pool):
    params = {n: p.detach().clone() for n, p in workload.build_model(7).named_parameters()}
    inputs = torch.cat([pool[:6], torch.full((1, 16), PAD, dtype=torch.long)])
    sketcher = GradientSketcher(workload, params, "gaussian", k=32, seed=1, chunk_size=3)  # 7 = 3 + 3 + 1
    sketches = sketcher.sketch_examples(inputs)
    flat, losses = loop_gradients(workload, params, inputs)
    assert sketches.sketch.shape == (7, 32)
    assert (sketches.grad_norm[:6] > 0.1).all()  # non-trivial gradients, so atol 1e-5 is a real check
    np.testing.assert_allclose(sketches.sketch, sketcher.projector.project(flat).numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(sketches.grad_norm, flat.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(sketches.loss, losses, rtol=1e-6)
    assert sketches.loss[6] == 0.0 and not sketches.sketch[6].any()
