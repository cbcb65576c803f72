"""Sketching a Hugging Face GPT-2: a chosen subset of its parameters, and the Kronecker projection of
its Conv1D layers and tied input/output embedding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from grasp_pipeline.sketching import GradientSketcher  # noqa: E402
from grasp_pipeline.workloads import make_workload  # noqa: E402
from grasp_pipeline.workloads.hf_causal_lm import make_tiny  # noqa: E402

from .test_hf_workload import TEXTS  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny_gpt2_sketch"), vocab_size=300, n_layer=2, n_embd=32, n_head=2,
                     n_positions=32, training_texts=TEXTS * 20)


def workload_of(tiny_dir, **settings):
    return make_workload("hf_causal_lm", hf_model_path=str(tiny_dir), max_tokens=16, **settings)


@pytest.fixture(scope="module")
def theta(tiny_dir):
    """Parameters other than the saved model's (seed 3), so frozen ones must come from here, not the model."""
    model = workload_of(tiny_dir).build_model(0)
    generator = torch.Generator().manual_seed(3)
    return {n: p.detach() + 0.02 * torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}


def full_gradients(workload, theta, pool) -> tuple[list[str], torch.Tensor]:
    sketcher = GradientSketcher(workload, theta, "sjlt", 16, 0)
    return sketcher.names, sketcher.per_example.flat(pool)[1]


def test_a_sketched_subset_has_exactly_that_slice_of_the_full_gradient(tiny_dir, theta):
    full = workload_of(tiny_dir)
    subset = workload_of(tiny_dir, hf_sketch_modules=("lm_head.weight",), hf_sketch_last_blocks=1)
    pool = full.encode(TEXTS)
    names, flat = full_gradients(full, theta, pool)
    sketcher = GradientSketcher(subset, theta, "sjlt", 16, 0)
    assert sketcher.names == [n for n in names if n.startswith("transformer.h.1.") or n == "transformer.wte.weight"]
    assert sketcher.frozen and set(sketcher.frozen) | set(sketcher.names) == set(names)
    offsets = np.cumsum([0] + [theta[n].numel() for n in names])
    expected = torch.cat([flat[:, offsets[i]:offsets[i + 1]] for i, n in enumerate(names) if n in sketcher.names], 1)
    real = (pool >= 0).sum(1) >= 2  # a one-token example predicts nothing
    assert expected[real].norm(dim=1).min() > 1e-3
    torch.testing.assert_close(sketcher.per_example.flat(pool)[1], expected, atol=1e-6, rtol=1e-5)


def test_a_pattern_that_matches_nothing_is_refused_naming_the_field(tiny_dir, theta):
    with pytest.raises(ValueError, match=r"workload\.hf_sketch_modules: pattern 'transformer\.h\.9\.\*'"):
        GradientSketcher(workload_of(tiny_dir, hf_sketch_modules=("transformer.h.9.*",)), theta, "sjlt", 16, 0)
    with pytest.raises(ValueError, match=r"workload\.hf_sketch_last_blocks=3 but GPT2LMHeadModel has 2 blocks"):
        GradientSketcher(workload_of(tiny_dir, hf_sketch_last_blocks=3), theta, "sjlt", 16, 0)


def test_the_sketch_config_records_the_subset_and_another_subset_is_not_mixed_in(tiny_dir, theta):
    last = GradientSketcher(workload_of(tiny_dir, hf_sketch_last_blocks=1), theta, "sjlt", 16, 0)
    config = json.loads(last.config("v1"))
    assert config["hf_sketch_last_blocks"] == 1 and config["sketched_parameters"] == len(last.names)
    assert "sketched_parameters" not in json.loads(GradientSketcher(workload_of(tiny_dir), theta, "sjlt", 16,
                                                                    0).config("v1"))
    GradientSketcher.from_config(workload_of(tiny_dir, hf_sketch_last_blocks=1), theta, config)  # same subset
    with pytest.raises(ValueError, match="rematerialise gradient_sketches"):
        GradientSketcher.from_config(workload_of(tiny_dir, hf_sketch_last_blocks=2), theta, config)


@pytest.mark.parametrize("settings", [{}, {"hf_sketch_last_blocks": 1, "hf_sketch_modules": ("lm_head.*",)}])
def test_kronecker_sketches_of_conv1d_and_the_tied_embedding_equal_the_projected_exact_gradient(
        tiny_dir, theta, settings):
    workload = workload_of(tiny_dir, **settings)
    pool = workload.encode(TEXTS)
    sketcher = GradientSketcher(workload, theta, "kronecker", 64, 0, chunk_size=3, factor_dim=8)
    projector = sketcher.projector
    kinds = {spec.kind for spec in projector.layout}
    tied = [spec for spec in projector.layout if spec.tied]
    assert "conv1d" in kinds and [(s.module, s.tied) for s in tied] == [("transformer.wte", "lm_head")]
    flat = sketcher.per_example.flat(pool)[1]  # exact per-example gradients by vmap(grad)
    hooked, norm_sq, _ = sketcher.gradients.stage1(pool)
    explicit = projector.stage1_from_flat(flat)  # (P_out ⊗ P_in) applied to the materialised gradients
    offsets = np.cumsum([0] + [spec.width for spec in projector.layout])
    for i, spec in enumerate(projector.layout):
        if spec.kind == "conv1d" or spec.tied:
            block = explicit[:, offsets[i]:offsets[i + 1]]
            assert block.abs().max() > 1e-4, spec.module
            torch.testing.assert_close(hooked[:, offsets[i]:offsets[i + 1]], block, atol=2e-5, rtol=1e-4,
                                       msg=spec.module)
    torch.testing.assert_close(norm_sq, (flat ** 2).sum(1), atol=1e-6, rtol=1e-4)
    out = sketcher.sketch_examples(pool)
    np.testing.assert_allclose(out.sketch, projector.project(flat).numpy(), atol=2e-5, rtol=1e-4)
