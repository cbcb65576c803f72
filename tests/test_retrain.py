"""Tests for grasp_pipeline.training.retrain and grasp_pipeline.workload on a tiny byte MLP (CPU).

Batched (vmapped) training is compared with training each subset alone and with a plain
PyTorch loop using torch.optim, which is an implementation independent of the code under
test. Floating-point tolerance for "the same result": atol 1e-5 (float32, a handful of
steps; vmapped matmuls may reassociate sums).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grasp_pipeline.config import RetrainParams
from grasp_pipeline.training.retrain import (
    Recipe,
    StackedTrainer,
    batch_schedule,
    lr_factor,
    retrain_subsets,
    task_losses,
    unstack,
)
from grasp_pipeline.workloads import PAD, make_workload, state_fingerprint

ATOL = 1e-5


def recipe_of(**changes) -> Recipe:
    """The retraining recipe of the default RetrainParams at a constant learning rate, with `changes`."""
    return Recipe.from_params(RetrainParams(), **{"lr_schedule": "constant", **changes})


@pytest.fixture(scope="module")
def workload():
    return make_workload("byte_mlp", context=2, embed_dim=4, hidden=8, example_bytes=16)


@pytest.fixture(scope="module")
def pool(workload):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "def f(x):", "return", "der", "und", "ß", "{}"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(40)]
    return workload.encode(texts)


MEMBERS = [np.array([0, 3, 5, 7, 9]), np.arange(10, 22), np.arange(0, 40, 2), np.array([39])]
SEEDS = [(0, 0), (0, 1), (0, 2), (0, 3)]


def assert_params_close(a: dict, b: dict, atol: float = ATOL):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


# -----------------------------------------------------------------------------
# batched training = one at a time = plain PyTorch


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_many_subsets_together_equals_training_each_alone(workload, pool, optimizer):
    """Final parameters and per-task losses agree within atol 1e-5."""
    recipe = recipe_of(steps=6, batch_size=4, lr=0.05 if optimizer == "sgd" else 3e-3, optimizer=optimizer)
    trainer = StackedTrainer(workload, recipe)
    together = trainer.train(pool, MEMBERS, SEEDS)
    task_of_row = np.arange(40) % 3
    losses_together = task_losses(trainer.example_losses(together, pool), task_of_row, ["a", "b", "c"])
    for j, (rows, seed) in enumerate(zip(MEMBERS, SEEDS)):
        alone = trainer.train(pool, [rows], [seed])
        assert_params_close(unstack(together, j), unstack(alone, 0))
        losses_alone = task_losses(trainer.example_losses(alone, pool), task_of_row, ["a", "b", "c"])
        np.testing.assert_allclose(losses_together[j], losses_alone[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_snapshots_equal_the_parameters_of_shorter_runs(workload, pool, optimizer):
    """A snapshot after s steps is what a recipe of s steps ends with (same schedule prefix, same
    Adam bias correction); step 0 is the initialisation."""
    lr = 0.05 if optimizer == "sgd" else 3e-3
    snapshots = dict.fromkeys([0, 3, 6])
    trainer = StackedTrainer(workload, recipe_of(steps=6, batch_size=4, lr=lr, optimizer=optimizer))
    final = trainer.train(pool, MEMBERS[:2], SEEDS[:2], snapshots=snapshots)
    assert_params_close(snapshots[6], final, atol=0)
    assert_params_close(snapshots[0], trainer.stack(2), atol=0)
    shorter = StackedTrainer(workload, recipe_of(steps=3, batch_size=4, lr=lr, optimizer=optimizer))
    assert_params_close(snapshots[3], shorter.train(pool, MEMBERS[:2], SEEDS[:2]))
    assert any(not torch.equal(snapshots[3][name], final[name]) for name in final)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_a_decaying_schedule_equals_torch_optim_with_the_same_lambda_lr(workload, pool, schedule):
    recipe = recipe_of(steps=7, batch_size=4, lr=1e-2, lr_schedule=schedule, init_seed=3)
    rows, seed = MEMBERS[1], (5, 11)
    stacked = StackedTrainer(workload, recipe).train(pool, [rows], [seed])
    model = workload.build_model(3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(schedule, step, 7))
    for batch_positions in batch_schedule(len(rows), 7, 4, seed):
        opt.zero_grad()
        workload.example_losses(model, pool[rows[batch_positions]]).mean().backward()
        opt.step()
        decay.step()
    assert_params_close(unstack(stacked, 0), {n: p.detach() for n, p in model.named_parameters()})
    constant = StackedTrainer(workload, recipe_of(steps=7, batch_size=4, lr=1e-2, init_seed=3)).train(
        pool, [rows], [seed])
    assert any(not torch.allclose(constant[n], stacked[n]) for n in stacked)


def test_lr_factors_decay_to_near_zero_and_refuse_unknown_schedules():
    assert lr_factor("constant", 9, 10) == 1.0
    assert lr_factor("linear", 0, 10) == 1.0 and lr_factor("linear", 9, 10) == pytest.approx(0.1)
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 9, 10) < 0.03
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("step", 0, 10)


def test_snapshot_steps_beyond_the_recipe_are_refused(workload, pool):
    trainer = StackedTrainer(workload, recipe_of(steps=4, batch_size=4))
    with pytest.raises(ValueError, match=r"snapshot steps \[5\] are outside 0..4"):
        trainer.train(pool, MEMBERS[:1], SEEDS[:1], snapshots={2: None, 5: None})


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_equals_a_plain_torch_optim_loop_on_the_same_batches(workload, pool, optimizer):
    """The vmapped functional optimiser matches torch.optim on the scheduled batches (atol 1e-5)."""
    lr = 0.05 if optimizer == "sgd" else 3e-3
    recipe = recipe_of(steps=7, batch_size=4, lr=lr, optimizer=optimizer, init_seed=3)
    rows, seed = MEMBERS[1], (5, 11)
    stacked = StackedTrainer(workload, recipe).train(pool, [rows], [seed])

    model = workload.build_model(3)
    opt = torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam" else torch.optim.SGD(
        model.parameters(), lr=lr)
    for batch_positions in batch_schedule(len(rows), 7, 4, seed):
        opt.zero_grad()
        workload.example_losses(model, pool[rows[batch_positions]]).mean().backward()
        opt.step()
    assert_params_close(unstack(stacked, 0), {n: p.detach() for n, p in model.named_parameters()})


def test_training_moves_the_parameters_and_lowers_the_training_loss(workload, pool):
    trainer = StackedTrainer(workload, recipe_of(steps=20, batch_size=8, lr=1e-2))
    rows = np.arange(40)
    trained = trainer.train(pool, [rows], [(0, 0)])
    before = trainer.example_losses(trainer.stack(1), pool).mean()
    after = trainer.example_losses(trained, pool).mean()
    assert after < before


def test_same_seeds_give_bitwise_identical_parameters(workload, pool):
    recipe = recipe_of(steps=5, batch_size=4, init_seed=2, data_order_seed=1)
    first = StackedTrainer(workload, recipe).train(pool, MEMBERS[:2], SEEDS[:2])
    second = StackedTrainer(workload, recipe).train(pool, MEMBERS[:2], SEEDS[:2])
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_different_data_order_seeds_give_different_parameters(workload, pool):
    trainer = StackedTrainer(workload, recipe_of(steps=5, batch_size=4))
    params = trainer.train(pool, [MEMBERS[1], MEMBERS[1]], [(0, 0), (1, 0)])
    assert not torch.equal(params["out.weight"][0], params["out.weight"][1])


def test_different_init_seeds_give_different_initial_parameters(workload):
    a = StackedTrainer(workload, recipe_of(init_seed=0)).init_params
    b = StackedTrainer(workload, recipe_of(init_seed=1)).init_params
    assert not torch.equal(a["hidden.weight"], b["hidden.weight"])


def test_an_unknown_optimizer_is_refused(workload):
    with pytest.raises(ValueError, match="optimizer.*'rmsprop'"):
        StackedTrainer(workload, recipe_of(optimizer="rmsprop"))


def test_stacked_example_losses_equal_each_models_own_losses(workload, pool):
    trainer = StackedTrainer(workload, recipe_of(steps=3, batch_size=4))
    params = trainer.train(pool, MEMBERS[:3], SEEDS[:3])
    stacked = trainer.example_losses(params, pool, examples_per_chunk=21)  # 7 per chunk: an uneven split of 40
    assert stacked.shape == (3, 40)
    model = workload.build_model(0)
    for j in range(3):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name][j])
            torch.testing.assert_close(stacked[j], workload.example_losses(model, pool), atol=ATOL, rtol=0)


def test_task_losses_are_per_task_means_of_example_losses():
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 1.0, 1.0, 2.0]])
    task_of_row = np.array([0, 1, 0, 1, 1])
    expected = np.array([[(1 + 3) / 2, (2 + 4 + 5) / 3], [(0 + 1) / 2, (0 + 1 + 2) / 3]])
    np.testing.assert_allclose(task_losses(losses, task_of_row, ["x", "y"]), expected)


# -----------------------------------------------------------------------------
# batch schedule


@pytest.mark.parametrize("n_members,steps,batch_size", [(5, 7, 3), (12, 3, 4), (7, 1, 20), (1, 4, 2)])
def test_batch_schedule_covers_every_member_once_per_epoch(n_members, steps, batch_size):
    schedule = batch_schedule(n_members, steps, batch_size, (3, 4))
    assert schedule.shape == (steps, batch_size)
    flat = schedule.ravel()
    for start in range(0, len(flat), n_members):
        epoch = flat[start:start + n_members]
        if len(epoch) == n_members:
            assert sorted(epoch.tolist()) == list(range(n_members))
        else:  # the last, partial epoch repeats no member
            assert len(set(epoch.tolist())) == len(epoch)
            assert set(epoch.tolist()) <= set(range(n_members))


def test_batch_schedule_is_deterministic_in_its_seed():
    a = batch_schedule(10, 5, 4, (0, 7))
    np.testing.assert_array_equal(a, batch_schedule(10, 5, 4, (0, 7)))
    assert not np.array_equal(a, batch_schedule(10, 5, 4, (1, 7)))
    assert not np.array_equal(a, batch_schedule(10, 5, 4, (0, 8)))


def test_batch_schedule_refuses_an_empty_subset():
    with pytest.raises(ValueError, match="empty"):
        batch_schedule(0, 5, 4, (0, 0))


# -----------------------------------------------------------------------------
# retrain_subsets


def test_retrain_subsets_reports_every_subset_and_repeat_with_its_own_seed(workload, pool):
    recipe = recipe_of(steps=4, batch_size=4, data_order_seed=10)
    subsets = [(100 + j, rows) for j, rows in enumerate(MEMBERS[:3])]
    task_inputs = pool[:9]
    task_of_row = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1])
    outcomes = retrain_subsets(workload, recipe, pool, subsets, task_inputs, task_of_row, ["t0", "t1"],
                               repeats=2, models_per_batch=2)
    assert sorted((o.subset_id, o.repeat) for o in outcomes) == [(s, r) for s in (100, 101, 102) for r in (0, 1)]

    trainer = StackedTrainer(workload, recipe)
    for o in outcomes:
        rows = dict(subsets)[o.subset_id]
        alone = trainer.train(pool, [rows], [(10 + o.repeat, o.subset_id)])
        expected = task_losses(trainer.example_losses(alone, task_inputs), task_of_row, ["t0", "t1"])[0]
        np.testing.assert_allclose(o.task_loss, expected, atol=ATOL, rtol=0)
        assert o.seconds > 0
    by_key = {(o.subset_id, o.repeat): o.task_loss for o in outcomes}
    assert not np.array_equal(by_key[(100, 0)], by_key[(100, 1)])  # repeats use other orders


# -----------------------------------------------------------------------------
# workload


def test_encode_pads_with_pad_and_truncates_to_example_bytes(workload):
    out = workload.encode(["ab", "ß" * 10])
    assert out.shape == (2, 16) and out.dtype == torch.long
    assert out[0].tolist() == [97, 98] + [PAD] * 14
    assert out[1].tolist() == list("ß".encode() * 8)  # 20 bytes cut to 16


def test_encoding_an_empty_text_gives_a_row_of_padding(workload):
    assert workload.encode(["", "a"])[0].tolist() == [PAD] * 16


def test_build_model_is_deterministic_and_leaves_the_global_rng_alone(workload):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b = workload.build_model(5), workload.build_model(5)
    assert torch.equal(torch.rand(3), expected_next)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name
    assert sum(p.numel() for p in a.parameters()) == 257 * 4 + (2 * 4 * 8 + 8) + (8 * 256 + 256)


def test_the_model_sees_only_the_context_bytes_before_each_position(workload):
    model = workload.build_model(0)
    x = workload.encode(["abcdefghijklmnop"])
    base = model(x)
    for t in (0, 5, 15):
        changed = x.clone()
        changed[0, t] = 120  # position t itself, and so every window from t+1 to t+context
        out = model(changed)
        affected = set(range(t + 1, min(t + 3, 16)))
        for pos in range(16):
            same = torch.allclose(out[0, pos], base[0, pos])
            assert same == (pos not in affected), (t, pos)


def test_example_loss_is_mean_cross_entropy_over_non_padding_bytes(workload):
    model = workload.build_model(1)
    x = workload.encode(["hello", "a much longer text!"])
    with torch.no_grad():
        losses = workload.example_losses(model, x)
        log_probs = F.log_softmax(model(x), dim=-1)
    for row in range(2):
        valid = [t for t in range(16) if x[row, t] != PAD]
        expected = -sum(float(log_probs[row, t, x[row, t]]) for t in valid) / len(valid)
        assert float(losses[row]) == pytest.approx(expected, rel=1e-5)


def test_an_unknown_workload_is_refused():
    with pytest.raises(ValueError, match="unknown workload 'audio'"):
        make_workload("audio")


def test_state_fingerprint_is_stable_and_changes_with_any_parameter(workload):
    state = {n: p.detach().clone() for n, p in workload.build_model(0).named_parameters()}
    fingerprint = state_fingerprint(state)
    assert fingerprint == state_fingerprint({n: p.clone() for n, p in reversed(list(state.items()))})
    state["out.bias"][3] += 1e-3
    assert state_fingerprint(state) != fingerprint
