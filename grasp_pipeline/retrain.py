"""Training recipe A: train the proxy model on a subset S, many subsets at once.

M subsets train in one vectorised loop: parameters are stacked along a leading model axis,
`torch.func.vmap(grad(...))` computes every model's gradient on its own batch in one call,
and a functional Adam/SGD step updates the stack. Each subset keeps its own data order, so
training M subsets together gives the same result as training them one after another
(M = 1), up to floating-point reassociation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from . import progress
from .workloads.base import Params, Workload

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """The multiplier of the base learning rate at `step` (0-based) of `steps`.

    "linear" and "cosine" decay towards 0 over the run (the last step still moves): with a
    constant rate the final model is mostly its last few batches, so which examples a data
    order happens to put last shows in the outcome as noise.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return (steps - step) / steps
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / steps))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {schedule!r}")


@dataclass(frozen=True)
class Recipe:
    """A fixed, seeded training recipe; recorded with every outcome row.

    It has no defaults of its own: it is built from the settings that declare them
    (`Recipe.from_params(RetrainParams)`, or the reference stage's warm-up settings), so the
    recipe a run records is always the one its config says.
    """

    steps: int
    batch_size: int
    lr: float
    lr_schedule: str  # "constant", "linear" or "cosine" (decay to 0 over the steps)
    optimizer: str  # "adam" or "sgd"
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    init_seed: int
    data_order_seed: int

    @classmethod
    def from_params(cls, params, **changes) -> "Recipe":
        """The recipe of `params` (RetrainParams, or anything with the same field names), with `changes`."""
        return cls(**{f.name: changes[f.name] if f.name in changes else getattr(params, f.name) for f in fields(cls)})

    def to_dict(self) -> dict:
        return asdict(self)


def batch_schedule(n_members: int, steps: int, batch_size: int, seed: Sequence[int]) -> np.ndarray:
    """Returns (steps, batch_size) member positions: concatenated seeded permutations (epochs)."""
    if n_members == 0:
        raise ValueError("cannot train on an empty subset")
    rng = np.random.default_rng(list(seed))
    needed = steps * batch_size
    epochs = -(-needed // n_members)
    order = np.concatenate([rng.permutation(n_members) for _ in range(epochs)])[:needed]
    return order.reshape(steps, batch_size)


class StackedTrainer:
    """Trains and evaluates a stack of M models of one workload (functional, vmapped)."""

    def __init__(self, workload: Workload, recipe: Recipe):
        if recipe.optimizer not in OPTIMIZERS:
            raise ValueError(f"recipe.optimizer must be 'adam' or 'sgd', got {recipe.optimizer!r}")
        self.workload = workload
        self.recipe = recipe
        self.base = workload.build_model(recipe.init_seed)
        self.init_params = {n: p.detach() for n, p in self.base.named_parameters()}

        # functional_call runs base.forward; route it through the workload's loss instead.
        self._loss_module = _LossModule(self.base, workload)
        self._batch_loss = lambda params, batch: functional_call(
            self._loss_module, _prefixed(params), (batch,)
        ).mean()
        self._example_losses = lambda params, batch: functional_call(
            self._loss_module, _prefixed(params), (batch,)
        )
        # grad_and_value: the same backward as grad, plus each model's batch loss for on_step
        self._stacked_grad = vmap(grad_and_value(self._batch_loss))
        self._stacked_losses = vmap(self._example_losses, in_dims=(0, None))

    def stack(self, m: int, params: Params | None = None) -> Params:
        """Returns m copies of `params` (default: the recipe's initialisation) stacked on dim 0."""
        source = self.init_params if params is None else params
        return {n: p.detach().unsqueeze(0).repeat(m, *[1] * p.dim()).clone() for n, p in source.items()}

    def train(self, inputs: torch.Tensor, member_rows: Sequence[np.ndarray],
              order_seeds: Sequence[Sequence[int]], start: Params | None = None,
              snapshots: dict[int, Params | None] | None = None,
              on_step: Callable[[int, torch.Tensor], None] | None = None) -> Params:
        """Trains one model per entry of `member_rows` (row indices into `inputs`).

        Returns the stacked final parameters, shape (M, ...) per tensor. `snapshots` maps
        step counts (0 = the start, at most `recipe.steps`) to fill in: on return each holds
        the stacked parameters after that many steps of this run (with a constant learning rate,
        exactly what a shorter run would have ended with).
        `on_step(step, losses)` is called after every step (1-based) with the (M,) batch losses
        the step's gradients were taken at (still on the device: reading them synchronises).
        """
        recipe = self.recipe
        m = len(member_rows)
        schedule = np.stack([
            np.asarray(rows)[batch_schedule(len(rows), recipe.steps, recipe.batch_size, seed)]
            for rows, seed in zip(member_rows, order_seeds)
        ])  # (M, steps, batch)
        schedule = torch.as_tensor(schedule, device=inputs.device)
        params = self.stack(m, start)
        moments = {n: torch.zeros_like(p) for n, p in params.items()}
        second = {n: torch.zeros_like(p) for n, p in params.items()}
        beta1, beta2, eps = recipe.adam_beta1, recipe.adam_beta2, recipe.adam_eps
        snapshots = {} if snapshots is None else snapshots
        outside = sorted(s for s in snapshots if not 0 <= s <= recipe.steps)
        if outside:
            raise ValueError(f"snapshot steps {outside} are outside 0..{recipe.steps} (the recipe's steps)")
        if 0 in snapshots:
            snapshots[0] = {n: p.clone() for n, p in params.items()}
        for step in range(recipe.steps):
            lr = recipe.lr * lr_factor(recipe.lr_schedule, step, recipe.steps)
            grads, losses = self._stacked_grad(params, inputs[schedule[:, step]])
            with torch.no_grad():
                for name, g in grads.items():
                    if recipe.optimizer == "sgd":
                        params[name] = params[name] - lr * g
                        continue
                    moments[name].mul_(beta1).add_(g, alpha=1 - beta1)
                    second[name].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    m_hat = moments[name] / (1 - beta1 ** (step + 1))
                    v_hat = second[name] / (1 - beta2 ** (step + 1))
                    params[name] = params[name] - lr * m_hat / (v_hat.sqrt() + eps)
            if step + 1 in snapshots:
                snapshots[step + 1] = {n: p.clone() for n, p in params.items()}
            if on_step is not None:
                on_step(step + 1, losses)
        return params

    def example_losses(self, params: Params, inputs: torch.Tensor, examples_per_chunk: int = 2048) -> torch.Tensor:
        """Returns (M, n) per-example losses of every stacked model on `inputs`.

        Chunks hold at most `examples_per_chunk` (model, example) pairs, so memory does not
        grow with the number of stacked models.
        """
        m = next(iter(params.values())).shape[0]
        chunk = max(1, examples_per_chunk // m)
        parts = []
        with torch.no_grad(), progress.task("evaluating", total=inputs.shape[0], unit="example") as done:
            for i in range(0, inputs.shape[0], chunk):
                parts.append(self._stacked_losses(params, inputs[i:i + chunk]))
                done.advance(parts[-1].shape[1])
        return torch.cat(parts, dim=1)


class _LossModule(torch.nn.Module):
    """Wraps a model so that its forward returns the workload's per-example losses."""

    def __init__(self, model: torch.nn.Module, workload: Workload):
        super().__init__()
        self.model = model
        self.workload = workload

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.workload.example_losses(self.model, batch)


def _prefixed(params: Params) -> Params:
    return {f"model.{n}": p for n, p in params.items()}


def unstack(params: Params, index: int) -> Params:
    return {n: p[index] for n, p in params.items()}


def task_losses(example_losses: torch.Tensor, task_of_row: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
    """Returns (M, T) mean loss per task from (M, n) per-example losses."""
    losses = example_losses.cpu().double().numpy()
    return np.stack([losses[:, task_of_row == t].mean(axis=1) for t in range(len(tasks))], axis=1)


@dataclass
class SubsetOutcome:
    subset_id: int
    repeat: int
    task_loss: np.ndarray  # (T,)
    seconds: float


def train_reporting(trainer: StackedTrainer, pool_inputs: torch.Tensor, member_rows: Sequence[np.ndarray],
                    orders: Sequence[tuple[int, int]]) -> Params:
    """`trainer.train` with a `<M> models` progress task that advances every step (no silent minutes)."""
    with progress.task(f"{len(member_rows)} models", total=trainer.recipe.steps, unit="step") as steps:
        return trainer.train(pool_inputs, member_rows, orders, on_step=lambda step, _: steps.advance())


def retrain_subsets(workload: Workload, recipe: Recipe, pool_inputs: torch.Tensor,
                    subsets: Sequence[tuple[int, np.ndarray]], task_inputs: torch.Tensor,
                    task_of_row: np.ndarray, tasks: Sequence[str], *, repeats: int = 1,
                    models_per_batch: int = 16) -> list[SubsetOutcome]:
    """Trains the recipe on every (subset_id, pool rows) for each repeat; returns task losses.

    Repeat r uses data-order seed (recipe.data_order_seed + r, subset_id); `seconds` is the
    wall time of the batch the subset trained in, divided by the batch's size.
    """
    trainer = StackedTrainer(workload, recipe)
    outcomes: list[SubsetOutcome] = []
    with progress.task("retraining", total=len(subsets) * repeats, unit="subset") as subsets_done:
        for repeat in range(repeats):
            for start in range(0, len(subsets), models_per_batch):
                group = subsets[start:start + models_per_batch]
                began = time.perf_counter()
                with progress.task(f"{len(group)} models", total=recipe.steps, unit="step") as steps:
                    params = trainer.train(
                        pool_inputs,
                        [rows for _, rows in group],
                        [(recipe.data_order_seed + repeat, subset_id) for subset_id, _ in group],
                        on_step=lambda step, _: steps.advance(),
                    )
                losses = task_losses(trainer.example_losses(params, task_inputs), task_of_row, tasks)
                per_subset = (time.perf_counter() - began) / len(group)
                outcomes += [SubsetOutcome(subset_id, repeat, losses[j], per_subset)
                             for j, (subset_id, _) in enumerate(group)]
                subsets_done.advance(len(group))
    return outcomes
