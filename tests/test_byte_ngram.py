"""The byte_ngram workload: its model is what it says, vmap-friendly, and deterministic."""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from grasp_pipeline.config import RetrainParams
from grasp_pipeline.training.retrain import Recipe, StackedTrainer
from grasp_pipeline.workloads import PAD, make_workload

TEXTS = [f"the quick brown fox {i} jumps over the lazy dog; " * 2 for i in range(24)]


def test_logits_are_the_bias_plus_one_table_row_per_context_byte():
    workload = make_workload("byte_ngram", order=2, example_bytes=16)
    model = workload.build_model(0)
    x = workload.encode(["abc"])
    logits = model(x)[0]
    tables, bias = model.tables.detach(), model.bias.detach()
    b, a = ord("b"), ord("a")
    assert torch.allclose(logits[2], bias + tables[0, b] + tables[1, a])
    assert torch.allclose(logits[0], bias + tables[0, PAD] + tables[1, PAD])  # the start of text


def test_per_example_gradients_under_vmap_equal_a_loop():
    workload = make_workload("byte_ngram", order=2, example_bytes=32)
    model = workload.build_model(1)
    inputs = workload.encode(TEXTS[:5])
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, example):
        return workload.example_losses(_Bound(model, p), example[None])[0]

    batched = vmap(grad(loss), in_dims=(None, 0))(params, inputs)
    for i in range(5):
        single = grad(loss)(params, inputs[i])
        assert all(torch.allclose(batched[n][i], single[n], atol=1e-6) for n in params)


def test_retraining_is_bit_identical_from_run_to_run():
    workload = make_workload("byte_ngram")
    inputs = workload.encode(TEXTS)
    recipe = Recipe.from_params(RetrainParams(), steps=6, batch_size=8)
    runs = [StackedTrainer(workload, recipe).train(inputs, [np.arange(24), np.arange(12)], [(0, 0), (0, 1)])
            for _ in range(3)]
    assert all(torch.equal(runs[0][n], run[n]) for run in runs[1:] for n in runs[0])


def test_initialisation_seeds_give_different_tables():
    workload = make_workload("byte_ngram")
    assert not torch.equal(workload.build_model(0).tables, workload.build_model(1).tables)


class _Bound(torch.nn.Module):
    def __init__(self, model, params):
        super().__init__()
        self._model, self._params = [model], params

    def forward(self, x):
        return functional_call(self._model[0], self._params, (x,))
